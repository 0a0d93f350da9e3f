//! Field management: who owns which field of an object (`metadata.managedFields`), and
//! server-side apply on top of it.
//!
//! A field is a path of map keys down to a leaf; lists and scalars are leaves, so a list is
//! owned whole (the `atomic` list type; `x-kubernetes-list-type: map` lists are not merged
//! per key here). Identity (`apiVersion`, `kind`, `metadata` other than labels, annotations,
//! owner references and finalizers) is never owned. Entries are kept per manager, operation
//! (`Apply` or `Update`) and subresource, as the API server keeps them.
//!
//! Apply (the structured-merge-diff rules, restricted to maps): the applied configuration is
//! merged into the live object; fields the manager applied before and leaves out now are
//! removed unless another manager owns them; fields another manager owns with a different
//! value are conflicts, which `force` takes over and which otherwise refuse the apply. Every
//! other write hands the fields it changed to its manager and takes them from everyone else.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field: map keys from the object's root.
pub type Path = Vec<String>;
/// The fields one manager owns.
pub type FieldSet = BTreeSet<Path>;

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The field manager's name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the manager wrote with.
    pub api_version: String,
    /// When it last changed (RFC 3339).
    pub time: String,
    /// `status` for writes through the status subresource.
    pub subresource: Option<String>,
    /// The fields it owns.
    pub fields: FieldSet,
}

/// What a write did to the fields: who wrote, through which version and subresource, when.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The request's `group/version`.
    pub api_version: &'a str,
    /// `Some("status")` through the status subresource.
    pub subresource: Option<&'a str>,
    /// Now, RFC 3339.
    pub time: &'a str,
}

/// A field another manager owns with another value; apply without force refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The field, `.spec.x` style.
    pub field: String,
}

/// `.a.b.c` for messages.
#[must_use]
pub fn dotted(path: &Path) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

fn related(a: &Path, b: &Path) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// The value at a path.
#[must_use]
pub fn get<'v>(value: &'v Value, path: &Path) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

/// The owned leaves of an object (see the module doc for what is left out).
#[must_use]
pub fn leaves(object: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(root) = object else {
        return out;
    };
    for (key, value) in root {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for sub in ["labels", "annotations", "ownerReferences", "finalizers"] {
                    if let Some(v) = value.get(sub) {
                        collect(v, vec!["metadata".to_owned(), sub.to_owned()], &mut out);
                    }
                }
            }
            _ => collect(value, vec![key.clone()], &mut out),
        }
    }
    out
}

fn collect(value: &Value, path: Path, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(k.clone());
                collect(v, p, out);
            }
        }
        Value::Null => {}
        _ => {
            out.insert(path);
        }
    }
}

/// `fieldsV1` for a set: `{"f:spec": {"f:x": {}}}`.
#[must_use]
pub fn to_fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut at = &mut root;
        for key in path {
            let entry = at.entry(format!("f:{key}")).or_insert_with(|| json!({}));
            let Value::Object(next) = entry else { break };
            at = next;
        }
    }
    Value::Object(root)
}

/// The set a `fieldsV1` describes; list-element keys (`k:`, `v:`, `i:`) count as owning the list.
#[must_use]
pub fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(value: &Value, path: &mut Path, out: &mut FieldSet) {
        let children: Vec<_> = value
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.strip_prefix("f:")?, v)))
            .collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, v) in children {
            path.push(k.to_owned());
            walk(v, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// The entries of an object's `metadata.managedFields`.
#[must_use]
pub fn read_entries(object: &Value) -> Vec<Entry> {
    let text = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: text(e, "manager"),
            operation: text(e, "operation"),
            api_version: text(e, "apiVersion"),
            time: text(e, "time"),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_owned),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

/// Writes the entries back into `metadata.managedFields` (dropping entries that own nothing).
pub fn write_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if let (Some(sub), Value::Object(m)) = (&e.subresource, &mut v) {
                m.insert("subresource".to_owned(), json!(sub));
            }
            v
        })
        .collect();
    if object.is_object() && !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_owned(), Value::Array(list));
        }
    }
}

