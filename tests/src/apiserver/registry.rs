//! Which resources the server serves: the built-in types, and the custom ones derived from
//! the stored CustomResourceDefinitions; and the discovery documents that describe them
//! (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The verbs of a collection resource.
const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A printer column: what `kubectl get` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header (`Egress IP`; kubectl upper-cases it).
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub kind: String,
    /// OpenAPI format (`name` for the name column), or empty.
    pub format: String,
    /// Description.
    pub description: String,
    /// 0: always shown; more: only with `-o wide`.
    pub priority: i64,
    /// The JSONPath of the value (`.spec.egressSourceIP`).
    pub json_path: String,
}

/// One resource the server serves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    /// Plural (the URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl's short names.
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether `<name>/status` is served.
    pub status_subresource: bool,
    /// Whether the main resource ignores `.status` (custom resources with the subresource).
    pub status_only_via_subresource: bool,
    /// Custom resource: generation tracking and schema checks.
    pub custom: bool,
    /// Printer columns after NAME.
    pub columns: Vec<Column>,
    /// Per version: the `openAPIV3Schema`.
    pub schemas: BTreeMap<String, Value>,
    /// Field selector paths beyond `metadata.name` and `metadata.namespace`.
    pub fields: Vec<String>,
}

impl ResourceType {
    /// The key objects are stored under: `group/plural`.
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `pods` or `egressgateways.egret.dev`, as messages name resources.
    #[must_use]
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `EgressGateway.egret.dev`, as validation messages name kinds.
    #[must_use]
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `v1` or `egret.dev/v1alpha1`.
    #[must_use]
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether a field selector may name `path`.
    #[must_use]
    pub fn selectable(&self, path: &str) -> bool {
        matches!(path, "metadata.name" | "metadata.namespace")
            || self.fields.iter().any(|f| f == path)
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": VERBS, "shortNames": self.short_names,
            "categories": self.categories,
        })];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural), "singularName": "",
                "namespaced": self.namespaced, "kind": self.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

fn age() -> Column {
    Column {
        name: "Age".into(),
        kind: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }
}

