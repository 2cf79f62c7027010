//! A topology error: one message naming the file, line and column, with a hint and the line
//! itself underlined.

use std::fmt;

use serde_saphyr::Location;

/// One error in a topology file, with where it is and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct TopologyError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
    /// The file's text, for rendering a snippet.
    pub source_text: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl TopologyError {
    /// The error with the offending line of the file under it, caret at the column.
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        if self.line > 0 {
            if let Some(text) = self.source_text.lines().nth((self.line - 1) as usize) {
                let n = self.line.to_string();
                out.push_str(&format!(
                    "\n {n} | {text}\n {} | {}^",
                    " ".repeat(n.len()),
                    " ".repeat(self.column.saturating_sub(1) as usize)
                ));
            }
        }
        out
    }
}

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        at: Location,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) -> TopologyError {
        TopologyError {
            file: self.file.to_string(),
            line: at.line(),
            column: at.column(),
            message: message.into(),
            hint: hint.into(),
            source_text: self.text.to_string(),
        }
    }
}

pub(super) fn hint(s: impl Into<String>) -> Option<String> {
    Some(s.into())
}
