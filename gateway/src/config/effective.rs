//! The effective config printed back as TOML: every key with its value, defaults included,
//! and a comment where a value is decided at run time or a section is absent.
//!
//! The output parses back to the same [`Config`]: what is only a comment here (the default
//! route, an inherited priority, an absent section) is also what its absence means.

use super::{Config, Priority};

use egret_config::duration;
use egret_config::effective::{Lines, quote};

pub(super) fn render(config: &Config) -> String {
    let mut out = Lines::default();
    out.line("# egret-gateway effective configuration: defaults filled in.");

    let gateway = &config.gateway;
    out.section("[gateway]");
    out.key("name", quote(&gateway.name));
    out.key("interface", quote(&gateway.interface));
    match gateway.next_hop {
        Some(next_hop) => out.key("next_hop", quote(&next_hop.to_string())),
        None => out.line(format!(
            "# next_hop: the default route via {}, resolved at run time",
            gateway.interface
        )),
    }
    out.key("fast_path", gateway.fast_path);

    let tunnel = &config.tunnel;
    out.section("[tunnel]");
    out.key("port", tunnel.port);
    out.key("vni", tunnel.vni);
    out.key(
        "allowed_sources",
        array(tunnel.allowed_sources.iter().map(|c| quote(&c.to_string()))),
    );

    let election = &config.election;
    out.section("[election]");
    out.key("priority", priority(election.priority));
    out.key(
        "advert_interval",
        quote(&duration::format(election.advert_interval)),
    );
    out.key("preempt", election.preempt);
    if election.peers.is_empty() {
        out.line("peers = []  # multicast to 224.0.0.18");
    } else {
        out.key(
            "peers",
            array(election.peers.iter().map(|p| quote(&p.to_string()))),
        );
    }
    out.key("garp_count", election.garp_count);
    out.key(
        "garp_interval",
        quote(&duration::format(election.garp_interval)),
    );
    out.key(
        "garp_refresh",
        quote(&duration::format(
            election.garp_refresh.unwrap_or(std::time::Duration::ZERO),
        )),
    );

    for floating_ip in &config.floating_ips {
        out.section("[[floating_ip]]");
        out.key("address", quote(&floating_ip.address.to_string()));
        out.key("vrid", floating_ip.vrid);
        match floating_ip.priority {
            Some(p) => out.key("priority", priority(p)),
            None => out.line(format!(
                "# priority: {} from [election]",
                priority(election.priority)
            )),
        }
    }

    let nat = &config.nat;
    out.section("[nat]");
    out.key(
        "port_range",
        quote(&format!(
            "{}-{}",
            nat.port_range.start(),
            nat.port_range.end()
        )),
    );
    out.key("max_flows", nat.max_flows);
    out.key("max_flows_per_pod", nat.max_flows_per_pod);
    for (key, timeout) in [
        ("tcp_established_timeout", nat.tcp_established_timeout),
        ("tcp_transitory_timeout", nat.tcp_transitory_timeout),
        ("tcp_time_wait_timeout", nat.tcp_time_wait_timeout),
        ("tcp_closed_timeout", nat.tcp_closed_timeout),
        ("udp_timeout", nat.udp_timeout),
        ("icmp_timeout", nat.icmp_timeout),
    ] {
        out.key(key, quote(&duration::format(timeout)));
    }

    match &config.sync {
        Some(sync) => {
            out.section("[sync]");
            out.key("listen", quote(&sync.listen.to_string()));
            out.key(
                "peers",
                array(sync.peers.iter().map(|p| quote(&p.to_string()))),
            );
            match &sync.key {
                Some((path, _)) => out.key("key_file", quote(&path.display().to_string())),
                None => out.line("# no key_file: the sync is not authenticated"),
            }
            if let Some((path, _)) = &sync.previous_key {
                out.key("previous_key_file", quote(&path.display().to_string()));
            }
        }
        None => {
            out.line("");
            out.line("# [sync] absent: flow state is not shared with other gateways");
        }
    }

    out.section("[api]");
    out.key("listen", quote(&config.api.listen.to_string()));

    match &config.kubernetes {
        Some(kubernetes) => {
            out.section("[kubernetes]");
            match &kubernetes.kubeconfig {
                Some(path) => out.key("kubeconfig", quote(&path.to_string_lossy())),
                None => out.line("# kubeconfig: $KUBECONFIG, read at start"),
            }
            out.key("gateway", quote(&kubernetes.gateway));
        }
        None => {
            out.line("");
            out.line("# [kubernetes] absent: nothing is reported into a cluster");
        }
    }
    out.finish()
}