fn column(name: &str, path: &str) -> Column {
    Column {
        name: name.into(),
        kind: "string".into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    columns: Vec<Column>,
    fields: &[&str],
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![version.into()],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
        categories: if matches!(plural, "pods") {
            vec!["all".into()]
        } else {
            Vec::new()
        },
        status_subresource: status,
        status_only_via_subresource: false,
        custom: group == "apiextensions.k8s.io",
        columns,
        schemas: BTreeMap::new(),
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The built-in resources: core namespaces, pods, configmaps, events, nodes; events.k8s.io
/// events; coordination.k8s.io leases; apiextensions.k8s.io customresourcedefinitions.
///
/// Built-in objects keep `.status` on main-resource writes (unlike a real cluster, where a
/// pod's status is the kubelet's): lab setups can `kubectl apply` a pod with its `podIPs`.
#[must_use]
pub fn builtins() -> Vec<ResourceType> {
    let pod_fields = [
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    let core_event_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];
    let event_fields = [
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "reason",
        "reportingController",
        "type",
    ];
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            vec![column("Status", ".status.phase"), age()],
            &["status.phase"],
        ),
        builtin(
            "",
            "v1",
            "pods",
            "Pod",
            true,
            &["po"],
            true,
            vec![
                column("Status", ".status.phase"),
                column("IP", ".status.podIP"),
                column("Node", ".spec.nodeName"),
                age(),
            ],
            &pod_fields,
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            vec![age()],
            &[],
        ),
        builtin(
            "",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            vec![
                column("Type", ".type"),
                column("Reason", ".reason"),
                column("Object", ".involvedObject.name"),
                column("Message", ".message"),
                age(),
            ],
            &core_event_fields,
        ),
        builtin(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            &["no"],
            true,
            vec![age()],
            &["spec.unschedulable"],
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            vec![
                column("Type", ".type"),
                column("Reason", ".reason"),
                column("Object", ".regarding.name"),
                column("Note", ".note"),
                age(),
            ],
            &event_fields,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            vec![column("Holder", ".spec.holderIdentity"), age()],
            &[],
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            vec![Column {
                name: "Created At".into(),
                ..age()
            }],
            &[],
        ),
    ]
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The resource a CRD object defines.
///
/// # Errors
///
/// What is missing or inconsistent, with the field path (for a 422).
pub fn from_crd(crd: &Value) -> Result<ResourceType, (String, String)> {
    let text = |path: &str| {
        crd.pointer(path)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let need = |path: &str, field: &str| {
        text(path)
            .map(str::to_owned)
            .ok_or_else(|| (field.to_owned(), "Required value".to_owned()))
    };
    let group = need("/spec/group", "spec.group")?;
    let plural = need("/spec/names/plural", "spec.names.plural")?;
    let kind = need("/spec/names/kind", "spec.names.kind")?;
    let name = text("/metadata/name").unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match text("/spec/scope") {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err((
                "spec.scope".into(),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
        }
    };
    let versions: Vec<&Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if versions.is_empty() {
        return Err(("spec.versions".into(), "Required value".into()));
    }
    let served: Vec<&Value> = versions
        .iter()
        .copied()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .collect();
    let mut ordered = served.clone();
    // The storage version first: it is the preferred one here.
    ordered.sort_by_key(|v| v.get("storage").and_then(Value::as_bool) != Some(true));
    let first = ordered.first().copied().unwrap_or(versions[0]);
    let columns_of = |v: &Value| -> Vec<Column> {
        let cols: Vec<Column> = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let t = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Column {
                    name: t("name"),
                    kind: t("type"),
                    format: t("format"),
                    description: t("description"),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    json_path: t("jsonPath"),
                }
            })
            .collect();
        if cols.is_empty() { vec![age()] } else { cols }
    };
    let status = first.pointer("/subresources/status").is_some();
    Ok(ResourceType {
        singular: text("/spec/names/singular").map_or_else(|| kind.to_lowercase(), str::to_owned),
        list_kind: text("/spec/names/listKind")
            .map_or_else(|| format!("{kind}List"), str::to_owned),
        short_names: strings(crd.pointer("/spec/names/shortNames")),
        categories: strings(crd.pointer("/spec/names/categories")),
        versions: ordered
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect(),
        schemas: served
            .iter()
            .filter_map(|v| {
                Some((
                    v.get("name")?.as_str()?.to_owned(),
                    v.pointer("/schema/openAPIV3Schema")?.clone(),
                ))
            })
            .collect(),
        columns: columns_of(first),
        status_subresource: status,
        status_only_via_subresource: status,
        custom: true,
        fields: first
            .get("selectableFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.get("jsonPath")?.as_str())
            .map(|p| p.trim_start_matches('.').to_owned())
            .collect(),
        group,
        plural,
        kind,
        namespaced,
    })
}

/// The served resources.
///
/// OpenAPI: kubectl's default `--validate=strict` asks `/openapi/v3` whether each kind's
/// PATCH operation takes the `fieldValidation` parameter, and then leaves validation to the
/// server; so the documents here state exactly that (operations with their
/// `x-kubernetes-group-version-kind`, no schemas). `/openapi/v2` is not served.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        Self { types: builtins() }
    }
}

