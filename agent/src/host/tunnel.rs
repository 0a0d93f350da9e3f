//! The tunnel device and the policy routing in front of it.
//!
//! What the agent sets up on a node, and why:
//!
//! - **`egret0`**, a collect-metadata (`external`) VXLAN device on `[tunnel].port`. Its
//!   egress program gives every packet its tunnel key (the policy's egress IP, the VNI), so
//!   one device reaches every floating IP; its ingress program admits the gateways' replies.
//!   Its MTU is the uplink's minus the VXLAN overhead (50 bytes; the tunnel contract's
//!   [`egret_config::tunnel::inner_mtu`], which the gateways use too). IPv6 is off on it.
//! - **Policy routing.** Two rules for packets carrying the mark bits:
//!   `fwmark M/M lookup main suppress_prefixlength 0` (priority P), then
//!   `fwmark M/M lookup T` (priority P+1). A marked packet therefore still follows any
//!   specific route of the main table (pod networks, directly connected subnets, other
//!   nodes), and only what would have left by the default route goes to the table `T`, whose
//!   only route is `default via 169.254.100.1 dev egret0 onlink`. The routing decision happens
//!   before the FORWARD hook, so the node's forward filtering (a CNI's NetworkPolicy) sees
//!   every selected packet before the tunnel does.
//! - **The next hop** 169.254.100.1 gets a permanent neighbour entry, so the kernel never
//!   sends ARP through the tunnel (an ARP request has no policy, hence no tunnel key).
//!   Gateways accept any inner destination MAC.
//! - **Return path.** Replies arrive decapsulated on `egret0` with an outside source address
//!   the main table routes by the uplink, so strict reverse-path filtering would drop them:
//!   `net.ipv4.conf.egret0.rp_filter` is set to 2 (loose), which is what the kernel applies
//!   when it is the larger of the device's and `all`'s values. Loose mode still refuses
//!   every packet arriving on a device without an IPv4 address, so `egret0` holds
//!   169.254.100.2/32, which nothing routes to. The rest of the node keeps its settings.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::{HostError, read_sysctl, run, sysctl};

/// The tunnel's next hop inside `egret0`: a link-local address no host holds.
pub const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 100, 1);
/// The tunnel device's own address: reverse-path filtering needs the device to have one.
pub const DEVICE_ADDRESS: &str = "169.254.100.2/32";
/// The next hop's MAC: locally administered, fixed, so that every node uses the same.
pub const NEXT_HOP_MAC: &str = "02:65:67:72:65:74";

/// What the tunnel side of the node must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The VXLAN device's name.
    pub device: String,
    /// Its UDP port.
    pub port: u16,
    /// Its MTU.
    pub mtu: u16,
    /// The mark bits of selected packets.
    pub mark: u32,
    /// The routing table of selected packets.
    pub table: u32,
    /// Priority of the first of the two rules.
    pub priority: u32,
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ensured {
    /// The device had to be created (or re-created with other settings).
    pub created_device: bool,
    /// Rules that had to be added.
    pub added_rules: usize,
}