fn array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn priority(priority: Priority) -> String {
    match priority {
        Priority::Fixed(p) => p.to_string(),
        Priority::Auto => quote("auto"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Config, Priority};

    /// Every section, every optional key, nothing at its default.
    const FULL: &str = r#"
[gateway]
name = "gw \"one\""
interface = "eth1"
next_hop = "192.168.1.1"

[tunnel]
port = 4900
vni = 16777215
allowed_sources = ["192.168.1.0/24", "10.0.0.0/8", "172.16.0.9/32"]

[election]
priority = "auto"
advert_interval = "1.5s"
preempt = false
peers = ["192.168.1.12", "192.168.1.13"]

[[floating_ip]]
address = "192.168.1.100"
vrid = 10
priority = 200

[[floating_ip]]
address = "192.168.1.101"
vrid = 255

[nat]
port_range = "20000-30000"
max_flows = 4294967295
max_flows_per_pod = 100000
tcp_established_timeout = "1h30m15s"
tcp_transitory_timeout = "5m"
tcp_time_wait_timeout = "4m0.5s"
tcp_closed_timeout = "1s"
udp_timeout = "300s"
icmp_timeout = "2m"

[sync]
listen = "192.168.1.10:4801"
peers = ["192.168.1.12:4801", "[fd00::1]:4801"]

[api]
listen = "[::1]:9000"

[kubernetes]
kubeconfig = "/etc/egret/kube config"
gateway = "egress.example"
"#;

    fn round_trip(text: &str) -> (Config, String) {
        let config = accept(text).config;
        let printed = config.to_toml();
        let again = match Config::from_str(&printed, &host()) {
            Ok(checked) => checked.config,
            Err(error) => panic!("effective config refused: {}\n{printed}", describe(&error)),
        };
        assert_eq!(again, config, "{printed}");
        (config, printed)
    }

    #[test]
    fn the_effective_config_parses_back_to_the_same_config() {
        let (config, printed) = round_trip(FULL);
        assert_eq!(config.election.priority, Priority::Auto);
        assert!(
            printed.contains("advert_interval = \"1s500ms\""),
            "{printed}"
        );
        assert!(
            printed.contains("tcp_time_wait_timeout = \"4m500ms\""),
            "{printed}"
        );
        assert!(printed.contains("udp_timeout = \"5m\""), "{printed}");
        assert!(printed.contains("name = 'gw \"one\"'"), "{printed}");
        round_trip(MINIMAL);
    }

    #[test]
    fn defaults_are_printed_and_run_time_choices_commented() {
        let (_, printed) = round_trip(MINIMAL);
        for line in [
            "name = \"gw-test\"",
            "# next_hop: the default route via eth1, resolved at run time",
            "port = 4800",
            "vni = 1",
            "priority = 100",
            "advert_interval = \"1s\"",
            "preempt = true",
            "peers = []  # multicast to 224.0.0.18",
            "# priority: 100 from [election]",
            "port_range = \"16384-65535\"",
            "max_flows = 1000000",
            "max_flows_per_pod = 65536",
            "tcp_established_timeout = \"2h4m\"",
            "tcp_transitory_timeout = \"4m\"",
            "tcp_time_wait_timeout = \"4m\"",
            "tcp_closed_timeout = \"10s\"",
            "udp_timeout = \"5m\"",
            "icmp_timeout = \"1m\"",
            "# [sync] absent: flow state is not shared with other gateways",
            "listen = \"127.0.0.1:9477\"",
            "# [kubernetes] absent: nothing is reported into a cluster",
        ] {
            assert!(
                printed.lines().any(|l| l == line),
                "{line:?} not in\n{printed}"
            );
        }
    }

    #[test]
    fn an_empty_kubernetes_table_stays_empty() {
        let (config, printed) = round_trip(&format!("{MINIMAL}\n[kubernetes]\n"));
        assert!(
            config
                .kubernetes
                .is_some_and(|k| k.kubeconfig.is_none() && k.gateway == "default")
        );
        assert!(
            printed.contains("# kubeconfig: $KUBECONFIG, read at start\ngateway = \"default\"\n"),
            "{printed}"
        );
    }
}
