//! The effective config printed back as TOML, for `egret-agent check`: every key with its
//! value, defaults included, and a comment where a value is decided at run time.
//!
//! The output parses back to the same [`Config`]: what is only a comment here (the uplink
//! of the default route) is also what its absence means.

use super::{Config, Mode};

use egret_config::effective::{Lines, quote};

pub(super) fn render(config: &Config) -> String {
    let mut out = Lines::default();
    out.line("# egret-agent effective configuration: defaults filled in.");

    let agent = &config.agent;
    out.section("[agent]");
    out.key("node_name", quote(&agent.node_name));
    out.key("mode", quote(agent.mode.as_str()));
    match &agent.interface {
        Some(interface) => out.key("interface", quote(interface)),
        None => out.line("# interface: the interface of the default route, resolved at run time"),
    }
    out.key(
        "pod_interfaces",
        array(agent.pod_interfaces.iter().map(|p| quote(p))),
    );
    out.key("pin_path", quote(&agent.pin_path.to_string_lossy()));
    out.key("state_dir", quote(&agent.state_dir.to_string_lossy()));
    out.key("fwmark", format!("{:#010x}", agent.fwmark));
    out.key("route_table", agent.route_table);
    out.key(
        "rule_priority",
        format!(
            "{}  # and {} for the second rule",
            agent.rule_priority,
            agent.rule_priority.saturating_add(1)
        ),
    );

    let tunnel = &config.tunnel;
    out.section("[tunnel]");
    out.key("port", tunnel.port);
    out.key("vni", tunnel.vni);
    out.key("device", quote(&tunnel.device));
    if tunnel.floating_ips.is_empty() {
        out.line("floating_ips = []  # egress_source_ip not checked");
    } else {
        out.key(
            "floating_ips",
            array(tunnel.floating_ips.iter().map(|ip| quote(&ip.to_string()))),
        );
    }

    let masquerade = &config.masquerade;
    out.section("[masquerade]");
    if masquerade.non_masquerade_cidrs.is_empty() {
        out.line("non_masquerade_cidrs = []  # every destination is masqueraded");
    } else {
        out.key(
            "non_masquerade_cidrs",
            array(
                masquerade
                    .non_masquerade_cidrs
                    .iter()
                    .map(|p| quote(&p.to_string())),
            ),
        );
    }
    out.key("masquerade_link_local", masquerade.masquerade_link_local);

    if config.agent.mode == Mode::Kubernetes {
        let kubernetes = &config.kubernetes;
        out.section("[kubernetes]");
        match &kubernetes.kubeconfig {
            Some(path) => out.key("kubeconfig", quote(&path.display().to_string())),
            None => out.line("# kubeconfig: none; the pod's service account, then $KUBECONFIG"),
        }
        out.key("namespace", quote(&kubernetes.namespace));
    }

    out.section("[api]");
    match config.api.listen {
        Some(listen) => out.key("listen", quote(&listen.to_string())),
        None => out.line("listen = \"\"  # no API: no /metrics, no /status"),
    }

    for policy in &config.policies {
        let prefixes =
            |list: &[crate::prefix::Prefix]| array(list.iter().map(|p| quote(&p.to_string())));
        out.section("[[policy]]");
        out.key("name", quote(&policy.name));
        out.key("sources", prefixes(&policy.sources));
        out.key("destination_cidrs", prefixes(&policy.destination_cidrs));
        out.key("excluded_cidrs", prefixes(&policy.excluded_cidrs));
        out.key(
            "egress_source_ip",
            quote(&policy.egress_source_ip.to_string()),
        );
    }
    if config.policies.is_empty() {
        out.line("");
        out.line(match config.agent.mode {
            Mode::Kubernetes => "# [[policy]]: none here; policies come from the cluster",
            Mode::Static => "# [[policy]]: none, so nothing is tunnelled",
        });
    }
    out.finish()
}

/// A TOML array on one line, or one element per line when that would be long.
fn array(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let one_line = format!("[{}]", items.join(", "));
    if one_line.len() <= 80 {
        return one_line;
    }
    let mut text = String::from("[\n");
    for item in items {
        text.push_str("    ");
        text.push_str(&item);
        text.push_str(",\n");
    }
    text.push(']');
    text
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Config, Mode};

    /// Every key written, nothing at its default, strings that need escaping.
    const FULL: &str = r#"