/// Brings the node to `tunnel`'s state, changing only what differs.
pub fn ensure(tunnel: &Tunnel) -> Result<Ensured, HostError> {
    let mut done = Ensured::default();
    let dev = tunnel.device.as_str();
    let port = tunnel.port.to_string();
    match device_port(dev)? {
        Some(Some(p)) if p == tunnel.port => {}
        Some(_) => {
            // Another kind of device, or another port: ours now.
            run("ip", ["link", "del", "dev", dev], None)?;
            create(dev, &port)?;
            done.created_device = true;
        }
        None => {
            create(dev, &port)?;
            done.created_device = true;
        }
    }
    let mtu = tunnel.mtu.to_string();
    run("ip", ["link", "set", "dev", dev, "mtu", &mtu, "up"], None)?;
    // IPv6 off: no router solicitation or neighbour discovery would have a tunnel key.
    if std::path::Path::new(&format!("/proc/sys/net/ipv6/conf/{dev}")).exists() {
        sysctl(&["net", "ipv6", "conf", dev, "disable_ipv6"], "1")?;
    }
    sysctl(&["net", "ipv4", "conf", dev, "rp_filter"], "2")?;
    run("ip", ["addr", "replace", DEVICE_ADDRESS, "dev", dev], None)?;
    let hop = NEXT_HOP.to_string();
    run(
        "ip",
        [
            "neigh",
            "replace",
            &hop,
            "lladdr",
            NEXT_HOP_MAC,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
        None,
    )?;
    let table = tunnel.table.to_string();
    run(
        "ip",
        [
            "route", "replace", "default", "via", &hop, "dev", dev, "onlink", "table", &table,
        ],
        None,
    )?;
    done.added_rules = ensure_rules(tunnel)?;
    Ok(done)
}

/// The node must forward: the agent's whole purpose is pod traffic crossing it.
pub fn forwarding_enabled() -> Result<bool, HostError> {
    Ok(read_sysctl(&["net", "ipv4", "ip_forward"])? == "1")
}

fn create(dev: &str, port: &str) -> Result<(), HostError> {
    run(
        "ip",
        [
            "link", "add", dev, "type", "vxlan", "external", "dstport", port,
        ],
        None,
    )
    .map(drop)
}

/// `None`: no such device; `Some(None)`: a device that is not a collect-metadata VXLAN
/// device; `Some(Some(port))`: ours, on that port.
fn device_port(dev: &str) -> Result<Option<Option<u16>>, HostError> {
    let Ok(text) = run("ip", ["-d", "-j", "link", "show", "dev", dev], None) else {
        return Ok(None);
    };
    let json: Value = serde_json::from_str(&text).map_err(|err| HostError::Output {
        command: format!("ip -d -j link show dev {dev}"),
        problem: err.to_string(),
    })?;
    let info = &json[0]["linkinfo"];
    if info["info_kind"] != "vxlan" || info["info_data"]["external"] != Value::Bool(true) {
        return Ok(Some(None));
    }
    Ok(Some(
        info["info_data"]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok()),
    ))
}

/// The two rules, as `ip rule add` arguments.
pub fn rules(tunnel: &Tunnel) -> [Vec<String>; 2] {
    let mark = format!("{:#x}/{:#x}", tunnel.mark, tunnel.mark);
    [
        vec![
            "priority".into(),
            tunnel.priority.to_string(),
            "fwmark".into(),
            mark.clone(),
            "lookup".into(),
            "main".into(),
            "suppress_prefixlength".into(),
            "0".into(),
        ],
        vec![
            "priority".into(),
            (tunnel.priority + 1).to_string(),
            "fwmark".into(),
            mark,
            "lookup".into(),
            tunnel.table.to_string(),
        ],
    ]
}

/// Whether `rule` (an entry of `ip -j rule show`) is the wanted rule of that priority.
fn rule_matches(rule: &Value, tunnel: &Tunnel, second: bool) -> bool {
    let mark = format!("{:#x}", tunnel.mark);
    let table = if second {
        tunnel.table.to_string()
    } else {
        "main".into()
    };
    rule["fwmark"].as_str() == Some(mark.as_str())
        && rule["fwmask"].as_str() == Some(mark.as_str())
        && rule["table"].as_str() == Some(table.as_str())
        && (second || rule["suppress_prefixlen"].as_u64() == Some(0))
}

/// Adds the rules that are missing and replaces ours that differ; returns how many it added.
fn ensure_rules(tunnel: &Tunnel) -> Result<usize, HostError> {
    let text = run("ip", ["-j", "rule", "show"], None)?;
    let rules: Value = serde_json::from_str(&text).map_err(|err| HostError::Output {
        command: "ip -j rule show".into(),
        problem: err.to_string(),
    })?;
    let listed = rules.as_array().cloned().unwrap_or_default();
    let mut added = 0;
    for (i, args) in self::rules(tunnel).iter().enumerate() {
        let priority = u64::from(tunnel.priority) + i as u64;
        let at: Vec<&Value> = listed
            .iter()
            .filter(|r| r["priority"].as_u64() == Some(priority))
            .collect();
        if at.len() == 1 && rule_matches(at[0], tunnel, i == 1) {
            continue;
        }
        // Add the right one first, then remove the others of that priority, so that marked
        // packets always find a rule.
        let mut add = vec!["rule".to_owned(), "add".to_owned()];
        add.extend(args.iter().cloned());
        run("ip", &add, None)?;
        added += 1;
        for stale in at.iter().filter(|r| !rule_matches(r, tunnel, i == 1)) {
            let mut del = vec!["rule".to_owned(), "del".to_owned(), "priority".to_owned()];
            del.push(priority.to_string());
            if let (Some(mark), Some(mask)) = (stale["fwmark"].as_str(), stale["fwmask"].as_str()) {
                del.extend(["fwmark".to_owned(), format!("{mark}/{mask}")]);
            }
            if let Some(table) = stale["table"].as_str() {
                del.extend(["lookup".to_owned(), table.to_owned()]);
            }
            run("ip", &del, None)?;
        }
    }
    Ok(added)
}

