//! A config document as written: TOML syntax, tables and key names, TOML types.
//!
//! Each daemon describes its tables as `serde` structs whose fields are all optional (a
//! missing required key is the checker's to report, all of them at once, at the table's
//! header) and keep their spans, so the checks can point at every bad value. This module
//! reads the document into those structs, one table at a time, and never gives up on a
//! table for one bad key: a key `serde` refuses (unknown, or of the wrong TOML type) is
//! reported, set aside, and the table read again without it. One typo therefore hides
//! neither a second typo nor the checks of the table's other keys.
//!
//! Only the first TOML syntax error is reported: after one, the parser's recovery guesses,
//! and later errors are often echoes of the first.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use crate::Report;
use crate::document::{self, key_at, key_before};

/// A list of strings, as most list keys are; each element keeps its own span.
pub type List = Spanned<Vec<Spanned<String>>>;

/// What a daemon's config file allows, as its diagnostics need it.
#[derive(Debug)]
pub struct Schema {
    /// The top-level tables, as an operator would read them in a diagnostic (`allowed:` of
    /// an unknown section).
    pub sections: &'static str,
    /// What is valid for a key (`floating_ip[3].vrid`; see [`document::generic_key`]);
    /// empty when the schema has nothing to add.
    pub allowed: fn(&str) -> &'static str,
    /// Where the schema is explained: said when neither a key's own text nor `serde` has
    /// anything better.
    pub see: &'static str,
}

impl Schema {
    /// What is valid for `key`, or where to look when the schema has no text for it.
    pub fn allowed_or_see(&self, key: &str) -> &'static str {
        match (self.allowed)(key) {
            "" => self.see,
            allowed => allowed,
        }
    }
}

/// A table as found in the document.
#[derive(Debug)]
pub enum Section<T> {
    /// Not in the document: defaults apply (or it is missing, if required).
    Absent,
    /// Present but unusable as a whole (not a table at all); already reported.
    Invalid,
    /// Read, perhaps without some keys that were reported and set aside.
    Present(Table<T>),
}

/// A table that was read.
#[derive(Debug)]
pub struct Table<T> {
    /// Where to point for the table as a whole: its `[header]`, or the key of an inline
    /// table.
    pub span: Range<usize>,
    /// Its keys, those set aside left out.
    pub value: T,
    /// Keys already reported (unknown or of the wrong type) and left out of `value`.
    pub set_aside: Vec<String>,
}

impl<T> Table<T> {
    /// Whether `key` was written but already reported as unusable.
    pub fn set_aside(&self, key: &str) -> bool {
        self.set_aside.iter().any(|k| k == key)
    }
}

impl<T> Section<T> {
    /// The table, when it was read.
    pub fn table(&self) -> Option<&Table<T>> {
        match self {
            Section::Present(table) => Some(table),
            _ => None,
        }
    }

    /// The table's keys, when it was read.
    pub fn present(&self) -> Option<&T> {
        self.table().map(|t| &t.value)
    }

    /// The keys and the table to check: `absent` (every key unset) and no table when the
    /// section is not in the document; `None` when it is unusable as a whole.
    pub fn contents<'a>(&'a self, absent: &'a T) -> Option<(&'a T, Option<&'a Table<T>>)> {
        match self {
            Section::Present(table) => Some((&table.value, Some(table))),
            Section::Absent => Some((absent, None)),
            Section::Invalid => None,
        }
    }
}

/// An array of tables (`[[name]]`) as found in the document.
#[derive(Debug)]
pub enum Tables<T> {
    /// No such key.
    Absent,
    /// Not an array of tables; already reported.
    Invalid,
    /// Each table in file order; an element is `None` when it is unusable (reported).
    Present {
        /// The first `[[name]]` header, or the key of an inline array.
        span: Range<usize>,
        /// The tables.
        tables: Vec<Option<Table<T>>>,
    },
}

/// Reads `text` as TOML, reporting its first syntax error. `None`: not TOML at all.
pub fn document<'t>(text: &'t str, report: &mut Report<'_>) -> Option<DeTable<'t>> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if let Some(first) = syntax_errors.into_iter().next() {
        // Named after the key it is in, else the key it follows.
        let key = first.span().and_then(|s| {
            key_at(document.get_ref(), s.start).or_else(|| key_before(document.get_ref(), s.start))
        });
        document::syntax_error(report, key, &first);
        return None;
    }
    Some(document.into_inner())
}

/// Reads the top-level tables of a document for one schema, reporting what it refuses.
pub struct Reader<'r, 't> {
    report: &'r mut Report<'t>,
    schema: &'static Schema,
}

impl<'r, 't> Reader<'r, 't> {
    /// A reader reporting into `report`.
    pub fn new(report: &'r mut Report<'t>, schema: &'static Schema) -> Reader<'r, 't> {
        Reader { report, schema }
    }