impl Registry {
    /// The built-ins plus the resources of these CRD objects (invalid ones are skipped).
    #[must_use]
    pub fn with_crds<'a>(crds: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut types = builtins();
        types.extend(crds.into_iter().filter_map(|c| from_crd(c).ok()));
        Self { types }
    }

    /// The resource served at `group/version/plural`.
    #[must_use]
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| {
            t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
        })
    }

    /// The resource stored under an id (`group/plural`).
    #[must_use]
    pub fn by_id(&self, id: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.id() == id)
    }

    /// `/openapi/v3`: one entry per group-version.
    #[must_use]
    pub fn openapi_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        paths.insert(
            "api/v1".into(),
            json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=1"}),
        );
        for (group, versions) in self.groups() {
            for v in versions {
                paths.insert(
                    format!("apis/{group}/{v}"),
                    json!({"serverRelativeURL": format!("/openapi/v3/apis/{group}/{v}?hash=1")}),
                );
            }
        }
        json!({"paths": paths})
    }

    /// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
    #[must_use]
    pub fn openapi_group_version(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        for t in self
            .types
            .iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        {
            let prefix = if group.is_empty() {
                "/api/v1".to_owned()
            } else {
                format!("/apis/{group}/{version}")
            };
            let scope = if t.namespaced {
                "/namespaces/{namespace}"
            } else {
                ""
            };
            let gvk = json!({"group": group, "version": version, "kind": t.kind});
            let params = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}, {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}, {"name": "dryRun", "in": "query", "schema": {"type": "string"}}]);
            let op = json!({"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {}});
            paths.insert(
                format!("{prefix}{scope}/{}/{{name}}", t.plural),
                json!({"patch": op, "put": op}),
            );
            paths.insert(format!("{prefix}{scope}/{}", t.plural), json!({"post": op}));
        }
        (!paths.is_empty()).then(|| json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths, "components": {"schemas": {}}}))
    }

    /// `/api`.
    #[must_use]
    pub fn core_versions(&self, server: &str) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
    }

    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let at = out
                .iter()
                .position(|(g, _)| *g == t.group)
                .unwrap_or_else(|| {
                    out.push((t.group.clone(), Vec::new()));
                    out.len() - 1
                });
            for v in &t.versions {
                if !out[at].1.contains(v) {
                    out[at].1.push(v.clone());
                }
            }
        }
        out
    }

    fn group_json(group: &str, versions: &[String]) -> Value {
        let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
        json!({"name": group, "versions": versions.iter().map(gv).collect::<Vec<_>>(), "preferredVersion": versions.first().map(gv)})
    }

    /// `/apis`.
    #[must_use]
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| Self::group_json(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>`.
    #[must_use]
    pub fn group(&self, group: &str) -> Option<Value> {
        let (g, vs) = self.groups().into_iter().find(|(g, _)| g == group)?;
        let mut doc = Self::group_json(&g, &vs);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    #[must_use]
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let types: Vec<&ResourceType> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
            .collect();
        if types.is_empty() {
            return None;
        }
        let resources: Vec<Value> = types.iter().flat_map(|t| t.discovery_entries()).collect();
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "egressnatpolicies.egret.dev"},
            "spec": {"group": "egret.dev", "scope": "Cluster",
                "names": {"plural": "egressnatpolicies", "singular": "egressnatpolicy", "kind": "EgressNATPolicy", "shortNames": ["enp"], "categories": ["egret"]},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    "additionalPrinterColumns": [{"name": "Egress IP", "type": "string", "jsonPath": ".spec.egressSourceIP"}]}]}})
    }

    #[test]
    fn a_crd_becomes_a_served_resource_with_discovery() {
        let registry = Registry::with_crds([&crd()]);
        let t = registry
            .find("egret.dev", "v1alpha1", "egressnatpolicies")
            .expect("served");
        assert!(!t.namespaced && t.status_only_via_subresource && t.custom);
        assert_eq!(t.short_names, ["enp"]);
        assert_eq!(t.columns[0].json_path, ".spec.egressSourceIP");
        let list = registry
            .resource_list("egret.dev", "v1alpha1")
            .expect("listed");
        assert_eq!(list["resources"][1]["name"], "egressnatpolicies/status");
        let groups = registry.group_list();
        assert!(
            groups["groups"]
                .as_array()
                .expect("list")
                .iter()
                .any(|g| g["preferredVersion"]["groupVersion"] == "egret.dev/v1alpha1")
        );
    }

    #[test]
    fn a_crd_named_wrongly_is_refused() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("policies.egret.dev");
        assert_eq!(from_crd(&bad).expect_err("refused").0, "metadata.name");
    }
}
