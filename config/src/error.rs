//! How loading a config ends, and what both daemons' commands exit with.
//!
//! The exit-code policy of `egret-gateway` and `egret-agent` ([`Exit`]):
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | an operational failure: a file that cannot be read, an interface, a socket, a permission, the cluster |
//! | 2 | refused input: an invalid config (every problem is printed first), or an invalid command line (clap's own code) |
//!
//! A 2 will not go away by trying again; a 1 may.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{Diagnostic, Severity};

/// What a command of `egret-gateway` or `egret-agent` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Success,
    /// 1: something failed that may work on another try.
    Failure,
    /// 2: the config (or the command line) is refused; fix it first.
    InvalidConfig,
}

impl Exit {
    /// The exit status.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::InvalidConfig => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// Why a config was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid config. Holds every diagnostic, warnings included, in file
    /// order; at least one is an error.
    #[error("{}", ErrorCount(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The diagnostics of an invalid config; empty for an unreadable file.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(diagnostics) => diagnostics,
            ConfigError::Read { .. } => &[],
        }
    }

    /// What a command that cannot go on without the config exits with.
    pub fn exit(&self) -> Exit {
        match self {
            ConfigError::Read { .. } => Exit::Failure,
            ConfigError::Invalid(_) => Exit::InvalidConfig,
        }
    }

    /// What an operator reads about `file`: one `FILE:LINE:COL: ...` line per diagnostic
    /// (the compiler style editors jump to), or why the file could not be read.
    pub fn located(&self, file: &Path) -> String {
        match self {
            ConfigError::Invalid(diagnostics) => diagnostics
                .iter()
                .map(|d| d.in_file(file))
                .collect::<Vec<_>>()
                .join("\n"),
            ConfigError::Read { source, .. } => format!("{self}: {source}"),
        }
    }
}

/// "1 error in the config", "3 errors in the config".
struct ErrorCount<'a>(&'a [Diagnostic]);

impl fmt::Display for ErrorCount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let s = if errors == 1 { "" } else { "s" };
        write!(f, "{errors} error{s} in the config")
    }
}

/// A valid config and the warnings it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<C> {
    /// The config, every default filled in.
    pub config: C,
    /// Warnings in file order.
    pub warnings: Vec<Diagnostic>,
}

/// The text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report;

    fn invalid() -> ConfigError {
        let mut report = Report::new("a = 1\nb = 2\n");
        report.error("a", Some(4..5), "too small", "2..=9");
        report.warning("b", Some(10..11), "odd", "even");
        ConfigError::Invalid(report.finish())
    }

    #[test]
    fn exit_codes_are_the_documented_policy() {
        assert_eq!(
            [Exit::Success, Exit::Failure, Exit::InvalidConfig].map(Exit::code),
            [0, 1, 2]
        );
        assert_eq!(invalid().exit(), Exit::InvalidConfig);
        let unreadable = read(Path::new("/nonexistent/egret.toml")).expect_err("no such file");
        assert_eq!(unreadable.exit(), Exit::Failure);
    }

    #[test]
    fn an_invalid_config_counts_its_errors_and_locates_each_diagnostic() {
        let error = invalid();
        assert_eq!(error.to_string(), "1 error in the config");
        assert_eq!(error.diagnostics().len(), 2);
        assert_eq!(
            error.located(Path::new("/etc/egret/x.toml")),
            "/etc/egret/x.toml:1:5: error: a: too small; allowed: 2..=9\n\
             /etc/egret/x.toml:2:5: warning: b: odd; recommended: even"
        );
    }

    #[test]
    fn an_unreadable_file_says_why() {
        let error = read(Path::new("/nonexistent/egret.toml")).expect_err("no such file");
        assert!(error.diagnostics().is_empty());
        assert_eq!(error.to_string(), "cannot read /nonexistent/egret.toml");
        assert_eq!(
            error.located(Path::new("/nonexistent/egret.toml")),
            "cannot read /nonexistent/egret.toml: No such file or directory (os error 2)"
        );
    }
}