[agent]
node_name = "node\"one\"\\x"
mode = "static"
interface = "bond0.100"
pod_interfaces = ["veth*", "v?th", "tap*"]
pin_path = "/sys/fs/bpf/egret-test"
state_dir = "/var/run/egret test"
fwmark = 0x2
route_table = 4294967295
rule_priority = 1

[tunnel]
port = 65535
vni = 0
device = "egress.tun"
floating_ips = ["192.168.1.100", "192.168.1.101", "10.9.9.9"]

[masquerade]
non_masquerade_cidrs = []
masquerade_link_local = true

[api]
listen = "[::1]:9999"

[[policy]]
name = "a.b-c"
sources = ["10.10.1.0/28", "10.10.2.0/24"]
destination_cidrs = ["0.0.0.0/0"]
excluded_cidrs = ["10.0.0.0/8", "192.168.0.0/16"]
egress_source_ip = "192.168.1.100"

[[policy]]
name = "z"
sources = ["10.10.3.3/32"]
destination_cidrs = ["8.8.8.0/24"]
egress_source_ip = "10.9.9.9"
"#;

    fn round_trip(text: &str) -> (Config, String) {
        let config = accept(text).config;
        let printed = config.to_toml();
        let again = match Config::from_str(&printed, &host()) {
            Ok(checked) => checked.config,
            Err(error) => panic!(
                "effective config refused:\n{}\n---\n{printed}",
                error.located(std::path::Path::new("effective.toml"))
            ),
        };
        assert_eq!(again, config, "{printed}");
        (config, printed)
    }

    #[test]
    fn the_effective_config_parses_back_to_the_same_config() {
        let (config, printed) = round_trip(FULL);
        assert_eq!(config.agent.node_name, "node\"one\"\\x");
        assert_eq!(config.policies.len(), 2);
        assert!(printed.contains("fwmark = 0x00000002\n"), "{printed}");
        assert!(
            printed.contains("non_masquerade_cidrs = []  #"),
            "{printed}"
        );
        round_trip(STATIC);
        round_trip("");
        round_trip("[agent]\nmode = \"static\"\n");
        let (config, printed) = round_trip("[api]\nlisten = \"\"\n");
        assert_eq!(config.api.listen, None);
        assert!(
            printed.contains("\n[api]\nlisten = \"\"  # no API"),
            "{printed}"
        );
    }

    #[test]
    fn defaults_are_printed_and_run_time_choices_commented() {
        let (_, printed) = round_trip("");
        let expected = r#"# egret-agent effective configuration: defaults filled in.

[agent]
node_name = "node-7"
mode = "kubernetes"
# interface: the interface of the default route, resolved at run time
pod_interfaces = ["veth*", "cali*", "lxc*", "gke*"]
pin_path = "/sys/fs/bpf/egret"
state_dir = "/run/egret"
fwmark = 0x00100000
route_table = 4800
rule_priority = 4800  # and 4801 for the second rule

[tunnel]
port = 4800
vni = 1
device = "egret0"
floating_ips = []  # egress_source_ip not checked

[masquerade]
non_masquerade_cidrs = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
]
masquerade_link_local = false

[kubernetes]
# kubeconfig: none; the pod's service account, then $KUBECONFIG
namespace = "egret-system"

[api]
listen = "127.0.0.1:9478"

# [[policy]]: none here; policies come from the cluster
"#;
        assert_eq!(printed, expected);
    }

    #[test]
    fn policies_are_printed_in_order_with_every_key() {
        let (config, printed) = round_trip(STATIC);
        assert_eq!(config.agent.mode, Mode::Static);
        let tail = &printed[printed.find("[[policy]]").expect("a policy")..];
        assert_eq!(
            tail,
            r#"[[policy]]
name = "alice-frontend"
sources = ["10.10.1.0/28"]
destination_cidrs = ["8.8.8.0/24"]
excluded_cidrs = []
egress_source_ip = "192.168.1.100"

[[policy]]
name = "bob"
sources = ["10.10.2.0/24", "10.10.3.7/32"]
destination_cidrs = ["0.0.0.0/0"]
excluded_cidrs = ["10.0.0.0/8"]
egress_source_ip = "192.168.1.101"
"#
        );
    }
}
