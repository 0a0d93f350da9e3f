//! The default configs the packages install as conffiles.
//!
//! They are the commented examples of `packaging/` (`gateway.toml`, `agent.toml`) with every
//! example value commented out: a value line whose own comment says `(example)`, and the
//! value lines that follow a comment line ending in `(example)` up to the next blank line.
//! What stays are the defaults, so a fresh install checks as incomplete (`missing required
//! key`) and the package does not start a daemon that would claim example addresses on a
//! real network. The operator fills the values in and starts the service.

/// The marker of an example value in the commented examples.
pub const EXAMPLE: &str = "(example)";

/// The conffile of `package` made from its commented example.
pub fn default_config(example: &str, package: &str) -> String {
    let mut out = format!(
        "# Installed by the {package} package. The example values are commented out: fill in\n\
         # yours, check with `{package} check`, then `systemctl enable --now {package}`.\n#\n"
    );
    let mut in_example = false;
    for line in example.lines() {
        let trimmed = line.trim_start();
        let comment = trimmed.starts_with('#');
        if trimmed.is_empty() {
            in_example = false;
        } else if comment && trimmed.trim_end().ends_with(EXAMPLE) {
            in_example = true;
        }
        let example_value = !comment && (in_example || line.contains(EXAMPLE));
        if example_value {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = include_str!("../gateway.toml");
    const AGENT: &str = include_str!("../agent.toml");

    /// The lines that are not comments: what a TOML parser reads.
    fn values(text: &str) -> Vec<&str> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn example_values_are_commented_and_the_rest_kept() {
        let conffile = default_config(GATEWAY, "egret-gateway");
        let kept = values(&conffile);
        for line in [
            "interface = \"eth1\"",
            "address = \"192.168.1.100\"",
            "vrid = 10",
        ] {
            assert!(!kept.contains(&line), "{line} left in:\n{conffile}");
            assert!(conffile.contains(&format!("# {line}")), "{line} dropped");
        }
        assert!(kept.contains(&"port = 4800"), "a default was commented out");
        assert!(kept.contains(&"[[floating_ip]]"));
        // Nothing else changed: every line of the example is there, in order.
        let body: Vec<&str> = conffile
            .lines()
            .skip(3)
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| !l.starts_with('#'))
                    .unwrap_or(l)
            })
            .collect();
        let example: Vec<&str> = GATEWAY
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| !l.starts_with('#'))
                    .unwrap_or(l)
            })
            .collect();
        assert_eq!(body, example);
    }

    #[test]
    fn the_gateways_default_config_does_not_check_until_filled_in() {
        use egret_gateway::config::{Config, ConfigError, HostFacts};
        let host = HostFacts::new("gw1")
            .with_interface("eth1", &["192.168.1.10/24".parse().expect("cidr")]);
        assert!(
            Config::from_str(GATEWAY, &host).is_ok(),
            "the example itself checks"
        );
        let conffile = default_config(GATEWAY, "egret-gateway");
        let Err(ConfigError::Invalid(diagnostics)) = Config::from_str(&conffile, &host) else {
            panic!("the default config checks:\n{conffile}");
        };
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        for key in [
            "gateway.interface",
            "tunnel.allowed_sources",
            "floating_ip[0].address",
        ] {
            assert!(
                text.iter()
                    .any(|d| d.contains(key) && d.contains("missing required key")),
                "{key} not reported missing: {text:#?}"
            );
        }
    }

    #[test]
    fn the_agents_default_config_does_not_check_until_filled_in() {
        use egret_agent::config::{Config, HostFacts};
        let host = HostFacts {
            node_name_env: None,
            hostname: Some("node1".to_owned()),
            namespace_env: None,
            cluster_credentials: true,
        };
        assert!(
            Config::from_str(AGENT, &host).is_ok(),
            "the example itself checks"
        );
        // A plain host: no service account, no $KUBECONFIG.
        let host = HostFacts {
            cluster_credentials: false,
            ..host
        };
        let conffile = default_config(AGENT, "egret-agent");
        assert!(!values(&conffile).iter().any(|l| l.contains("[[policy]]")));
        let Err(error) = Config::from_str(&conffile, &host) else {
            panic!("the default config checks:\n{conffile}");
        };
        let text: Vec<String> = error
            .diagnostics()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            text.iter()
                .any(|d| d.contains("kubernetes.kubeconfig") && d.contains("needs a cluster")),
            "{text:#?}"
        );
    }

    #[test]
    fn the_packaged_gateway_and_agent_configs_agree_on_the_tunnel() {
        let gateway_host = egret_gateway::config::HostFacts::new("gw1")
            .with_interface("eth1", &["192.168.1.10/24".parse().expect("cidr")]);
        let gateway = egret_gateway::config::Config::from_str(GATEWAY, &gateway_host)
            .expect("the gateway example checks")
            .config
            .tunnel;
        let agent_host = egret_agent::config::HostFacts {
            node_name_env: None,
            hostname: Some("node1".to_owned()),
            namespace_env: None,
            cluster_credentials: true,
        };
        let agent = egret_agent::config::Config::from_str(AGENT, &agent_host)
            .expect("the agent example checks")
            .config
            .tunnel;
        assert_eq!((gateway.port, gateway.vni), (agent.port, agent.vni));
        // And both say the defaults, which are the same on both sides.
        assert_eq!(
            (gateway.port, gateway.vni),
            (
                egret_gateway::config::defaults::TUNNEL_PORT,
                egret_gateway::config::defaults::TUNNEL_VNI
            )
        );
        assert_eq!(
            (agent.port, agent.vni),
            (
                egret_agent::config::defaults::TUNNEL_PORT,
                egret_agent::config::defaults::TUNNEL_VNI
            )
        );
    }
}