fn entry_mut<'e>(entries: &'e mut Vec<Entry>, w: &Writer<'_>, operation: &str) -> &'e mut Entry {
    let sub = w.subresource.map(str::to_owned);
    let found = entries
        .iter()
        .position(|e| e.manager == w.manager && e.operation == operation && e.subresource == sub);
    let index = found.unwrap_or_else(|| {
        entries.push(Entry {
            manager: w.manager.to_owned(),
            operation: operation.to_owned(),
            api_version: String::new(),
            time: String::new(),
            subresource: sub,
            fields: FieldSet::new(),
        });
        entries.len() - 1
    });
    let entry = &mut entries[index];
    w.api_version.clone_into(&mut entry.api_version);
    w.time.clone_into(&mut entry.time);
    entry
}

/// Records a create, update or patch (`old` is `None` on create): the fields that changed go
/// to the writer's `Update` entry and leave every other entry. Rewrites `new`'s managedFields.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let before = old.map(leaves).unwrap_or_default();
    let after = leaves(new);
    let null = Value::Null;
    let changed: Vec<Path> = after
        .iter()
        .filter(|p| old.and_then(|o| get(o, p)) != get(new, p))
        .cloned()
        .collect();
    let removed: Vec<&Path> = before
        .iter()
        .filter(|p| get(new, p).is_none_or(|v| v == &null))
        .collect();
    if changed.is_empty() && removed.is_empty() {
        // Nothing moved: the entries stay as they were (and so does their time).
        write_entries(new, &entries);
        return;
    }
    for e in &mut entries {
        e.fields.retain(|q| {
            !changed.iter().any(|p| related(p, q)) && !removed.iter().any(|p| q.starts_with(p))
        });
    }
    entry_mut(&mut entries, w, "Update").fields.extend(changed);
    write_entries(new, &entries);
}