/// Removes the rules, the table's routes and the device; what is already gone is fine.
pub fn remove(tunnel: &Tunnel) -> Result<(), HostError> {
    remove_routing(tunnel);
    remove_device(&tunnel.device)
}

/// Removes this tunnel's two rules (only ours: priority, mark and table must all match) and
/// flushes its table.
pub fn remove_routing(tunnel: &Tunnel) {
    for args in rules(tunnel) {
        // `suppress_prefixlength` is not part of a rule's identity for `ip rule del`.
        let key: Vec<String> = args
            .iter()
            .take_while(|a| a.as_str() != "suppress_prefixlength")
            .cloned()
            .collect();
        let mut del = vec!["rule".to_owned(), "del".to_owned()];
        del.extend(key);
        while run("ip", &del, None).is_ok() {}
    }
    let table = tunnel.table.to_string();
    let _ = run("ip", ["route", "flush", "table", &table], None);
}

/// Deletes the device if it is a collect-metadata VXLAN device (ours); another device of
/// that name is left alone.
pub fn remove_device(device: &str) -> Result<(), HostError> {
    if let Some(Some(_)) = device_port(device)? {
        run("ip", ["link", "del", "dev", device], None)?;
    }
    Ok(())
}

/// The MTU of `interface`, as the kernel of this process's network namespace reports it
/// (netlink through `ip`; a container's `/sys/class/net` may show another namespace).
pub fn mtu_of(interface: &str) -> Result<u16, HostError> {
    let command = format!("ip -j link show dev {interface}");
    let text = run("ip", ["-j", "link", "show", "dev", interface], None)?;
    let links: Value = serde_json::from_str(&text).map_err(|err| HostError::Output {
        command: command.clone(),
        problem: err.to_string(),
    })?;
    let mtu = &links[0]["mtu"];
    mtu.as_u64()
        .and_then(|mtu| u16::try_from(mtu).ok())
        .ok_or_else(|| HostError::Output {
            command,
            problem: format!("{mtu} is not an MTU"),
        })
}

/// The interface of the default route of the main table.
pub fn default_route_interface() -> Result<String, HostError> {
    let text = run("ip", ["-j", "route", "show", "default"], None)?;
    let routes: Value = serde_json::from_str(&text).map_err(|err| HostError::Output {
        command: "ip -j route show default".into(),
        problem: err.to_string(),
    })?;
    routes[0]["dev"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| HostError::Output {
            command: "ip -j route show default".into(),
            problem: "no default route: set [agent].interface".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> Tunnel {
        Tunnel {
            device: "egret0".into(),
            port: 4800,
            mtu: 1450,
            mark: 0x0010_0000,
            table: 4800,
            priority: 4800,
        }
    }

    #[test]
    fn main_table_specific_routes_come_before_the_tunnel() {
        let [first, second] = rules(&tunnel());
        assert_eq!(
            first.join(" "),
            "priority 4800 fwmark 0x100000/0x100000 lookup main suppress_prefixlength 0"
        );
        assert_eq!(
            second.join(" "),
            "priority 4801 fwmark 0x100000/0x100000 lookup 4800"
        );
    }

    #[test]
    fn listed_rules_are_recognised() {
        // As `ip -j rule show` prints them.
        let listed: Value = serde_json::from_str(
            r#"[{"priority":4800,"src":"all","fwmark":"0x100000","fwmask":"0x100000","table":"main","suppress_prefixlen":0},
                {"priority":4801,"src":"all","fwmark":"0x100000","fwmask":"0x100000","table":"4800"},
                {"priority":4801,"src":"all","fwmark":"0x200000","fwmask":"0x200000","table":"4800"}]"#,
        )
        .expect("json");
        assert!(rule_matches(&listed[0], &tunnel(), false));
        assert!(rule_matches(&listed[1], &tunnel(), true));
        assert!(!rule_matches(&listed[2], &tunnel(), true));
        assert!(!rule_matches(&listed[1], &tunnel(), false));
    }
}
