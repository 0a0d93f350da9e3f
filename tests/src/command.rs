//! Running lab commands to completion, with errors that say what failed and why.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs `command` to completion and returns its standard output.
///
/// # Errors
///
/// When it cannot start or exits unsuccessfully; the error names the command line, the exit
/// status and what the command wrote to standard error.
pub fn check_output(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running `{}`", command_line(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            command_line(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` wrote non-UTF-8 output", command_line(command)))
}

/// The command line, for messages.
pub(crate) fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_a_successful_command() {
        let out = check_output(Command::new("echo").arg("hello")).expect("echo runs");
        assert_eq!(out, "hello\n");
    }

    #[test]
    fn failures_name_the_command_and_its_stderr() {
        let err = check_output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .expect_err("exit 3 is a failure");
        let message = format!("{err:#}");
        assert!(
            message.contains("`sh -c echo oops >&2; exit 3`"),
            "{message}"
        );
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.contains("oops"), "{message}");
    }

    #[test]
    fn missing_programs_are_named() {
        let err = check_output(&mut Command::new("/nonexistent/egret-lab-tool"))
            .expect_err("nothing to run");
        assert!(
            format!("{err:#}").contains("/nonexistent/egret-lab-tool"),
            "{err:#}"
        );
    }
}
