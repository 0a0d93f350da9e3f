//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get` (columns NAME plus the
//! resource's printer columns), and the JSONPath subset CRD printer columns use.
//!
//! JSONPath here: `.field`, `['field']`, `[N]`, `[*]` and filters `[?(@.a.b=="x")]` (with
//! `==` or `!=` against a quoted string, number or boolean). Several results join with `,`;
//! no result is a null cell (kubectl prints `<none>`). `date` columns are rendered as ages
//! (`5s`, `3m`), as the real server renders them.

use serde_json::{Value, json};

use super::{
    registry::{Column, ResourceType},
    time,
};

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(Vec<String>, bool, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_owned()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            // A filter may hold `]` inside quotes; take up to the `)]` that closes it.
            if let Some(f) = inner.strip_prefix("?(") {
                let close = r.find(")]")?;
                let expr = &r[2..close];
                let _ = f;
                let (lhs, eq, rhs) = if let Some((l, v)) = expr.split_once("==") {
                    (l, true, v)
                } else {
                    let (l, v) = expr.split_once("!=")?;
                    (l, false, v)
                };
                let field: Vec<String> = lhs
                    .trim()
                    .strip_prefix("@.")?
                    .split('.')
                    .map(str::to_owned)
                    .collect();
                let rhs = rhs.trim();
                let value = if let Some(s) = rhs.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
                {
                    json!(s)
                } else if let Some(s) = rhs.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    json!(s)
                } else {
                    serde_json::from_str(rhs).ok()?
                };
                steps.push(Step::Filter(field, eq, value));
                rest = &r[close + 2..];
                continue;
            }
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else {
                let name = inner.trim_matches(|c| c == '\'' || c == '"');
                steps.push(Step::Field(name.to_owned()));
            }
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The values a JSONPath selects in `object` (none when it does not parse).
#[must_use]
pub fn select<'v>(object: &'v Value, path: &str) -> Vec<&'v Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut at = vec![object];
    for step in &steps {
        at = at
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match step {
                    Step::Field(k) => v.get(k).into_iter().collect(),
                    Step::Index(i) => v.get(*i).into_iter().collect(),
                    Step::All => match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(m) => m.values().collect(),
                        _ => Vec::new(),
                    },
                    Step::Filter(field, eq, want) => v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|item| {
                            let have = field.iter().try_fold(*item, |x, k| x.get(k));
                            (have == Some(want)) == *eq
                        })
                        .collect(),
                }
            })
            .collect();
    }
    at
}

fn cell(object: &Value, column: &Column, now: i64) -> Value {
    let found = select(object, &column.json_path);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    if column.kind == "date" {
        return match first.as_str().and_then(time::parse_rfc3339) {
            Some(t) => json!(time::human_duration(now - t)),
            None => Value::Null,
        };
    }
    if found.len() == 1 {
        return match (column.kind.as_str(), first) {
            (_, Value::String(_) | Value::Number(_) | Value::Bool(_)) => (*first).clone(),
            _ => json!(first.to_string()),
        };
    }
    let texts: Vec<String> = found
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    json!(texts.join(","))
}

/// The column definitions: NAME, then the resource's columns.
#[must_use]
pub fn column_definitions(resource: &ResourceType) -> Vec<Value> {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.", "priority": 0}),
    ];
    defs.extend(resource.columns.iter().map(|c| {
        json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    defs
}

/// What each row carries as `object`: `includeObject=None|Metadata|Object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// A PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// One table row for an object.
#[must_use]
pub fn row(resource: &ResourceType, object: &Value, include: Include, now: i64) -> Value {
    let mut cells = vec![
        object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    cells.extend(resource.columns.iter().map(|c| cell(object, c, now)));
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Metadata => row["object"] = partial_metadata(object),
        Include::Object => row["object"] = object.clone(),
    }
    row
}

/// A Table of these objects.
#[must_use]
pub fn table(
    resource: &ResourceType,
    objects: &[&Value],
    list_meta: Value,
    include: Include,
    now: i64,
) -> Value {
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": column_definitions(resource),
        "rows": objects.iter().map(|o| row(resource, o, include, now)).collect::<Vec<_>>(),
    })
}

