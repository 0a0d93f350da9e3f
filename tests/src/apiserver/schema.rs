//! Custom objects against their CRD's `openAPIV3Schema`: pruning of unknown fields, defaults,
//! and the checks a structural schema states — `type`, `required`, `enum`, `minItems` /
//! `maxItems`, `minLength` / `maxLength`, `minimum` / `maximum`, `pattern`, `nullable`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`.
//!
//! Like the real API server, `format` (e.g. `ipv4`) is not enforced. `x-kubernetes-validations`
//! (CEL rules) are skipped: a rule the real server would refuse is accepted here.

use regex::Regex;
use serde_json::{Map, Value};

/// One failed check: the field path (`spec.egress`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `spec.egress[0].podSelector`.
    pub field: String,
    /// `Required value`, `Unsupported value: "x"`, ….
    pub message: String,
    /// The `StatusCause` reason: `FieldValueRequired`, `FieldValueInvalid`, ….
    pub reason: &'static str,
}

/// The outcome of [`check`]: what failed and which unknown fields were pruned.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Failed checks (422 when any).
    pub violations: Vec<Violation>,
    /// Unknown fields that were dropped (`fieldValidation=Strict` refuses them).
    pub unknown: Vec<String>,
}

/// Prunes, defaults and validates a custom object in place against `schema` (the version's
/// `openAPIV3Schema`). `apiVersion`, `kind` and `metadata` are the server's business and are
/// left alone.
pub fn check(object: &mut Value, schema: &Value) -> Outcome {
    let mut out = Outcome::default();
    let Value::Object(root) = object else {
        out.violations
            .push(invalid(String::new(), "must be an object".into()));
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    for key in required(schema) {
        if !root.contains_key(key) && !matches!(key, "apiVersion" | "kind" | "metadata") {
            out.violations.push(Violation {
                field: key.to_owned(),
                message: "Required value".into(),
                reason: "FieldValueRequired",
            });
        }
    }
    apply_defaults(root, schema);
    let preserve = preserves(schema);
    let keys: Vec<String> = root.keys().cloned().collect();
    for key in keys {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&key)) {
            Some(sub) => {
                if let Some(v) = root.get_mut(&key) {
                    walk(v, sub, key.clone(), &mut out);
                }
            }
            None if !preserve => {
                root.remove(&key);
                out.unknown.push(key);
            }
            None => {}
        }
    }
    out
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn invalid(field: String, message: String) -> Violation {
    Violation {
        field,
        message,
        reason: "FieldValueInvalid",
    }
}

fn apply_defaults(map: &mut Map<String, Value>, schema: &Value) {
    for (key, sub) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let (None, Some(default)) = (map.get(key), sub.get("default")) {
            map.insert(key.clone(), default.clone());
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(value: &mut Value, schema: &Value, path: String, out: &mut Outcome) {
    let have = type_name(value);
    if have == "null" {
        // Nulls of non-nullable fields are pruned by the caller's merge; here they pass.
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let fits = want == have
            || (want == "number" && have == "integer")
            || (int_or_string && matches!(have, "integer" | "string"));
        if !fits {
            let message = format!(
                "Invalid value: \"{have}\": {path} in body must be of type {want}: \"{have}\""
            );
            out.violations.push(Violation {
                field: path,
                message,
                reason: "FieldValueTypeInvalid",
            });
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(Value::to_string).collect();
        out.violations.push(Violation {
            field: path.clone(),
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            ),
            reason: "FieldValueNotSupported",
        });
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let shown = value.to_string();
    match value {
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if bound("minLength").is_some_and(|m| len < m) {
                out.violations.push(invalid(
                    path.clone(),
                    format!(
                        "Invalid value: {shown}: {path} in body should be at least {} chars long",
                        bound("minLength").unwrap_or_default()
                    ),
                ));
            }
            if bound("maxLength").is_some_and(|m| len > m) {
                out.violations.push(Violation {
                    field: path.clone(),
                    message: format!(
                        "Too long: may not be more than {} bytes",
                        bound("maxLength").unwrap_or_default()
                    ),
                    reason: "FieldValueTooLong",
                });
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let ok = Regex::new(pattern).map_or(true, |re| re.is_match(s));
                if !ok {
                    out.violations.push(invalid(
                        path.clone(),
                        format!("Invalid value: {shown}: {path} in body should match '{pattern}'"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if bound("minimum").is_some_and(|m| x < m) || bound("maximum").is_some_and(|m| x > m) {
                out.violations.push(invalid(
                    path.clone(),
                    format!("Invalid value: {shown}: {path} in body is out of range"),
                ));
            }
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            if let Some(m) = bound("minItems").filter(|m| len < *m) {
                out.violations.push(invalid(
                    path.clone(),
                    format!("Invalid value: {len}: {path} in body should have at least {m} items"),
                ));
            }
            if let Some(m) = bound("maxItems").filter(|m| len > *m) {
                out.violations.push(Violation {
                    field: path.clone(),
                    message: format!("Too many: {len}: must have at most {m} items"),
                    reason: "FieldValueTooMany",
                });
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, item_schema, format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            for key in required(schema) {
                if !map.contains_key(key) {
                    out.violations.push(Violation {
                        field: format!("{path}.{key}"),
                        message: "Required value".into(),
                        reason: "FieldValueRequired",
                    });
                }
            }
            apply_defaults(map, schema);
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve =
                preserves(schema) || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let sub = props.and_then(|p| p.get(&key)).or(extra);
                let child = format!("{path}.{key}");
                match sub {
                    Some(sub) => {
                        if let Some(v) = map.get_mut(&key) {
                            walk(v, sub, child, out);
                        }
                    }
                    None if !preserve && (props.is_some() || extra.is_none()) => {
                        map.remove(&key);
                        out.unknown.push(child);
                    }
                    None => {}
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["egressSourceIP", "egress"], "properties": {
                "egressSourceIP": {"type": "string", "format": "ipv4"},
                "action": {"type": "string", "enum": ["SNAT", "NoSNAT"], "default": "SNAT"},
                "egress": {"type": "array", "minItems": 1, "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }})
    }

    #[test]
    fn accepts_prunes_and_defaults() {
        let mut object = json!({"apiVersion": "egret.dev/v1alpha1", "kind": "EgressNATPolicy", "metadata": {"name": "a"},
            "spec": {"egressSourceIP": "not-an-ip", "egress": [{"podSelector": {}}], "bogus": 1, "labels": {"x": "y"}}});
        let out = check(&mut object, &schema());
        assert_eq!(out.violations, []);
        assert_eq!(out.unknown, ["spec.bogus"]);
        assert_eq!(object["spec"]["action"], json!("SNAT"));
        assert_eq!(object["spec"]["labels"], json!({"x": "y"}));
    }

    #[test]
    fn reports_each_failed_check_with_its_path() {
        let mut object =
            json!({"spec": {"egress": [], "action": "Drop", "name": "UP", "labels": {"x": 1}}});
        let fields: Vec<String> = check(&mut object, &schema())
            .violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.egressSourceIP",
                "spec.action",
                "spec.egress",
                "spec.labels.x",
                "spec.name"
            ]
        );
    }
}
