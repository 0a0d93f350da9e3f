//! The API's verbs on the store: create, get, list, replace, patch (merge, strategic, JSON,
//! server-side apply), delete — with what the real API server does around each write:
//! names and namespaces checked, uid / creationTimestamp / generation kept, `.status` only
//! through the status subresource where the type has one, custom objects checked against
//! their schema, managed fields recorded, no-op writes left without a new resourceVersion,
//! optimistic concurrency on resourceVersion, and cascades (a namespace's objects go with
//! it, a CRD's objects with the CRD, and a CRD's resource is served once it is stored).
//!
//! No I/O and no clock: `now` comes in as Unix seconds.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::Arc,
};

use serde_json::{Map, Value, json};

use super::{
    error::ApiError,
    fields::{self, Writer},
    patch,
    registry::{self, Registry, ResourceType},
    schema,
    selectors::{FieldSelector, LabelSelector},
    store::{Key, Store},
    time,
};

/// The addressed resource, as parsed from a path.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The resource type.
    pub resource: &'a ResourceType,
    /// The version in the path.
    pub version: &'a str,
    /// The namespace in the path (`None` for cluster-scoped or all namespaces).
    pub namespace: Option<&'a str>,
    /// The object's name, for item requests.
    pub name: Option<&'a str>,
    /// `status` for the status subresource.
    pub subresource: Option<&'a str>,
}

impl Target<'_> {
    fn api_version(&self) -> String {
        self.resource.api_version(self.version)
    }

    fn ns(&self) -> &str {
        if self.resource.namespaced {
            self.namespace.unwrap_or_default()
        } else {
            ""
        }
    }

    fn status(&self) -> bool {
        self.subresource == Some("status")
    }
}

