//! Config diagnostics: a key, a place in the file, what is wrong and what would be valid.
//!
//! The same shape and output as the gateway's (`gateway/src/config/diagnostic.rs`), so an
//! operator reads both daemons' `check` output the same way; copied rather than shared
//! because the agent does not depend on the gateway crate.

use std::fmt;
use std::ops::Range;

/// Whether a diagnostic stops the agent from starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Refused: the config is not used.
    Error,
    /// Accepted, but probably not what the operator wants (for example a policy that will
    /// not be programmed).
    Warning,
}

/// One finding about a config file.
///
/// Displays as `LINE:COL: error: KEY: PROBLEM; allowed: ALLOWED`; prefix the file name to
/// get the usual `FILE:LINE:COL: ...` form. Warnings say `recommended:` instead of
/// `allowed:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted key path, e.g. `policy[1].sources[0]` (array indices from 0).
    pub key: String,
    /// 1-based line of the offending text (line 1 when there is no text to point at).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub problem: String,
    /// What would be valid (for a warning: what is recommended).
    pub allowed: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (label, hint) = match self.severity {
            Severity::Error => ("error", "allowed"),
            Severity::Warning => ("warning", "recommended"),
        };
        write!(
            f,
            "{}:{}: {label}: {}: {}; {hint}: {}",
            self.line, self.column, self.key, self.problem, self.allowed
        )
    }
}

/// Collects diagnostics while a document is checked, turning byte spans into lines and
/// columns.
pub(super) struct Report<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub(super) fn new(text: &'a str) -> Report<'a> {
        Report {
            text,
            diagnostics: Vec::new(),
        }
    }

    /// Records an error. `span` is a byte range in the document; `None` (a missing section,
    /// a default that does not fit) reports line 1, column 1.
    pub(super) fn error(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        problem: impl Into<String>,
        allowed: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            key.into(),
            span,
            problem.into(),
            allowed.into(),
        );
    }

    /// Records a warning; `recommended` says what would avoid it.
    pub(super) fn warning(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        problem: impl Into<String>,
        recommended: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            key.into(),
            span,
            problem.into(),
            recommended.into(),
        );
    }

    fn push(
        &mut self,
        severity: Severity,
        key: String,
        span: Option<Range<usize>>,
        problem: String,
        allowed: String,
    ) {
        let (line, column) = self.line_column(span.map_or(0, |s| s.start));
        self.diagnostics.push(Diagnostic {
            severity,
            key,
            line,
            column,
            problem,
            allowed,
        });
    }

    /// 1-based line of a span's start, to point from one diagnostic to another place.
    pub(super) fn line_of(&self, span: Range<usize>) -> usize {
        self.line_column(span.start).0
    }

    /// 1-based line and character column of byte `offset` (clamped to the text).
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub(super) fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics in file order (errors before warnings on the same spot).
    pub(super) fn finish(mut self) -> Vec<Diagnostic> {
        self.diagnostics
            .sort_by_key(|d| (d.line, d.column, d.severity));
        self.diagnostics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_lines_and_character_columns() {
        let text = "a = 1\nbé = \"x\"\n";
        let quote = text.find('"').expect("quote");
        let mut report = Report::new(text);
        report.error("b", Some(quote..quote + 1), "p", "q");
        report.error("a", Some(2..3), "p", "q");
        report.error("missing", None, "p", "q");
        assert_eq!(report.line_of(quote..quote), 2);
        let d = report.finish();
        assert_eq!(
            (d[0].key.as_str(), d[0].line, d[0].column),
            ("missing", 1, 1)
        );
        assert_eq!((d[1].key.as_str(), d[1].line, d[1].column), ("a", 1, 3));
        // "bé = " is five characters but six bytes.
        assert_eq!((d[2].key.as_str(), d[2].line, d[2].column), ("b", 2, 6));
    }

    #[test]
    fn displays_in_compiler_style() {
        let mut report = Report::new("x = 1\n");
        report.error("x", Some(4..5), "out of range", "1..=2");
        report.warning("y", None, "low", "more");
        assert!(report.has_errors());
        let d = report.finish();
        assert_eq!(d[0].to_string(), "1:1: warning: y: low; recommended: more");
        assert_eq!(
            d[1].to_string(),
            "1:5: error: x: out of range; allowed: 1..=2"
        );
    }
}
