//! The writer of an effective config (what `check` prints): TOML lines, sections after a
//! blank line, `key = value`, comments, and strings escaped by the toml crate.

use std::fmt::Display;

/// The lines of a TOML document being written.
#[derive(Debug, Default)]
pub struct Lines(Vec<String>);

impl Lines {
    /// Adds a line as it is (a comment, an empty line).
    pub fn line(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }

    /// A table header, after a blank line.
    pub fn section(&mut self, header: &str) {
        self.line("");
        self.line(header);
    }

    /// `key = value`; the value must already be TOML (see [`quote`]).
    pub fn key(&mut self, key: &str, value: impl Display) {
        self.line(format!("{key} = {value}"));
    }

    /// The document, ending with a newline.
    pub fn finish(self) -> String {
        let mut text = self.0.join("\n");
        text.push('\n');
        text
    }
}

/// A TOML basic string, escaped by the toml crate.
pub fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sections_keys_and_escaped_strings() {
        let mut out = Lines::default();
        out.line("# top");
        out.section("[a]");
        out.key("name", quote("x \"y\""));
        assert_eq!(out.finish(), "# top\n\n[a]\nname = 'x \"y\"'\n");
    }
}
