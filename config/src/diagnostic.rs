//! Config diagnostics: a key, a place in the file, what is wrong and what would be valid.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use crate::{Checked, ConfigError};

/// Whether a diagnostic stops the daemon from starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Refused: the config is not used.
    Error,
    /// Accepted, but probably not what the operator wants (for example a NAT timeout below
    /// the RFC minimum, or a policy that will not be programmed).
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
    /// Dotted key path, e.g. `floating_ip[1].vrid` (array indices from 0).
    pub key: String,
    /// 1-based line of the offending text (line 1 when the key is missing altogether).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub problem: String,
    /// What would be valid (for a warning: what is recommended).
    pub allowed: String,
}

impl Diagnostic {
    /// `FILE:LINE:COL: ...`, the compiler style editors jump to.
    pub fn in_file(&self, file: &Path) -> String {
        format!("{}:{self}", file.display())
    }
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
pub struct Report<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    /// A report on the document `text`.
    pub fn new(text: &'a str) -> Report<'a> {
        Report {
            text,
            diagnostics: Vec::new(),
        }
    }

    /// Records an error. `span` is a byte range in the document; `None` (a key that is
    /// missing, a default that conflicts) reports line 1, column 1.
    pub fn error(
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
    pub fn warning(
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
    pub fn line_of(&self, span: Option<Range<usize>>) -> usize {
        self.line_column(span.map_or(0, |s| s.start)).0
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

    /// Whether an error (not only warnings) was recorded.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// Ends the check of a document that gave `config` (or none): the config with its
    /// warnings when no error was recorded, else every diagnostic. A check that gives no
    /// config always says why; should none say so, a `document` error pointing to `see`
    /// (where the schema is explained) keeps that promise.
    pub fn conclude<T>(mut self, config: Option<T>, see: &str) -> Result<Checked<T>, ConfigError> {
        if config.is_none() && !self.has_errors() {
            self.error("document", None, "not a valid config", see);
        }
        let valid = !self.has_errors();
        let diagnostics = self.finish();
        match config {
            Some(config) if valid => Ok(Checked {
                config,
                warnings: diagnostics,
            }),
            _ => Err(ConfigError::Invalid(diagnostics)),
        }
    }

    /// The diagnostics in file order (errors before warnings on the same spot).
    pub fn finish(mut self) -> Vec<Diagnostic> {
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
        let mut report = Report::new(text);
        report.error("b", Some(text.find('=').unwrap_or(0)..0), "p", "q");
        report.error("bé", Some(text.find('"').unwrap_or(0)..0), "p", "q");
        report.error("missing", None, "p", "q");
        let quote = text.find('"').unwrap_or(0);
        assert_eq!(report.line_of(Some(quote..quote)), 2);
        assert_eq!(report.line_of(None), 1);
        let d = report.finish();
        assert_eq!((d[0].line, d[0].column), (1, 1));
        assert_eq!((d[1].line, d[1].column), (1, 3));
        // "bé = " is five characters but six bytes.
        assert_eq!((d[2].line, d[2].column), (2, 6));
    }

    #[test]
    fn displays_in_compiler_style() {
        let mut report = Report::new("x = 1\n");
        report.error("x", Some(4..5), "out of range", "1..=2");
        report.warning("y", None, "low", "more");
        let d = report.finish();
        assert_eq!(d[0].to_string(), "1:1: warning: y: low; recommended: more");
        assert_eq!(
            d[1].to_string(),
            "1:5: error: x: out of range; allowed: 1..=2"
        );
    }
}