    /// The top-level table `key = value`.
    pub fn table<T: DeserializeOwned>(
        &mut self,
        key: &Spanned<DeString<'_>>,
        value: &Spanned<DeValue<'_>>,
    ) -> Section<T> {
        match self.read(key.get_ref(), value, header_span(key, value)) {
            Some(table) => Section::Present(table),
            None => Section::Invalid,
        }
    }

    /// The top-level array of tables `key = value` (`[[key]]`).
    pub fn tables<T: DeserializeOwned>(
        &mut self,
        key: &Spanned<DeString<'_>>,
        value: &Spanned<DeValue<'_>>,
    ) -> Tables<T> {
        let name = key.get_ref();
        let span = header_span(key, value);
        let DeValue::Array(elements) = value.get_ref() else {
            let problem = match value.get_ref() {
                DeValue::Table(_) => format!("a single [{name}] table"),
                _ => "not an array of tables".to_owned(),
            };
            let allowed = self.schema.allowed_or_see(name);
            self.report
                .error(name.as_ref(), Some(span), problem, allowed);
            return Tables::Invalid;
        };
        let tables = elements
            .iter()
            .enumerate()
            .map(|(i, element)| self.read(&format!("{name}[{i}]"), element, element.span()))
            .collect();
        Tables::Present { span, tables }
    }

    /// A top-level key the schema does not know.
    pub fn unknown(&mut self, key: &Spanned<DeString<'_>>, value: &Spanned<DeValue<'_>>) {
        let problem = if matches!(value.get_ref(), DeValue::Table(_)) {
            "unknown section"
        } else {
            "unknown key outside any section"
        };
        self.report.error(
            key.get_ref().as_ref(),
            Some(key.span()),
            problem,
            self.schema.sections,
        );
    }

    /// Reads the table `value` at `path`, reporting and setting aside each key serde
    /// refuses until the rest reads. `None`: `value` is not a table, or serde refused
    /// something it did not tie to a key (reported either way).
    fn read<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: &Spanned<DeValue<'_>>,
        span: Range<usize>,
    ) -> Option<Table<T>> {
        let mut value = value.clone();
        let mut set_aside = Vec::new();
        loop {
            let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(parsed) => {
                    return Some(Table {
                        span,
                        value: parsed,
                        set_aside,
                    });
                }
                Err(error) => error,
            };
            let at = error.span().map(|s| s.start);
            let DeValue::Table(keys) = value.get_mut() else {
                self.serde_error(&error, path.to_owned());
                return None;
            };
            let offending = at.and_then(|at| {
                keys.iter()
                    .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                    .map(|(k, v)| (k.get_ref().clone(), path_in(v, at)))
            });
            let Some((name, inner)) = offending else {
                self.serde_error(&error, path.to_owned());
                return None;
            };
            self.serde_error(&error, format!("{path}.{name}{inner}"));
            // Each round removes a key, so the loop ends; stop rather than spin should a
            // key ever not be found again.
            keys.remove(&*name)?;
            set_aside.push(name.into_owned());
        }
    }

    /// Reports a serde error about the key at `key`.
    fn serde_error(&mut self, error: &toml::de::Error, key: String) {
        let (problem, allowed) =
            document::serde_problem(error.message(), (self.schema.allowed)(&key));
        let allowed = if allowed.is_empty() {
            self.schema.see.to_owned()
        } else {
            allowed
        };
        self.report.error(key, error.span(), problem, allowed);
    }
}

/// Where to point for a top-level table as a whole: the `[name]` header, or `name` of an
/// inline table.
fn header_span(key: &Spanned<DeString<'_>>, value: &Spanned<DeValue<'_>>) -> Range<usize> {
    // A `[name]` table's own span is its header, which contains the key; an inline table
    // `name = {...}` spans the braces, after the key.
    if value.span().contains(&key.span().start) {
        value.span()
    } else {
        key.span()
    }
}

