//! Where things are in a parsed TOML document (`toml::de::DeTable`, which keeps spans):
//! the dotted key path (`floating_ip[1].vrid`, `policy[0].sources[2]`) at or before a byte
//! offset, and the report of a TOML syntax error under the key it is in or follows.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::Report;

/// Reports a TOML syntax error under `key` (the caller names it, with [`key_at`] or
/// [`key_before`]; `None` reports it under `document`), at the error's place.
pub fn syntax_error(report: &mut Report<'_>, key: Option<String>, error: &toml::de::Error) {
    let key = key.unwrap_or_else(|| "document".to_owned());
    let message = error.message().trim();
    let (problem, allowed_text) = match message.split_once(", expected ") {
        Some((problem, expected)) => (problem, format!("{expected} here")),
        None if message == "duplicate key" => (message, "each key once per table".to_owned()),
        None => (message, "valid TOML, see https://toml.io".to_owned()),
    };
    report.error(
        key,
        error.span(),
        format!("TOML syntax: {problem}"),
        allowed_text,
    );
}

/// `prefix.key`, or `key` at the top level.
pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The dotted path (`floating_ip[1].vrid`) of the innermost key or value at byte `offset`.
pub fn key_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    key_in_table(table, offset, "")
}

/// The path of the last key written before byte `offset`: where a syntax error happened
/// when the broken text itself is not a key or value.
pub fn key_before(table: &DeTable<'_>, offset: usize) -> Option<String> {
    fn walk(table: &DeTable<'_>, offset: usize, prefix: &str, best: &mut Option<(usize, String)>) {
        for (key, value) in table.iter() {
            let path = join(prefix, key.get_ref());
            let start = key.span().start;
            if start <= offset && best.as_ref().is_none_or(|(s, _)| start >= *s) {
                *best = Some((start, path.clone()));
            }
            match value.get_ref() {
                DeValue::Table(inner) => walk(inner, offset, &path, best),
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let DeValue::Table(inner) = item.get_ref() {
                            walk(inner, offset, &format!("{path}[{i}]"), best);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut best = None;
    walk(table, offset, "", &mut best);
    best.map(|(_, path)| path)
}

fn key_in_table(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        if key.span().contains(&offset) {
            return Some(path);
        }
        if let Some(found) = key_in_value(value, offset, &path) {
            return Some(found);
        }
    }
    None
}

fn key_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    // Children first: a `[table]`'s span is only its header, and an inline container's
    // span contains its elements' spans.
    let inner = match value.get_ref() {
        DeValue::Table(table) => key_in_table(table, offset, path),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| key_in_value(item, offset, &format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(|| path.to_owned()))
}

/// What a serde error about one key says, as (problem, allowed): an unknown key with the
/// keys serde lists as valid, or a wrong value with what the schema allows (`schema`, from
/// the daemon's own table of keys; empty when it has nothing to add, and then serde's own
/// "expected ..." stands).
pub fn serde_problem(message: &str, schema: &str) -> (String, String) {
    let message = message.trim();
    if message.starts_with("unknown field `") {
        // "unknown field `x`, expected one of `a`, `b`": serde lists the valid keys.
        let valid = message
            .split_once(", expected ")
            .map_or("no keys here", |(_, valid)| valid);
        ("unknown key".to_owned(), valid.to_owned())
    } else if let Some((problem, expected)) = message.split_once(", expected ") {
        let allowed = if schema.is_empty() { expected } else { schema };
        (problem.to_owned(), allowed.to_owned())
    } else {
        (message.to_owned(), schema.to_owned())
    }
}

/// A key path with its array indices dropped, to look it up in a schema:
/// `floating_ip[3].vrid` becomes `floating_ip[].vrid`.
pub fn generic_key(key: &str) -> String {
    let mut generic = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => {
                in_index = true;
                generic.push('[');
            }
            ']' => {
                in_index = false;
                generic.push(']');
            }
            _ if in_index => {}
            _ => generic.push(c),
        }
    }
    generic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str, needle: &str) -> Option<String> {
        let document = DeTable::parse(text).expect("valid TOML").into_inner();
        key_at(&document, text.find(needle).expect("needle in text"))
    }

    #[test]
    fn finds_the_key_path_at_an_offset() {
        let text = "[gateway]\ninterface = \"eth1\"\n\n[tunnel]\nallowed_sources = [\"a\", \"b\"]\n\n\
                    [[floating_ip]]\naddress = \"x\"\nvrid = 1\n\n[[floating_ip]]\naddress = \"y\"\nvrid = 2\n";
        assert_eq!(
            key_of(text, "\"eth1\"").as_deref(),
            Some("gateway.interface")
        );
        assert_eq!(
            key_of(text, "\"b\"").as_deref(),
            Some("tunnel.allowed_sources[1]")
        );
        assert_eq!(
            key_of(text, "vrid = 2").as_deref(),
            Some("floating_ip[1].vrid")
        );
        assert_eq!(
            key_of(text, "\"y\"").as_deref(),
            Some("floating_ip[1].address")
        );
        assert_eq!(key_of(text, "[tunnel]").as_deref(), Some("tunnel"));
    }

    #[test]
    fn array_indices_are_dropped_for_the_schema() {
        assert_eq!(generic_key("floating_ip[3].vrid"), "floating_ip[].vrid");
        assert_eq!(generic_key("policy[12].sources[0]"), "policy[].sources[]");
        assert_eq!(generic_key("nat.port_range"), "nat.port_range");
    }

    #[test]
    fn serde_errors_become_problem_and_allowed() {
        assert_eq!(
            serde_problem("unknown field `bogus`, expected one of `a`, `b`", "x"),
            ("unknown key".to_owned(), "one of `a`, `b`".to_owned())
        );
        assert_eq!(
            serde_problem("invalid type: string \"1\", expected an integer", ""),
            (
                "invalid type: string \"1\"".to_owned(),
                "an integer".to_owned()
            )
        );
        assert_eq!(
            serde_problem("invalid type: string \"1\", expected an integer", "1..=254"),
            (
                "invalid type: string \"1\"".to_owned(),
                "1..=254".to_owned()
            )
        );
        assert_eq!(
            serde_problem("something else ", "schema"),
            ("something else".to_owned(), "schema".to_owned())
        );
    }
}
