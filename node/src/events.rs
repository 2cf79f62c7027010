//! The event stream. Its types are the contract's (`p2plab-contract`, documented in EVENTS.md),
//! re-exported here; writing them (to stdout, or to a channel when many nodes share a process)
//! is the node's.

use std::{cell::RefCell, io::Write};

pub use p2plab_contract::events::*;

/// Where a node's events go: stdout (the binaries), or a channel (many nodes in one process).
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout,
    Channel(tokio::sync::mpsc::UnboundedSender<EventLine>),
}

/// Writes events as JSON lines to stdout, whole lines per `write` so lines never interleave, or
/// sends them to a channel.
///
/// Once [`Emitter::hold`] is called, stdout lines wait in a buffer until [`Emitter::flush`]: the
/// node loop flushes once per pass, after the connection tasks have put that pass's messages on
/// the wire, so a line never sits between a message and its socket (with stdout on a pipe, that
/// `write` was half a dialer's 64 B round trip between two containers), and a pass's lines cost
/// one `write`. The loop flushes before it sleeps, so nothing waits there longer than one pass; a
/// dropped emitter writes what it still holds.
#[derive(Debug)]
pub struct Emitter {
    node: String,
    sink: Sink,
    /// `Some` once held: stdout lines not written yet.
    held: Option<RefCell<String>>,
}

impl Emitter {
    pub fn new(node: impl Into<String>) -> Self {
        Self::with_sink(node, Sink::Stdout)
    }

    pub fn with_sink(node: impl Into<String>, sink: Sink) -> Self {
        Self {
            node: node.into(),
            sink,
            held: None,
        }
    }

    /// From now on stdout lines wait for [`Emitter::flush`] (a channel's are sent at once).
    pub fn hold(&mut self) {
        self.held.get_or_insert_with(RefCell::default);
    }

    /// Writes the held lines, in one `write`.
    pub fn flush(&self) {
        if let Some(held) = &self.held {
            let mut held = held.borrow_mut();
            if !held.is_empty() {
                write_stdout(&held);
                held.clear();
            }
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Builds the line for `event` stamped now.
    pub fn line(&self, event: Event) -> EventLine {
        EventLine::now(self.node.clone(), event)
    }

    /// Emits `event`. A closed stdout or channel (reader gone) is not an error worth dying for.
    pub fn emit(&self, event: Event) {
        match &self.sink {
            Sink::Stdout => {
                let line = self.line(event).to_json();
                match &self.held {
                    Some(held) => {
                        let mut held = held.borrow_mut();
                        held.push_str(&line);
                        held.push('\n');
                    }
                    None => write_stdout(&(line + "\n")),
                }
            }
            Sink::Channel(tx) => {
                let _ = tx.send(self.line(event));
            }
        }
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        self.flush();
    }
}

fn write_stdout(text: &str) {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(text.as_bytes());
    let _ = lock.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> Event {
        Event::Error {
            context: "test".into(),
            message: "line".into(),
        }
    }

    #[test]
    fn held_lines_wait_for_flush_and_a_channel_is_never_held() {
        let held = |e: &Emitter| e.held.as_ref().map(|h| h.borrow().clone());
        let mut out = Emitter::new("n");
        assert_eq!(held(&out), None);
        out.hold();
        out.emit(ping());
        out.emit(ping());
        let lines = held(&out).unwrap_or_default();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        assert!(lines.ends_with('\n'));
        out.flush();
        assert_eq!(held(&out).as_deref(), Some(""));

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut ch = Emitter::with_sink("n", Sink::Channel(tx));
        ch.hold();
        ch.emit(ping());
        assert_eq!(held(&ch).as_deref(), Some(""));
        assert!(rx.try_recv().is_ok(), "a channel's line is sent at once");
    }
}