/// The `PartialObjectMetadata` of an object.
#[must_use]
pub fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Value {
        json!({"metadata": {"name": "alice", "creationTimestamp": "2024-01-01T00:00:00Z"},
               "spec": {"egressSourceIP": "192.0.2.10", "destinationCIDRs": ["198.51.100.0/24", "203.0.113.0/24"]},
               "status": {"selectedPods": 3, "conditions": [
                   {"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}]}})
    }

    /// The key structure of a value: the same for two values of one shape.
    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            Value::Array(a) => a.first().map_or(json!([]), |v| json!([shape(v)])),
            _ => Value::Null,
        }
    }

    #[test]
    fn tables_have_a_real_clusters_shape() {
        let real: Value =
            serde_json::from_str(include_str!("fixtures/table-crd.json")).expect("fixture");
        let mut t = super::super::registry::builtins().remove(1);
        t.columns = vec![
            Column {
                name: "Egress IP".into(),
                kind: "string".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".spec.egressSourceIP".into(),
            },
            Column {
                name: "Age".into(),
                kind: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            },
        ];
        let object = json!({"metadata": {"name": "alice-frontend", "uid": "u", "resourceVersion": "5308", "generation": 1, "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"egressSourceIP": "192.168.1.100"}});
        let now = time::parse_rfc3339("2024-01-01T00:03:00Z").expect("parses");
        let ours = table(
            &t,
            &[&object],
            json!({"resourceVersion": "5308"}),
            Include::Metadata,
            now,
        );
        assert_eq!(shape(&ours), shape(&real));
        assert_eq!(ours["rows"][0]["cells"], real["rows"][0]["cells"]);
        let types: Vec<&Value> = ours["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| &c["type"])
            .collect();
        assert_eq!(types, [&json!("string"), &json!("string"), &json!("date")]);
    }

    #[test]
    fn json_paths_of_printer_columns() {
        let p = policy();
        assert_eq!(select(&p, ".spec.egressSourceIP"), [&json!("192.0.2.10")]);
        assert_eq!(
            select(&p, ".status.conditions[?(@.type==\"Programmed\")].status"),
            [&json!("False")]
        );
        assert_eq!(
            select(&p, ".status.conditions[?(@.type!=\"Programmed\")].type"),
            [&json!("Accepted")]
        );
        assert_eq!(
            select(&p, ".spec.destinationCIDRs[1]"),
            [&json!("203.0.113.0/24")]
        );
        assert_eq!(select(&p, "{.status.conditions[*].type}").len(), 2);
        assert!(select(&p, ".status.missing").is_empty());
    }

    #[test]
    fn rows_render_cells_like_the_api_server() {
        let mut t = super::super::registry::builtins().remove(1);
        t.columns = vec![
            Column {
                name: "Egress IP".into(),
                kind: "string".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".spec.egressSourceIP".into(),
            },
            Column {
                name: "Selected".into(),
                kind: "integer".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".status.selectedPods".into(),
            },
            Column {
                name: "CIDRs".into(),
                kind: "string".into(),
                format: String::new(),
                description: String::new(),
                priority: 1,
                json_path: ".spec.destinationCIDRs[*]".into(),
            },
            Column {
                name: "Missing".into(),
                kind: "string".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".status.nope".into(),
            },
            Column {
                name: "Age".into(),
                kind: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            },
        ];
        let now = time::parse_rfc3339("2024-01-01T00:03:00Z").expect("parses");
        let r = row(&t, &policy(), Include::Metadata, now);
        assert_eq!(
            r["cells"],
            json!([
                "alice",
                "192.0.2.10",
                3,
                "198.51.100.0/24,203.0.113.0/24",
                null,
                "3m"
            ])
        );
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
    }
}
