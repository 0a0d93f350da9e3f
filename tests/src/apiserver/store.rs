//! The objects and their history: one global resourceVersion counter (a decimal string on
//! the wire, as etcd's revision is), every change recorded in a bounded window that watches
//! resume from, and the state file that carries the objects across a restart.
//!
//! Invariants: every write takes the next resourceVersion; the history holds exactly the
//! changes with resourceVersion in `(oldest_valid, rv]`, in order; a watch may resume from
//! `N` only when `N >= oldest_valid` (else 410 Gone). Restarts keep `rv` monotonic.

use std::{
    collections::{BTreeMap, VecDeque},
    path::Path,
    sync::Arc,
};

use serde_json::{Value, json};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted (the object as it was, with the deletion's resourceVersion).
    Deleted,
}

impl ChangeKind {
    /// `ADDED`, `MODIFIED`, `DELETED`.
    #[must_use]
    pub fn wire(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its resourceVersion.
    pub rv: u64,
    /// The resource id (`group/plural`).
    pub resource: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the change (before it, for a deletion).
    pub object: Arc<Value>,
    /// The object before a modification (selectors need it to move objects in and out).
    pub prev: Option<Arc<Value>>,
}

/// A namespace and a name (`""` for cluster-scoped objects).
pub type Key = (String, String);

/// The object store.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<String, BTreeMap<Key, Arc<Value>>>,
    rv: u64,
    history: VecDeque<Change>,
    oldest_valid: u64,
    history_limit: usize,
}

/// The key of an object.
#[must_use]
pub fn key_of(object: &Value) -> Key {
    let text = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (text("/metadata/namespace"), text("/metadata/name"))
}

impl Store {
    /// An empty store keeping at most `history_limit` changes.
    #[must_use]
    pub fn new(history_limit: usize) -> Self {
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            oldest_valid: 1,
            history_limit: history_limit.max(1),
        }
    }

    /// The current resourceVersion.
    #[must_use]
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may resume from.
    #[must_use]
    pub fn oldest_valid(&self) -> u64 {
        self.oldest_valid
    }

    /// One object.
    #[must_use]
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(resource)?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The objects of a resource in key order, in one namespace or all, from `after` on
    /// (exclusive; for continue tokens).
    pub fn list<'s>(
        &'s self,
        resource: &str,
        namespace: Option<&'s str>,
        after: Option<&'s Key>,
    ) -> impl Iterator<Item = &'s Arc<Value>> + 's {
        self.objects
            .get(resource)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |(k, _)| {
                namespace.is_none_or(|ns| k.0 == ns) && after.is_none_or(|a| *k > a)
            })
            .map(|(_, v)| v)
    }

    /// Every object of every resource (for the state file and derived registries).
    pub fn all(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.objects
            .iter()
            .flat_map(|(r, m)| m.values().map(move |v| (r, v)))
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_valid = dropped.rv;
            }
        }
    }

    /// Stores a created or changed object under the next resourceVersion (set into it).
    pub fn put(&mut self, resource: &str, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = Arc::new(object);
        let prev = self
            .objects
            .entry(resource.to_owned())
            .or_default()
            .insert(key_of(&object), object.clone());
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv: self.rv,
            resource: resource.to_owned(),
            kind,
            object: object.clone(),
            prev,
        });
        object
    }

    /// Deletes an object under the next resourceVersion; returns it as deleted.
    pub fn delete(&mut self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let removed = self
            .objects
            .get_mut(resource)?
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        self.rv += 1;
        let mut object = (*removed).clone();
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = Arc::new(object);
        self.record(Change {
            rv: self.rv,
            resource: resource.to_owned(),
            kind: ChangeKind::Deleted,
            object: object.clone(),
            prev: None,
        });
        Some(object)
    }

    /// The changes after `rv`, or `None` when they are no longer kept (410 Gone).
    #[must_use]
    pub fn changes_after(&self, rv: u64) -> Option<impl Iterator<Item = &Change>> {
        (rv >= self.oldest_valid).then(|| self.history.iter().filter(move |c| c.rv > rv))
    }

    /// Drops all history: every resourceVersion handed out so far becomes too old to watch from.
    pub fn expire(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.oldest_valid = self.rv;
    }

    /// The state file's contents: the counter and every object.
    #[must_use]
    pub fn snapshot(&self) -> Value {
        let objects: Vec<Value> = self
            .all()
            .map(|(r, o)| json!({"resource": r, "object": **o}))
            .collect();
        json!({"resourceVersion": self.rv.to_string(), "objects": objects})
    }

    /// Writes [`Store::snapshot`] to `path` (through a temporary file, so a crash never
    /// leaves half a state).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.snapshot())?)?;
        std::fs::rename(tmp, path)
    }

    /// Loads a state file written by [`Store::save`]. The history starts empty, so watches
    /// from before the restart get 410 and relist, as after an API server restart.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a state file.
    pub fn load(path: &Path, history_limit: usize) -> std::io::Result<Self> {
        let bad = |m: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {m}", path.display()),
            )
        };
        let state: Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let rv = state["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("no resourceVersion"))?;
        let mut store = Self::new(history_limit);
        for entry in state["objects"]
            .as_array()
            .ok_or_else(|| bad("no objects"))?
        {
            let resource = entry["resource"]
                .as_str()
                .ok_or_else(|| bad("an object without its resource"))?;
            let object = entry["object"].clone();
            store
                .objects
                .entry(resource.to_owned())
                .or_default()
                .insert(key_of(&object), Arc::new(object));
        }
        // One step past the saved counter: nothing handed out before the restart is resumable.
        store.rv = rv + 1;
        store.oldest_valid = store.rv;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}})
    }

    #[test]
    fn history_is_a_bounded_window() {
        let mut store = Store::new(2);
        store.put("/configmaps", cm("a"));
        store.put("/configmaps", cm("b"));
        let start = store.rv();
        store.put("/configmaps", cm("a"));
        store.delete("/configmaps", "ns", "b");
        let kinds: Vec<_> = store
            .changes_after(start)
            .expect("kept")
            .map(|c| (c.rv, c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (start + 1, ChangeKind::Modified),
                (start + 2, ChangeKind::Deleted)
            ]
        );
        assert!(
            store.changes_after(start - 1).is_none(),
            "older than the window"
        );
        store.expire();
        assert!(store.changes_after(start + 2).is_none());
        assert_eq!(store.changes_after(store.rv()).expect("current").count(), 0);
    }

    #[test]
    fn state_survives_a_restart_with_a_monotonic_counter() {
        let dir = std::env::temp_dir().join(format!("egret-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("state.json");
        let mut store = Store::new(10);
        store.put("/configmaps", cm("a"));
        store.save(&path).expect("saves");
        let loaded = Store::load(&path, 10).expect("loads");
        assert!(loaded.rv() > store.rv());
        assert!(loaded.changes_after(store.rv()).is_none());
        assert_eq!(
            loaded.get("/configmaps", "ns", "a").expect("kept")["metadata"]["resourceVersion"],
            "2"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