/// The path (`[2]`, `.key`) of the element at byte `at` inside `value`, if any.
fn path_in(value: &Spanned<DeValue<'_>>, at: usize) -> String {
    match value.get_ref() {
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find(|(_, item)| item.span().contains(&at))
            .map(|(i, item)| format!("[{i}]{}", path_in(item, at)))
            .unwrap_or_default(),
        DeValue::Table(table) => table
            .iter()
            .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
            .map(|(k, v)| format!(".{}{}", k.get_ref(), path_in(v, at)))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, expecting = "a table")]
    struct Fruit {
        name: Option<Spanned<String>>,
        count: Option<Spanned<i64>>,
        tags: Option<Vec<Spanned<String>>>,
    }

    fn allowed(key: &str) -> &'static str {
        match document::generic_key(key).as_str() {
            "fruit.count" | "basket[].count" => "a whole number",
            "basket" => "[[basket]] tables",
            _ => "",
        }
    }

    static SCHEMA: Schema = Schema {
        sections: "the sections [fruit] and [[basket]]",
        allowed,
        see: "see the fruit manual",
    };

    /// Reads `text` as `[fruit]` and `[[basket]]`, returning what was read and every
    /// diagnostic as `LINE:COL: ...`.
    fn read(text: &str) -> (Section<Fruit>, Tables<Fruit>, Vec<String>) {
        let mut report = Report::new(text);
        let (mut fruit, mut basket) = (Section::Absent, Tables::Absent);
        if let Some(document) = super::document(text, &mut report) {
            let mut reader = Reader::new(&mut report, &SCHEMA);
            for (key, value) in document.iter() {
                match key.get_ref().as_ref() {
                    "fruit" => fruit = reader.table(key, value),
                    "basket" => basket = reader.tables(key, value),
                    _ => reader.unknown(key, value),
                }
            }
        }
        let lines = report.finish().iter().map(ToString::to_string).collect();
        (fruit, basket, lines)
    }

    #[test]
    fn a_refused_key_is_set_aside_and_the_rest_of_its_table_still_read() {
        let (fruit, _, lines) =
            read("[fruit]\ncolour = 1\ncount = \"7\"\nname = \"apple\"\nsize = 2\n");
        assert_eq!(
            lines,
            [
                "2:1: error: fruit.colour: unknown key; allowed: one of `name`, `count`, `tags`",
                "3:9: error: fruit.count: invalid type: string \"7\"; allowed: a whole number",
                "5:1: error: fruit.size: unknown key; allowed: one of `name`, `count`, `tags`",
            ]
        );
        let Section::Present(table) = fruit else {
            panic!("the table is lost")
        };
        assert_eq!(
            table.value.name.as_ref().map(|n| n.get_ref().as_str()),
            Some("apple")
        );
        assert_eq!(table.set_aside, ["colour", "count", "size"]);
        assert!(table.set_aside("count") && !table.set_aside("name"));
        assert_eq!(table.span, 0..7, "the [fruit] header");
    }

    #[test]
    fn a_bad_list_element_is_named_by_its_index_and_sets_its_key_aside() {
        let (fruit, _, lines) = read("[fruit]\ntags = [\"a\", 2]\n");
        assert_eq!(
            lines,
            ["2:14: error: fruit.tags[1]: invalid type: integer `2`; allowed: a string"]
        );
        let table = fruit.table().expect("the table is kept");
        assert!(table.set_aside("tags") && table.value.tags.is_none());
    }

    #[test]
    fn each_table_of_an_array_is_read_on_its_own() {
        let (_, basket, lines) =
            read("[[basket]]\ncount = 1\n\n[[basket]]\ncount = true\n\n[[basket]]\nname = \"x\"\n");
        assert_eq!(
            lines,
            ["5:9: error: basket[1].count: invalid type: boolean `true`; allowed: a whole number"]
        );
        let Tables::Present { span, tables } = basket else {
            panic!("no tables")
        };
        assert_eq!(span, 0..10, "the first [[basket]] header");
        let counts: Vec<Option<i64>> = tables
            .iter()
            .map(|t| {
                t.as_ref()
                    .and_then(|t| t.value.count.as_ref().map(|c| *c.get_ref()))
            })
            .collect();
        assert_eq!(counts, [Some(1), None, None], "the bad count is set aside");
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_refused_whole() {
        let (fruit, basket, lines) = read("fruit = \"apple\"\n\n[basket]\ncount = 1\n");
        assert!(matches!(fruit, Section::Invalid));
        assert!(matches!(basket, Tables::Invalid));
        assert_eq!(
            lines,
            [
                "1:9: error: fruit: invalid type: string \"apple\"; allowed: a table",
                "3:1: error: basket: a single [basket] table; allowed: [[basket]] tables",
            ]
        );
    }

    #[test]
    fn unknown_top_level_keys_say_which_sections_exist() {
        let (_, _, lines) = read("colour = 1\n\n[fruits]\n");
        assert_eq!(
            lines,
            [
                "1:1: error: colour: unknown key outside any section; allowed: the sections \
                 [fruit] and [[basket]]",
                "3:2: error: fruits: unknown section; allowed: the sections [fruit] and \
                 [[basket]]",
            ]
        );
    }

    #[test]
    fn only_the_first_syntax_error_is_reported_under_its_key() {
        let (_, _, lines) = read("[fruit]\nname = = \"x\"\ncount = = 2\n");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("2:8: error: fruit.name: TOML syntax: "),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn contents_of_an_absent_section_are_its_defaults() {
        let absent = Fruit::default();
        let section: Section<Fruit> = Section::Absent;
        let (value, table) = section.contents(&absent).expect("usable");
        assert!(value.name.is_none() && table.is_none());
        assert!(Section::<Fruit>::Invalid.contents(&absent).is_none());
        assert!(section.present().is_none());
    }
}
