//! The three patch formats `PATCH` accepts besides server-side apply: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge patch is served as a merge patch with two of its rules: lists of objects
//! that all carry a `name` (containers, env, volumes, ports) merge by that name, and the `$`
//! directives kubectl adds (`$setElementOrder/…`, `$retainKeys`, `$deleteFromPrimitiveList/…`)
//! are dropped, except `$patch: delete` on a map, which deletes it. The other per-field merge
//! keys of the real type schemas (e.g. `containerPort`) are not known here: such lists are
//! replaced whole, as a merge patch would.

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies a strategic merge patch to `target` (see the module doc for what is honoured).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (target @ Value::Object(_), Value::Object(patch)) => {
            if patch.get("$patch").and_then(Value::as_str) == Some("delete") {
                *target = Value::Null;
                return;
            }
            let Value::Object(map) = target else { return };
            for (key, value) in patch {
                if key.starts_with('$') {
                    continue;
                }
                if value.is_null() || value.get("$patch").and_then(Value::as_str) == Some("delete")
                {
                    map.remove(key);
                } else if let Some(existing) = map.get_mut(key) {
                    strategic_merge_patch(existing, value);
                } else {
                    let mut fresh = Value::Null;
                    strategic_merge_patch(&mut fresh, value);
                    map.insert(key.clone(), fresh);
                }
            }
        }
        (Value::Array(items), Value::Array(patch)) if by_name(items) && by_name(patch) => {
            for entry in patch {
                let name = entry.get("name").cloned();
                match items.iter_mut().find(|i| i.get("name") == name.as_ref()) {
                    Some(existing) => strategic_merge_patch(existing, entry),
                    None => {
                        let mut fresh = Value::Null;
                        strategic_merge_patch(&mut fresh, entry);
                        items.push(fresh);
                    }
                }
            }
            items.retain(|i| !i.is_null());
        }
        (target, patch) => {
            // A fresh map or list: strip directives from what is inserted.
            let mut clean = patch.clone();
            strip_directives(&mut clean);
            *target = clean;
        }
    }
}

fn by_name(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Applies an RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`, `test`).
///
/// # Errors
///
/// A message naming the operation that failed; `target` is then left as it was.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let mut work = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i}: missing {name:?}"))
        };
        let path = field("path")?;
        match field("op")? {
            "add" => add(&mut work, path, value_of(op, i)?)?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" => {
                remove(&mut work, path)?;
                add(&mut work, path, value_of(op, i)?)?;
            }
            "move" => {
                let moved = remove(&mut work, field("from")?)?;
                add(&mut work, path, moved)?;
            }
            "copy" => {
                let copied = work
                    .pointer(field("from")?)
                    .cloned()
                    .ok_or_else(|| format!("operation {i}: nothing at \"from\""))?;
                add(&mut work, path, copied)?;
            }
            "test" => {
                if work.pointer(path) != Some(&value_of(op, i)?) {
                    return Err(format!("operation {i}: test failed at {path:?}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    *target = work;
    Ok(())
}

fn value_of(op: &Value, i: usize) -> Result<Value, String> {
    op.get("value")
        .cloned()
        .ok_or_else(|| format!("operation {i}: missing \"value\""))
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("bad path {path:?}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, key) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if key == "-" {
                items.len()
            } else {
                key.parse().map_err(|_| format!("bad index in {path:?}"))?
            };
            if index > items.len() {
                return Err(format!("index out of range in {path:?}"));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("no parent for {path:?}")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = split_pointer(path)?;
    let missing = || format!("nothing at {path:?}");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&key).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index: usize = key.parse().map_err(|_| missing())?;
            (index < items.len())
                .then(|| items.remove(index))
                .ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut doc, &json!({"l": [1, 2]}));
        merge_patch(&mut doc, &json!({"l": [3]}));
        assert_eq!(doc["l"], json!([3]));
    }

    #[test]
    fn strategic_merge_merges_named_lists_and_drops_directives() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic_merge_patch(
            &mut pod,
            &json!({"metadata": {"labels": {"app": "x"}},
                    "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                             "containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(
            pod,
            json!({"metadata": {"labels": {"app": "x"}},
                   "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "replace", "path": "/list/0", "value": 0},
                {"op": "test", "path": "/list/2", "value": 3}
            ]),
        )
        .expect("applies");
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b/c": "2"}}, "list": [0, 2, 3]})
        );
        let before = doc.clone();
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert_eq!(doc, before);
    }
}