/// Options every write takes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager` (or one derived from the user agent).
    pub field_manager: String,
    /// Whether `fieldManager` was given explicitly (apply requires it).
    pub explicit_manager: bool,
    /// `dryRun=All`: check, do not store.
    pub dry_run: bool,
    /// `force=true` (apply).
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields are refused rather than dropped.
    pub strict: bool,
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml`.
    Apply,
}

/// A list's result.
#[derive(Debug)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion.
    pub rv: u64,
    /// The continue token, when more remain.
    pub next: Option<String>,
    /// How many more remain.
    pub remaining: usize,
}

/// The selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses both, checking the field paths against what the resource supports.
    ///
    /// # Errors
    ///
    /// 400 for a selector that does not parse or names an unsupported field.
    pub fn parse(
        resource: &ResourceType,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Self, ApiError> {
        let labels =
            LabelSelector::parse(labels.unwrap_or_default()).map_err(ApiError::bad_request)?;
        let fields =
            FieldSelector::parse(fields.unwrap_or_default()).map_err(ApiError::bad_request)?;
        if let Some(bad) = fields.paths().find(|p| !resource.selectable(p)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {bad}"
            )));
        }
        Ok(Self { labels, fields })
    }

    /// Whether an object matches both.
    #[must_use]
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// The cluster state: objects, history, and the resources served.
#[derive(Debug)]
pub struct Cluster {
    /// The objects and their history.
    pub store: Store,
    /// The resources served (built-ins plus stored CRDs).
    pub registry: Registry,
    uids: RandomState,
    uid_count: u64,
}

const CRDS: &str = "apiextensions.k8s.io/customresourcedefinitions";
const NAMESPACES: &str = "/namespaces";

impl Cluster {
    /// A cluster over a store (fresh or loaded); a fresh one gets the namespaces every
    /// cluster has (`default`, `kube-system`, `kube-public`, `kube-node-lease`).
    #[must_use]
    pub fn new(store: Store, now: i64) -> Self {
        let mut cluster = Self {
            store,
            registry: Registry::default(),
            uids: RandomState::new(),
            uid_count: 0,
        };
        cluster.refresh_registry();
        if cluster.store.list(NAMESPACES, None, None).next().is_none() {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let object =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let namespaces = Self::builtin_target(&cluster.registry, "namespaces")
                    .resource
                    .clone();
                let target = Target {
                    resource: &namespaces,
                    version: "v1",
                    namespace: None,
                    name: None,
                    subresource: None,
                };
                let _ = cluster.create(
                    &target,
                    object,
                    &WriteOptions {
                        field_manager: "egret-test-apiserver".into(),
                        ..WriteOptions::default()
                    },
                    now,
                );
            }
        }
        cluster
    }

    fn builtin_target<'r>(registry: &'r Registry, plural: &str) -> Target<'r> {
        let resource = registry
            .find("", "v1", plural)
            .unwrap_or_else(|| unreachable!("{plural} is built in"));
        Target {
            resource,
            version: "v1",
            namespace: None,
            name: None,
            subresource: None,
        }
    }

    fn refresh_registry(&mut self) {
        let crds: Vec<Arc<Value>> = self.store.list(CRDS, None, None).cloned().collect();
        self.registry = Registry::with_crds(crds.iter().map(|c| &**c));
    }

    fn uid(&mut self) -> String {
        self.uid_count += 1;
        let mut h = self.uids.build_hasher();
        h.write_u64(self.uid_count);
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        let (a, b) = (a.to_be_bytes(), b.to_be_bytes());
        let hex = |s: &[u8]| s.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // A version-4 UUID layout.
        format!(
            "{}-{}-4{}-{:x}{}-{}",
            hex(&a[..4]),
            hex(&a[4..6]),
            &hex(&a[6..8])[1..],
            8 | (b[0] & 3),
            &hex(&b[..2])[1..],
            hex(&b[2..8])
        )
    }

    /// One object.
    ///
    /// # Errors
    ///
    /// 404.
    pub fn get(&self, t: &Target<'_>) -> Result<Arc<Value>, ApiError> {
        let name = t.name.unwrap_or_default();
        self.store
            .get(&t.resource.id(), t.ns(), name)
            .ok_or_else(|| ApiError::not_found(&t.resource.qualified(), name))
    }

    /// A page of a list.
    ///
    /// # Errors
    ///
    /// 410 for a continue token older than the history, 400 for one that does not parse.
    pub fn list(
        &self,
        t: &Target<'_>,
        selectors: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let (rv, after) = match continue_token.filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, key) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                if rv < self.store.oldest_valid() {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(key))
            }
            None => (self.store.rv(), None),
        };
        let namespace = if t.resource.namespaced {
            t.namespace
        } else {
            None
        };
        let mut matching = self
            .store
            .list(&t.resource.id(), namespace, after.as_ref())
            .filter(|o| selectors.matches(o));
        let items: Vec<Arc<Value>> = matching
            .by_ref()
            .take(limit.filter(|l| *l > 0).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        let remaining = matching.count();
        let next = (remaining > 0)
            .then(|| {
                items
                    .last()
                    .map(|o| encode_continue(rv, &super::store::key_of(o)))
            })
            .flatten();
        Ok(ListPage {
            items,
            rv,
            next,
            remaining,
        })
    }

    /// Creates an object (`POST` to a collection).
    ///
    /// # Errors
    ///
    /// 400, 404 (namespace), 409 (exists), 422 (invalid).
    pub fn create(
        &mut self,
        t: &Target<'_>,
        body: Value,
        opts: &WriteOptions,
        now: i64,
    ) -> Result<Value, ApiError> {
        let mut object = body;
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let meta = object
            .as_object_mut()
            .and_then(|o| {
                o.entry("metadata")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
            })
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match meta
                .get("generateName")
                .and_then(Value::as_str)
                .map(str::to_owned)
            {
                Some(prefix) => {
                    let suffix: String = self
                        .uid()
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .take(5)
                        .collect();
                    meta_name(&mut object, format!("{prefix}{suffix}"));
                }
                None => {
                    return Err(ApiError::invalid(
                        &t.resource.qualified_kind(),
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                            "FieldValueRequired",
                        )],
                    ));
                }
            }
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let target = Target {
            name: Some(&name),
            ..*t
        };
        if self
            .store
            .get(&t.resource.id(), target.ns(), &name)
            .is_some()
        {
            return Err(ApiError::already_exists(&t.resource.qualified(), &name));
        }
        self.commit(&target, None, object, opts, now, false)
    }

    /// Replaces an object (`PUT`), on the main resource or its status.
    ///
    /// # Errors
    ///
    /// 400, 404, 409 (stale resourceVersion), 422.
    pub fn replace(
        &mut self,
        t: &Target<'_>,
        body: Value,
        opts: &WriteOptions,
        now: i64,
    ) -> Result<Value, ApiError> {
        let old = self.get(t)?;
        if let Some(rv) = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            && Some(rv)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(
                &t.resource.qualified(),
                t.name.unwrap_or_default(),
            ));
        }
        if let Some(name) = body.pointer("/metadata/name").and_then(Value::as_str)
            && Some(name) != t.name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                t.name.unwrap_or_default()
            )));
        }
        self.commit(t, Some(old), body, opts, now, false)
    }

    /// Patches an object; server-side apply may create it.
    ///
    /// # Errors
    ///
    /// 400, 404, 409 (stale resourceVersion, apply conflicts), 422.
    pub fn patch(
        &mut self,
        t: &Target<'_>,
        kind: PatchKind,
        body: &Value,
        opts: &WriteOptions,
        now: i64,
    ) -> Result<Value, ApiError> {
        let old = self
            .store
            .get(&t.resource.id(), t.ns(), t.name.unwrap_or_default());
        if kind == PatchKind::Apply {
            return self.apply(t, old, body, opts, now);
        }
        let old = old.ok_or_else(|| {
            ApiError::not_found(&t.resource.qualified(), t.name.unwrap_or_default())
        })?;
        let mut new = (*old).clone();
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut new, body),
            PatchKind::Strategic => patch::strategic_merge_patch(&mut new, body),
            PatchKind::Json => patch::json_patch(&mut new, body).map_err(|e| {
                ApiError::invalid(
                    &t.resource.qualified_kind(),
                    t.name.unwrap_or_default(),
                    &[(String::new(), e, "FieldValueInvalid")],
                )
            })?,
            PatchKind::Apply => unreachable!("handled above"),
        }
        if new.pointer("/metadata/resourceVersion") != old.pointer("/metadata/resourceVersion")
            && new
                .pointer("/metadata/resourceVersion")
                .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::conflict(
                &t.resource.qualified(),
                t.name.unwrap_or_default(),
            ));
        }
        self.commit(t, Some(old), new, opts, now, false)
    }

    fn apply(
        &mut self,
        t: &Target<'_>,
        old: Option<Arc<Value>>,
        body: &Value,
        opts: &WriteOptions,
        now: i64,
    ) -> Result<Value, ApiError> {
        let name = t.name.unwrap_or_default();
        if !opts.explicit_manager {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io",
                "",
                &[(
                    "fieldManager".into(),
                    "Required value: is required for apply patch".into(),
                    "FieldValueRequired",
                )],
            ));
        }
        let Value::Object(config) = body else {
            return Err(ApiError::bad_request(
                "the apply configuration must be an object",
            ));
        };
        for key in ["apiVersion", "kind"] {
            if config
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "invalid object: {key} must be set in an apply configuration"
                )));
            }
        }
        if config.get("kind").and_then(Value::as_str) != Some(&t.resource.kind) {
            return Err(ApiError::bad_request(format!(
                "the kind of the apply configuration does not match {}",
                t.resource.kind
            )));
        }
        if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(rv), Some(old)) = (
            body.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str),
            &old,
        ) && Some(rv)
            != old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&t.resource.qualified(), name));
        }
        // What this endpoint may change.
        let mut scoped = Map::new();
        for (k, v) in config {
            let keep = match (t.status(), k.as_str()) {
                (_, "apiVersion" | "kind") => false,
                (true, key) => key == "status" || key == "metadata",
                (false, "status") => !t.resource.status_only_via_subresource,
                (false, _) => true,
            };
            if keep {
                scoped.insert(k.clone(), v.clone());
            }
        }
        if t.status()
            && let Some(Value::Object(meta)) = scoped.get_mut("metadata")
        {
            meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
        }
        if let Some(Value::Object(meta)) = scoped.get_mut("metadata") {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "name"
                        | "namespace"
                        | "labels"
                        | "annotations"
                        | "ownerReferences"
                        | "finalizers"
                )
            });
        }
        let api_version = t.api_version();
        let stamp = time::format_rfc3339(now);
        let writer = Writer {
            manager: &opts.field_manager,
            api_version: &api_version,
            subresource: t.subresource,
            time: &stamp,
        };
        let mut merged = fields::apply(old.as_deref(), &Value::Object(scoped), &writer, opts.force).map_err(|conflicts| {
            let text: Vec<String> = conflicts.iter().map(|c| format!("conflict with \"{}\": {}", c.manager, c.field)).collect();
            let causes: Vec<Value> = conflicts.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field})).collect();
            let message = if text.len() == 1 { format!("Apply failed with 1 conflict: {}", text[0]) } else { format!("Apply failed with {} conflicts: {}", text.len(), text.join("\n")) };
            ApiError::apply_conflict(message, Value::Array(causes))
        })?;
        merged["apiVersion"] = json!(api_version);
        merged["kind"] = json!(t.resource.kind);
        meta_name(&mut merged, name.to_owned());
        match old {
            Some(old) => self.commit(t, Some(old), merged, opts, now, true),
            None if t.status() => Err(ApiError::not_found(&t.resource.qualified(), name)),
            None => self.commit(t, None, merged, opts, now, true),
        }
    }

    /// The write path every verb ends in (see the module doc).
    fn commit(
        &mut self,
        t: &Target<'_>,
        old: Option<Arc<Value>>,
        mut new: Value,
        opts: &WriteOptions,
        now: i64,
        applied: bool,
    ) -> Result<Value, ApiError> {
        let r = t.resource;
        let name = t.name.unwrap_or_default().to_owned();
        let qualified_kind = r.qualified_kind();
        if !new.is_object() || !new.get("metadata").is_none_or(Value::is_object) {
            return Err(ApiError::bad_request(
                "the body must be an object with object metadata",
            ));
        }
        if let Some(kind) = new
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            && kind != r.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({})",
                r.kind
            )));
        }
        new["apiVersion"] = json!(t.api_version());
        new["kind"] = json!(r.kind);
        if r.namespaced {
            let ns = t.namespace.unwrap_or_default();
            match new.pointer("/metadata/namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => new["metadata"]["namespace"] = json!(ns),
            }
            if old.is_none() && self.store.get(NAMESPACES, "", ns).is_none() {
                return Err(ApiError::not_found("namespaces", ns));
            }
        } else if let Some(Value::Object(meta)) = new.get_mut("metadata") {
            meta.remove("namespace");
        }
        meta_name(&mut new, name.clone());

        // Status and the rest each change through their own endpoint.
        if t.status() {
            let status = new.get("status").cloned();
            let managed = new.pointer("/metadata/managedFields").cloned();
            let mut kept = old.as_deref().cloned().unwrap_or_default();
            if let (true, Some(m)) = (applied, managed) {
                kept["metadata"]["managedFields"] = m;
            }
            match status {
                Some(s) => kept["status"] = s,
                None => {
                    if let Some(o) = kept.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new = kept;
        } else if r.status_only_via_subresource {
            let Some(o) = new.as_object_mut() else {
                unreachable!("checked above")
            };
            match old.as_deref().and_then(|o| o.get("status")) {
                Some(s) => o.insert("status".to_owned(), s.clone()),
                None => o.remove("status"),
            };
        }

        // Server-owned metadata.
        {
            let Some(Value::Object(meta)) = new.get_mut("metadata") else {
                unreachable!("set above")
            };
            meta.remove("resourceVersion");
            meta.remove("selfLink");
            let managed = meta.remove("managedFields");
            for key in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
            ] {
                meta.remove(key);
            }
            if applied {
                if let Some(m) = managed {
                    meta.insert("managedFields".to_owned(), m);
                }
            } else if let Some(m) = old
                .as_deref()
                .and_then(|o| o.pointer("/metadata/managedFields"))
            {
                meta.insert("managedFields".to_owned(), m.clone());
            }
        }
        let (uid, created) = match old.as_deref() {
            Some(o) => (
                o["metadata"]["uid"].clone(),
                o["metadata"]["creationTimestamp"].clone(),
            ),
            None => (json!(self.uid()), json!(time::format_rfc3339(now))),
        };
        new["metadata"]["uid"] = uid;
        new["metadata"]["creationTimestamp"] = created;
        if r.plural == "namespaces" && new.pointer("/status/phase").is_none() {
            new["status"] = json!({"phase": "Active"});
        }

        // Checks.
        if r.custom
            && r.group != "apiextensions.k8s.io"
            && let Some(s) = r.schemas.get(t.version)
        {
            let outcome = schema::check(&mut new, s);
            if !outcome.violations.is_empty() {
                let causes: Vec<(String, String, &str)> = outcome
                    .violations
                    .into_iter()
                    .map(|v| (v.field, v.message, v.reason))
                    .collect();
                return Err(ApiError::invalid(&qualified_kind, &name, &causes));
            }
            if opts.strict && !outcome.unknown.is_empty() {
                let text: Vec<String> = outcome
                    .unknown
                    .iter()
                    .map(|u| format!("unknown field \"{u}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{qualified_kind} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    t.version,
                    r.kind,
                    text.join(", ")
                )));
            }
        }
        if r.id() == CRDS {
            let defined = registry::from_crd(&new).map_err(|(field, message)| {
                ApiError::invalid(
                    &qualified_kind,
                    &name,
                    &[(field, message, "FieldValueInvalid")],
                )
            })?;
            if !t.status() {
                new["status"] = json!({
                    "acceptedNames": new["spec"]["names"].clone(),
                    "storedVersions": defined.versions,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time::format_rfc3339(now)},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time::format_rfc3339(now)},
                    ],
                });
            }
        }

        // Generation: spec changes only.
        if r.custom {
            let generation = match old.as_deref() {
                None => 1,
                Some(o) => {
                    let g = o
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    if without(o, &["metadata", "status"]) == without(&new, &["metadata", "status"])
                    {
                        g
                    } else {
                        g + 1
                    }
                }
            };
            new["metadata"]["generation"] = json!(generation);
        }

        if !applied {
            let api_version = t.api_version();
            let stamp = time::format_rfc3339(now);
            let writer = Writer {
                manager: &opts.field_manager,
                api_version: &api_version,
                subresource: t.subresource,
                time: &stamp,
            };
            fields::record_update(old.as_deref(), &mut new, &writer);
        }

        if let Some(o) = old.as_deref() {
            let mut same = new.clone();
            same["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
            if strip_times(&same) == strip_times(o) {
                return Ok(o.clone());
            }
        }
        if opts.dry_run {
            return Ok(new);
        }
        let stored = self.store.put(&r.id(), new);
        if r.id() == CRDS {
            self.refresh_registry();
        }
        Ok((*stored).clone())
    }

    /// Deletes an object; a namespace takes its objects with it, a CRD its custom objects.
    ///
    /// # Errors
    ///
    /// 404, 409 (failed preconditions).
    pub fn delete(
        &mut self,
        t: &Target<'_>,
        options: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let old = self.get(t)?;
        let name = t.name.unwrap_or_default();
        if let Some(pre) = options.and_then(|o| o.get("preconditions")) {
            for (key, path) in [
                ("resourceVersion", "/metadata/resourceVersion"),
                ("uid", "/metadata/uid"),
            ] {
                if let Some(want) = pre.get(key).and_then(Value::as_str)
                    && Some(want) != old.pointer(path).and_then(Value::as_str)
                {
                    return Err(ApiError::conflict(&t.resource.qualified(), name));
                }
            }
        }
        if dry_run {
            return Ok((*old).clone());
        }
        let deleted = self
            .store
            .delete(&t.resource.id(), t.ns(), name)
            .ok_or_else(|| ApiError::not_found(&t.resource.qualified(), name))?;
        if t.resource.id() == NAMESPACES {
            let namespaced: Vec<String> = self
                .store
                .all()
                .map(|(r, _)| r.clone())
                .filter(|r| self.registry.by_id(r).is_some_and(|t| t.namespaced))
                .collect();
            for resource in namespaced {
                let keys: Vec<Key> = self
                    .store
                    .list(&resource, Some(name), None)
                    .map(|o| super::store::key_of(o))
                    .collect();
                for (ns, n) in keys {
                    self.store.delete(&resource, &ns, &n);
                }
            }
        }
        if t.resource.id() == CRDS
            && let Ok(defined) = registry::from_crd(&deleted)
        {
            let keys: Vec<Key> = self
                .store
                .list(&defined.id(), None, None)
                .map(|o| super::store::key_of(o))
                .collect();
            for (ns, n) in keys {
                self.store.delete(&defined.id(), &ns, &n);
            }
            self.refresh_registry();
        }
        Ok((*deleted).clone())
    }

    /// Deletes every matching object of a collection; returns them.
    ///
    /// # Errors
    ///
    /// As [`Cluster::delete`].
    pub fn delete_collection(
        &mut self,
        t: &Target<'_>,
        selectors: &Selectors,
        dry_run: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let page = self.list(t, selectors, None, None)?;
        let mut out = Vec::new();
        for object in page.items {
            let (ns, name) = super::store::key_of(&object);
            let target = Target {
                namespace: Some(&ns),
                name: Some(&name),
                ..*t
            };
            out.push(self.delete(&target, None, dry_run)?);
        }
        Ok(out)
    }
}

fn meta_name(object: &mut Value, name: String) {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        meta.insert("name".to_owned(), Value::String(name));
    }
}

fn without(object: &Value, keys: &[&str]) -> Value {
    let mut copy = object.clone();
    if let Some(o) = copy.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
        o.remove("apiVersion");
    }
    copy
}

/// The object without managedFields' times (a write that changes nothing but them is no write).
fn strip_times(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(Value::Array(entries)) = copy.pointer_mut("/metadata/managedFields") {
        for e in entries {
            if let Some(o) = e.as_object_mut() {
                o.remove("time");
            }
        }
    }
    copy
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!([rv, key.0, key.1]).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, Key)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((
        v.get(0)?.as_u64()?,
        (
            v.get(1)?.as_str()?.to_owned(),
            v.get(2)?.as_str()?.to_owned(),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(manager: &str) -> WriteOptions {
        WriteOptions {
            field_manager: manager.into(),
            explicit_manager: true,
            ..WriteOptions::default()
        }
    }

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "egressgateways.egret.dev"},
            "spec": {"group": "egret.dev", "scope": "Cluster",
                "names": {"plural": "egressgateways", "singular": "egressgateway", "kind": "EgressGateway"},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"floatingIPs": {"type": "array", "items": {"type": "string"}}}},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}})
    }

    fn cluster_with_crd() -> Cluster {
        let mut c = Cluster::new(Store::new(100), 0);
        let crds = c
            .registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("built in")
            .clone();
        c.create(
            &Target {
                resource: &crds,
                version: "v1",
                namespace: None,
                name: None,
                subresource: None,
            },
            crd(),
            &opts("kubectl"),
            0,
        )
        .expect("creates the CRD");
        c
    }

    #[test]
    fn status_and_spec_change_through_their_own_endpoints() {
        let mut c = cluster_with_crd();
        let gw = c
            .registry
            .find("egret.dev", "v1alpha1", "egressgateways")
            .expect("served")
            .clone();
        let main = Target {
            resource: &gw,
            version: "v1alpha1",
            namespace: None,
            name: Some("default"),
            subresource: None,
        };
        let status = Target {
            subresource: Some("status"),
            ..main
        };
        let created = c.create(&main, json!({"metadata": {"name": "default"}, "spec": {"floatingIPs": ["192.0.2.1"]}, "status": {"nodes": {"x": "Up"}}}), &opts("kubectl"), 0).expect("creates");
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(
            created.get("status").is_none(),
            "status is ignored on create"
        );
        let s = c
            .patch(
                &status,
                PatchKind::Merge,
                &json!({"status": {"nodes": {"gw1": "Up"}}, "spec": {"floatingIPs": []}}),
                &opts("gw1"),
                1,
            )
            .expect("patches status");
        assert_eq!(s["status"]["nodes"]["gw1"], "Up");
        assert_eq!(s["spec"]["floatingIPs"], json!(["192.0.2.1"]));
        assert_eq!(s["metadata"]["generation"], 1);
        let m = c
            .patch(
                &main,
                PatchKind::Merge,
                &json!({"spec": {"floatingIPs": ["192.0.2.2"]}, "status": null}),
                &opts("kubectl"),
                2,
            )
            .expect("patches spec");
        assert_eq!(m["metadata"]["generation"], 2);
        assert_eq!(m["status"]["nodes"]["gw1"], "Up");
        // The same patch again changes nothing: no new resourceVersion.
        let again = c
            .patch(
                &main,
                PatchKind::Merge,
                &json!({"spec": {"floatingIPs": ["192.0.2.2"]}}),
                &opts("kubectl"),
                3,
            )
            .expect("no-op");
        assert_eq!(
            again["metadata"]["resourceVersion"],
            m["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn stale_writes_conflict_and_unknown_namespaces_are_refused() {
        let mut c = Cluster::new(Store::new(100), 0);
        let cms = c
            .registry
            .find("", "v1", "configmaps")
            .expect("built in")
            .clone();
        let t = Target {
            resource: &cms,
            version: "v1",
            namespace: Some("default"),
            name: Some("a"),
            subresource: None,
        };
        let a = c
            .create(
                &t,
                json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
                &opts("m"),
                0,
            )
            .expect("creates");
        let mut stale = a.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(
            c.replace(&t, stale, &opts("m"), 0).expect_err("stale").code,
            409
        );
        assert_eq!(
            c.create(&t, a.clone(), &opts("m"), 0)
                .expect_err("exists")
                .code,
            409
        );
        let elsewhere = Target {
            namespace: Some("nowhere"),
            ..t
        };
        assert_eq!(
            c.create(
                &elsewhere,
                json!({"metadata": {"name": "a"}}),
                &opts("m"),
                0
            )
            .expect_err("no namespace")
            .code,
            404
        );
        let ns = c
            .registry
            .find("", "v1", "namespaces")
            .expect("built in")
            .clone();
        c.delete(
            &Target {
                resource: &ns,
                version: "v1",
                namespace: None,
                name: Some("default"),
                subresource: None,
            },
            None,
            false,
        )
        .expect("deletes");
        assert_eq!(c.get(&t).expect_err("gone with its namespace").code, 404);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("ns".to_owned(), "a b".to_owned());
        assert_eq!(decode_continue(&encode_continue(7, &key)), Some((7, key)));
        assert_eq!(decode_continue("zz"), None);
    }
}
