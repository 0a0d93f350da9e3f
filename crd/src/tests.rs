//! The committed manifests against the types, and the schema's rules (offline, with kube's
//! CEL evaluator) against objects in both forms.

use std::path::PathBuf;

use kube::core::cel::Validator;
use serde_json::{Value, json};

use super::*;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/kubernetes/crds.yaml")
}

#[test]
fn the_committed_crds_are_generated_from_the_types() {
    let generated = manifests().expect("the CRDs serialize");
    let path = committed_path();
    if std::env::var_os("EGRET_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing the CRDs");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} drifted from crd/src/lib.rs; regenerate it with \
         `EGRET_BLESS=1 cargo test -p egret-crd` and commit it",
        path.display()
    );
}

/// The committed YAML documents, parsed.
fn committed() -> Vec<Value> {
    let text = std::fs::read_to_string(committed_path()).expect("crds.yaml is committed");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("each document is YAML"))
        .collect()
}

/// The openAPIV3Schema of the committed CRD for `kind`.
fn schema(kind: &str) -> Value {
    let crd = committed()
        .into_iter()
        .find(|crd| crd["spec"]["names"]["kind"] == kind)
        .expect("the kind is in crds.yaml");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The messages of the CEL rules `object` breaks.
fn broken_rules(kind: &str, object: &Value) -> Vec<String> {
    Validator::new()
        .validate(&schema(kind), object, None)
        .err()
        .map(|errors| errors.into_iter().map(|e| e.message).collect())
        .unwrap_or_default()
}

fn policy(spec: Value) -> Value {
    json!({
        "apiVersion": "egret.dev/v1alpha1",
        "kind": "EgressNATPolicy",
        "metadata": {"name": "egress"},
        "spec": spec,
    })
}

/// Seed 004's example, with only the apiVersion changed.
fn seed_policy() -> Value {
    policy(json!({
        "egress": [
            {"namespaceSelector": {"matchLabels": {"user": "alice"}},
             "podSelector": {"matchLabels": {"role": "frontend"}}},
            {"namespaceSelector": {"matchLabels": {"user": "paul"}},
             "podSelector": {"matchLabels": {"role": "frontend"}}},
        ],
        "destinationCIDRs": ["8.8.8.0/24"],
        "egressSourceIP": "192.168.1.100",
    }))
}

#[test]
fn the_seeds_policy_deserializes_and_keeps_the_rules() {
    let policy: EgressNATPolicy = serde_json::from_value(seed_policy()).expect("the seed parses");
    let rules = policy.spec.egress.as_deref().expect("egress rules");
    assert_eq!(rules.len(), 2);
    assert_eq!(
        policy.spec.egress_source_ip.as_deref(),
        Some("192.168.1.100")
    );
    assert_eq!(policy.spec.action, None);
    assert!(broken_rules("EgressNATPolicy", &seed_policy()).is_empty());
    // And it serializes back to the same fields.
    let back = serde_json::to_value(&policy).expect("serializes");
    assert_eq!(back["spec"], seed_policy()["spec"]);
}

#[test]
fn a_nosnat_policy_holds_destinations_only() {
    let nosnat = policy(json!({
        "action": "NoSNAT",
        "destinations": [{"cidr": "10.0.0.0/8"}, {"cidr": "172.16.0.0/12"}],
    }));
    assert!(broken_rules("EgressNATPolicy", &nosnat).is_empty());
    let parsed: EgressNATPolicy = serde_json::from_value(nosnat).expect("parses");
    assert_eq!(parsed.spec.action, Some(PolicyAction::NoSNAT));

    let mixed = policy(json!({
        "action": "NoSNAT",
        "destinations": [{"cidr": "10.0.0.0/8"}],
        "egressSourceIP": "192.168.1.100",
    }));
    assert_eq!(
        broken_rules("EgressNATPolicy", &mixed).len(),
        1,
        "{:?}",
        broken_rules("EgressNATPolicy", &mixed)
    );
    assert!(broken_rules("EgressNATPolicy", &mixed)[0].contains("destinations only"));
}

#[test]
fn a_gateway_policy_needs_its_three_fields_and_no_destinations() {
    for missing in ["egress", "destinationCIDRs", "egressSourceIP"] {
        let mut object = seed_policy();
        object["spec"]
            .as_object_mut()
            .expect("spec")
            .remove(missing);
        let broken = broken_rules("EgressNATPolicy", &object);
        assert!(
            broken.len() == 1 && broken[0].contains("a gateway policy needs"),
            "without {missing}: {broken:?}"
        );
    }
    let mut both = seed_policy();
    both["spec"]["destinations"] = json!([{"cidr": "10.0.0.0/8"}]);
    assert_eq!(broken_rules("EgressNATPolicy", &both).len(), 1);
}

#[test]
fn the_schema_holds_formats_and_required_fields() {
    let policy = schema("EgressNATPolicy");
    let spec = &policy["properties"]["spec"]["properties"];
    assert_eq!(spec["egressSourceIP"]["pattern"], IPV4);
    assert_eq!(spec["destinationCIDRs"]["items"]["pattern"], CIDR);
    assert_eq!(spec["destinationCIDRs"]["minItems"], 1);
    assert_eq!(spec["egress"]["minItems"], 1);
    assert_eq!(spec["action"]["enum"], json!(["NoSNAT"]));
    assert_eq!(
        spec["destinations"]["items"]["required"],
        json!(["cidr"]),
        "a destination needs its cidr"
    );
    let status = &policy["properties"]["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );

    let gateway = schema("EgressGateway");
    assert_eq!(gateway["required"], json!(["spec"]));
    let ips = &gateway["properties"]["spec"]["properties"]["floatingIPs"];
    assert_eq!(ips["items"]["pattern"], IPV4);
    assert_eq!(
        gateway["properties"]["spec"]["required"],
        json!(["floatingIPs"])
    );
    let nodes = &gateway["properties"]["status"]["properties"]["nodes"];
    assert_eq!(nodes["additionalProperties"]["enum"], json!(["Up", "Down"]));
}

#[test]
fn the_patterns_take_addresses_and_prefixes_and_refuse_the_rest() {
    // The same regexes the apiserver runs (RE2 and Rust's regex agree on these).
    let matches = |pattern: &str, text: &str| {
        Validator::new()
            .validate(
                &json!({"type": "object", "x-kubernetes-validations": [
                    {"rule": format!("self.v.matches('{}')", pattern.replace('\\', "\\\\"))}
                ], "properties": {"v": {"type": "string"}}}),
                &json!({"v": text}),
                None,
            )
            .is_ok()
    };
    for ok in ["192.168.1.100", "0.0.0.0"] {
        assert!(matches(IPV4, ok), "{ok}");
    }
    for bad in ["192.168.1", "192.168.1.100/32", "a.b.c.d", " 10.0.0.1"] {
        assert!(!matches(IPV4, bad), "{bad}");
    }
    for ok in ["8.8.8.0/24", "0.0.0.0/0", "10.0.0.1/32"] {
        assert!(matches(CIDR, ok), "{ok}");
    }
    for bad in ["8.8.8.0", "8.8.8.0/33", "8.8.8.0/-1", "::/0"] {
        assert!(!matches(CIDR, bad), "{bad}");
    }
}

#[test]
fn the_printer_columns_and_names_are_what_kubectl_shows() {
    let columns = |kind: &str| -> Vec<(String, String)> {
        let crd = committed()
            .into_iter()
            .find(|crd| crd["spec"]["names"]["kind"] == kind)
            .expect("kind");
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let names: Vec<String> = columns("EgressNATPolicy")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "EGRESS IP",
            "SELECTED",
            "ACCEPTED",
            "PROGRAMMED",
            "AGE",
            "ACTION"
        ]
    );
    let names: Vec<String> = columns("EgressGateway")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["FLOATING IPS", "HOLDERS", "AGE"]);
    for crd in committed() {
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["versions"][0]["name"], VERSION);
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
    let short: Vec<Value> = committed()
        .iter()
        .map(|crd| crd["spec"]["names"]["shortNames"].clone())
        .collect();
    assert_eq!(short, [json!(["egw"]), json!(["enp"])]);
}

#[test]
fn gateway_status_keys_are_the_seeds() {
    let status: EgressGatewayStatus = serde_json::from_value(json!({
        "nodes": {"gw1": "Up", "gw2": "Down"},
        "floatingIPs": {"192.168.1.100": "gw1"},
    }))
    .expect("the seed's status shape parses");
    assert_eq!(status.nodes["gw2"], GatewayState::Down);
    assert_eq!(status.floating_ips["192.168.1.100"], "gw1");
}

#[test]
fn the_packaged_examples_parse_and_keep_the_schemas_rules() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/kubernetes/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("the examples directory") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let object = Value::deserialize(doc).expect("YAML");
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "EgressNATPolicy" => {
                    serde_json::from_value::<EgressNATPolicy>(object.clone())
                        .expect("an EgressNATPolicy");
                }
                "EgressGateway" => {
                    serde_json::from_value::<EgressGateway>(object.clone())
                        .expect("an EgressGateway");
                }
                _ => continue,
            }
            let broken = broken_rules(&kind, &object);
            assert!(broken.is_empty(), "{}: {broken:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} examples");
}
