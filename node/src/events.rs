//! The event stream. Its types are the contract's (`p2plab-contract`, documented in EVENTS.md),
//! re-exported here; writing them (to stdout, or to a channel when many nodes share a process)
//! is the node's.

use std::io::Write;

pub use p2plab_contract::events::*;

/// Where a node's events go: stdout (the binaries), or a channel (many nodes in one process).
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout,
    Channel(tokio::sync::mpsc::UnboundedSender<EventLine>),
}

/// Writes events as JSON lines to stdout, one `write` per line so lines never interleave, or
/// sends them to a channel.
#[derive(Debug, Clone)]
pub struct Emitter {
    node: String,
    sink: Sink,
}

impl Emitter {
    pub fn new(node: impl Into<String>) -> Self {
        Self::with_sink(node, Sink::Stdout)
    }

    pub fn with_sink(node: impl Into<String>, sink: Sink) -> Self {
        Self {
            node: node.into(),
            sink,
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
                let mut text = self.line(event).to_json();
                text.push('\n');
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                let _ = lock.write_all(text.as_bytes());
                let _ = lock.flush();
            }
            Sink::Channel(tx) => {
                let _ = tx.send(self.line(event));
            }
        }
    }
}
