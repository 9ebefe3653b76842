//! Printing results: aligned text tables or one JSON document on stdout,
//! the options every listing command shares (`--json`), and the one escaping
//! function for text that other machines chose (a store's error message, a
//! server version) before it reaches a terminal or an error (re-exported
//! from `common::text`, which the agent uses for its log).
//! Callers pass only names, paths, keys and statuses (or values they were
//! explicitly asked to `--reveal`).

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

pub use common::text::{escape_text, FOREIGN_TEXT_MAX};

/// An error and its sources joined with `: `, leaving out a source whose
/// text the message before it already shows (errors that print their
/// source and also return it from `source()`), so nothing is said twice.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// Print one JSON document (pretty) and a newline on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A text table with a header row; columns padded to the widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|s| s.to_uppercase()).collect()],
        }
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the header is there.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Print to stdout.
    pub fn print(&self) -> Result<()> {
        std::io::stdout()
            .lock()
            .write_all(self.render().as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("save x: {source}")]
        struct Repeats {
            #[source]
            source: std::io::Error,
        }
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let io_text = io.to_string();
        let err = anyhow::Error::new(Repeats { source: io }).context("create secret");
        let text = error_chain(err.as_ref());
        assert_eq!(text.matches(&io_text).count(), 1, "{text}");
        assert!(text.starts_with("create secret: save x: "), "{text}");
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Quiet(#[source] std::io::Error);
        let err = Quiet(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(
            error_chain(&err).starts_with("outer: "),
            "{}",
            error_chain(&err)
        );
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["node", "status"]);
        t.row(vec!["a-long-node".into(), "written".into()]);
        t.row(vec!["b".into(), "unchanged".into()]);
        assert_eq!(
            t.render(),
            "NODE         STATUS\na-long-node  written\nb            unchanged\n"
        );
    }
}