fn deep_merge(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    deep_merge(existing, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

fn remove_path(value: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(map)) = parents.iter().try_fold(&mut *value, |v, k| v.get_mut(k)) {
        map.remove(last);
    }
}

/// Server-side apply of `config` by `w.manager` onto `live` (`None`: the apply creates).
/// `config` must already be cut to what the endpoint may change (no `status` on a main
/// resource with a status subresource, only `status` through it).
///
/// # Errors
///
/// The conflicts, when other managers own applied fields with other values and `force` is
/// not set.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    deep_merge(&mut result, config);
    let applied = leaves(config);
    let mut entries = live.map(read_entries).unwrap_or_default();
    let sub = w.subresource.map(str::to_owned);
    let mine = |e: &Entry| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub;

    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| e.manager != w.manager) {
        let taken: Vec<Path> = e
            .fields
            .iter()
            .filter(|q| {
                applied.iter().any(|p| related(p, q))
                    && live.and_then(|l| get(l, q)) != get(&result, q)
            })
            .cloned()
            .collect();
        for q in taken {
            if force {
                e.fields.remove(&q);
            } else {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    field: dotted(&q),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }

    // Fields this manager applied before and leaves out now go, unless someone else holds them.
    let stale: Vec<Path> = entries
        .iter()
        .filter(|e| mine(e))
        .flat_map(|e| e.fields.iter())
        .filter(|p| !applied.iter().any(|a| related(a, p)))
        .cloned()
        .collect();
    for p in &stale {
        let held = entries
            .iter()
            .any(|e| !mine(e) && e.fields.iter().any(|q| related(p, q)));
        if held {
            continue;
        }
        remove_path(&mut result, p);
        // Maps the removal left empty go too, unless someone owns something at or under them.
        let mut parent = p.clone();
        while parent.pop().is_some() && !parent.is_empty() {
            let empty =
                get(&result, &parent).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
            let owned = applied
                .iter()
                .chain(entries.iter().flat_map(|e| e.fields.iter()))
                .any(|q| q.starts_with(&parent) && q != p);
            if !empty || owned {
                break;
            }
            remove_path(&mut result, &parent);
        }
    }
    // Others' Update entries lose whatever this apply changed.
    let changed: Vec<Path> = applied
        .iter()
        .filter(|p| live.and_then(|l| get(l, p)) != get(&result, p))
        .cloned()
        .collect();
    for e in entries
        .iter_mut()
        .filter(|e| !mine(e) && e.manager != w.manager)
    {
        e.fields.retain(|q| !changed.iter().any(|p| related(p, q)));
    }
    entry_mut(&mut entries, w, "Apply").fields = applied;
    write_entries(&mut result, &entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "egret.dev/v1alpha1",
            subresource: Some("status"),
            time: "t",
        }
    }

    #[test]
    fn fields_v1_round_trips() {
        let object = json!({"apiVersion": "v1", "kind": "X",
            "metadata": {"name": "n", "labels": {"a": "1"}}, "status": {"nodes": {"gw1": "Up"}, "l": [1]}});
        let set = leaves(&object);
        assert_eq!(
            to_fields_v1(&set),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:status": {"f:l": {}, "f:nodes": {"f:gw1": {}}}})
        );
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }

    #[test]
    fn two_managers_share_a_map_and_stale_keys_go() {
        let base = json!({"metadata": {"name": "default"}, "spec": {"floatingIPs": ["192.0.2.1"]}});
        let one = apply(
            Some(&base),
            &json!({"status": {"nodes": {"gw1": "Up"}}}),
            &writer("gw1"),
            true,
        )
        .expect("applies");
        let two = apply(
            Some(&one),
            &json!({"status": {"nodes": {"gw2": "Up"}, "floatingIPs": {"192.0.2.1": "gw2"}}}),
            &writer("gw2"),
            true,
        )
        .expect("applies");
        assert_eq!(two["status"]["nodes"], json!({"gw1": "Up", "gw2": "Up"}));
        // gw2 applies again without floatingIPs: its stale key goes, gw1's stays.
        let three = apply(
            Some(&two),
            &json!({"status": {"nodes": {"gw2": "Down"}}}),
            &writer("gw2"),
            true,
        )
        .expect("applies");
        assert_eq!(
            three["status"],
            json!({"nodes": {"gw1": "Up", "gw2": "Down"}})
        );
        assert_eq!(three["spec"], base["spec"]);
        let managers: Vec<_> = read_entries(&three)
            .into_iter()
            .map(|e| e.manager)
            .collect();
        assert_eq!(managers, ["gw1", "gw2"]);
    }

    #[test]
    fn conflicts_refuse_without_force() {
        let one = apply(None, &json!({"spec": {"x": 1}}), &writer("a"), false).expect("creates");
        let err = apply(Some(&one), &json!({"spec": {"x": 2}}), &writer("b"), false)
            .expect_err("conflicts");
        assert_eq!(
            err,
            [Conflict {
                manager: "a".into(),
                field: ".spec.x".into()
            }]
        );
        // The same value is no conflict: both own it.
        let shared =
            apply(Some(&one), &json!({"spec": {"x": 1}}), &writer("b"), false).expect("agrees");
        let forced = apply(
            Some(&shared),
            &json!({"spec": {"x": 3}}),
            &writer("b"),
            true,
        )
        .expect("forces");
        assert_eq!(forced["spec"]["x"], json!(3));
        assert!(read_entries(&forced).iter().all(|e| e.manager == "b"));
    }

    #[test]
    fn updates_take_fields_from_appliers() {
        let applied = apply(
            None,
            &json!({"spec": {"x": 1, "y": 1}}),
            &writer("a"),
            false,
        )
        .expect("creates");
        let mut patched = applied.clone();
        patched["spec"]["x"] = json!(5);
        record_update(
            Some(&applied),
            &mut patched,
            &Writer {
                subresource: None,
                ..writer("kubectl")
            },
        );
        let entries = read_entries(&patched);
        assert_eq!(
            entries[0].fields,
            FieldSet::from([vec!["spec".into(), "y".into()]])
        );
        assert_eq!(
            entries[1].fields,
            FieldSet::from([vec!["spec".into(), "x".into()]])
        );
    }
}
