//! The packages installed on booted Debian systems (systemd-nspawn, real systemd as PID 1):
//! each `.deb` through its whole life with dpkg (install, start, the daemon's user and
//! capabilities, reload, stop, upgrades with an edited and an unedited conffile, remove,
//! purge), and each `.rpm` installed with `rpm --root` and started the same way.
//!
//! Each container lives in a lab namespace with one veth to a peer namespace: the daemons
//! need an interface with an address, and nothing they send leaves the two namespaces.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    NetNs, WorkDir,
    nspawn::{Container, NETWORK_CAPABILITIES, Rootfs},
    packages::{Packages, deb_version, next_revision},
    require_root,
};

/// Where the packages appear inside the containers.
const PACKAGES: &str = "/packages";
/// The container's address on its link, and its peer's.
const ADDRESS: &str = "192.168.77.10/24";
const PEER: &str = "192.168.77.1";
const FLOATING_IP: &str = "192.168.77.100";

/// A lab namespace with `eth0` (192.168.77.10/24) to a peer namespace, and a container booted
/// in it with the network capabilities the daemons need and the packages at `/packages`.
struct Machine {
    container: Container,
    _peer: NetNs,
    _ns: NetNs,
}

impl Machine {
    fn boot(tag: &str) -> Result<Self> {
        let mut machine = Self::prepare(tag)?;
        machine.container.boot()?;
        Ok(machine)
    }

    /// The machine with its root mounted, not booted: [`Container::root`] takes files and
    /// `rpm --root`.
    fn prepare(tag: &str) -> Result<Self> {
        let ns = NetNs::new(tag)?;
        let peer = NetNs::new(&format!("{tag}-peer"))?;
        // The veth goes with the namespaces.
        ns.ip([
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            peer.name(),
        ])?;
        ns.ip(["address", "add", ADDRESS, "dev", "eth0"])?;
        ns.ip(["link", "set", "eth0", "up"])?;
        peer.ip(["address", "add", &format!("{PEER}/24"), "dev", "uplink"])?;
        peer.ip(["link", "set", "uplink", "up"])?;
        ns.ip(["route", "add", "default", "via", PEER])?;
        let packages = Packages::get()?;
        let container = Container::builder(tag)
            .netns(&ns)
            .capabilities(NETWORK_CAPABILITIES.iter().copied())
            .bind_ro(packages.dir(), PACKAGES)
            .prepare(&Rootfs::cached()?)?;
        Ok(Self {
            container,
            _peer: peer,
            _ns: ns,
        })
    }
}

/// `/packages/<file name of path>`.
fn inside(path: &std::path::Path) -> String {
    format!(
        "{PACKAGES}/{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    )
}

/// Runs `argv` in `c`; returns (success, stdout + stderr).
fn sh(c: &Container, script: &str) -> Result<(bool, String)> {
    let output = c.exec(&["sh", "-c", script])?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

fn ok(c: &Container, script: &str) -> Result<String> {
    let (success, said) = sh(c, script)?;
    ensure!(success, "`{script}` failed:\n{said}");
    Ok(said)
}

/// `systemctl start UNIT`, failing with the unit's journal.
fn start(c: &Container, unit: &str) -> Result<()> {
    let (started, said) = sh(c, &format!("systemctl start {unit}"))?;
    if !started {
        bail!("{unit} did not start: {said}\n{}", c.journal(unit)?);
    }
    Ok(())
}

/// `systemctl show -p PROPERTY --value UNIT`.
fn property(c: &Container, unit: &str, property: &str) -> Result<String> {
    Ok(
        ok(c, &format!("systemctl show -p {property} --value {unit}"))?
            .trim()
            .to_owned(),
    )
}

/// The capability mask of these capabilities (CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_PERFMON 38,
/// CAP_BPF 39).
fn mask(capabilities: &[&str]) -> u64 {
    capabilities
        .iter()
        .map(|c| match *c {
            "CAP_NET_ADMIN" => 1u64 << 12,
            "CAP_NET_RAW" => 1 << 13,
            "CAP_PERFMON" => 1 << 38,
            "CAP_BPF" => 1 << 39,
            other => panic!("no bit for {other}"),
        })
        .fold(0, |a, b| a | b)
}

/// The daemon of `unit` runs as `user`, not root, with exactly `capabilities` effective,
/// permitted, ambient and in its bounding set.
fn check_credentials(c: &Container, unit: &str, user: &str, capabilities: &[&str]) -> Result<()> {
    let pid = c.main_pid(unit)?;
    let status: BTreeMap<String, String> = c.proc_status(pid)?;
    let uid = ok(c, &format!("id -u {user}"))?.trim().to_owned();
    ensure!(uid != "0", "{user} is root");
    let uids: Vec<&str> = status["Uid"].split_whitespace().collect();
    ensure!(
        uids.iter().all(|u| *u == uid),
        "{unit} runs with uids {uids:?}, not {user} ({uid})"
    );
    let expected = mask(capabilities);
    for set in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        let value = u64::from_str_radix(status[set].trim(), 16).context("a capability mask")?;
        ensure!(
            value == expected,
            "{unit}: {set} = {value:#x}, expected {expected:#x} ({capabilities:?})"
        );
    }
    eprintln!(
        "{unit}: pid {pid}, user {user} ({uid}), CapEff {} CapAmb {} CapBnd {}, NoNewPrivs {}",
        status["CapEff"], status["CapAmb"], status["CapBnd"], status["NoNewPrivs"]
    );
    ensure!(status["NoNewPrivs"].trim() == "1", "NoNewPrivs not set");
    Ok(())
}

/// `systemd-analyze verify` of the installed unit: any warning fails.
fn verify_unit(c: &Container, unit: &str) -> Result<()> {
    let output = c.exec(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        &format!("/usr/lib/systemd/system/{unit}"),
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {unit}:\n{stderr}"
    );
    Ok(())
}

/// `systemctl reload` applies `good` (written to `file`) in the same process, and refuses
/// `bad`: the unit stays active with the same main process, and the file ends as `good`.
fn reloads(c: &Container, unit: &str, file: &str, good: &str, bad: &str) -> Result<()> {
    let pid = c.main_pid(unit)?;
    c.write_file(file, good)?;
    ok(c, &format!("systemctl reload {unit}"))?;
    c.wait_until(Duration::from_secs(10), "the reload is applied", |c| {
        Ok(c.journal(unit)?.contains("config reloaded"))
    })?;
    ensure!(c.main_pid(unit)? == pid, "the reload restarted {unit}");
    c.write_file(file, bad)?;
    ok(c, &format!("systemctl reload {unit}"))?;
    c.wait_until(Duration::from_secs(10), "the bad reload is refused", |c| {
        Ok(c.journal(unit)?
            .contains("reload failed, the previous config stays applied"))
    })?;
    ensure!(property(c, unit, "ActiveState")? == "active");
    ensure!(
        c.main_pid(unit)? == pid,
        "a refused reload restarted {unit}"
    );
    c.write_file(file, good)?;
    Ok(())
}

/// A gateway config for the machine: alone on its link, it owns the floating IP.
fn gateway_config(extra: &str) -> String {
    format!(
        "[gateway]\nname = \"gw-installed\"\ninterface = \"eth0\"\nnext_hop = \"{PEER}\"\n\n\
         [tunnel]\nallowed_sources = [\"192.168.77.0/24\"]\n\n\
         [election]\nadvert_interval = \"100ms\"\n\n\
         [[floating_ip]]\naddress = \"{FLOATING_IP}\"\nvrid = 77\n{extra}"
    )
}

#[test]
fn gateway_deb_from_install_to_purge() -> Result<()> {
    require_root();
    let packages = Packages::get()?;
    let deb = packages.deb("egret-gateway")?;
    let machine = Machine::boot("inst-gw")?;
    let c = &machine.container;
    let unit = "egret-gateway.service";

    // Installed with the default config, which does not check: enabled, not started, and
    // dpkg says why.
    let said = ok(c, &format!("dpkg -i {}", inside(&deb)))?;
    eprintln!("dpkg -i:\n{said}");
    ensure!(
        said.contains("egret-gateway: not started: /etc/egret/gateway.toml does not check yet")
            && said.contains("missing required key"),
        "{said}"
    );
    ensure!(property(c, unit, "UnitFileState")? == "enabled");
    ensure!(property(c, unit, "ActiveState")? == "inactive");
    ok(c, "getent passwd egret-gateway")?;
    verify_unit(c, unit)?;
    ok(
        c,
        "test -f /usr/share/man/man1/egret-gateway.1.gz && test -f /usr/share/bash-completion/completions/egret-gateway",
    )?;

    // A config that does not check fails the start, with the checker's message in the journal.
    c.write_file("/etc/egret/gateway.toml", gateway_config("bogus = 1\n"))?;
    let (started, said) = sh(c, &format!("systemctl start {unit}"))?;
    ensure!(!started, "a bad config started: {said}");
    let journal = c.journal(unit)?;
    ensure!(
        journal.contains("error: floating_ip[0].bogus") || journal.contains("bogus"),
        "the checker's message is not in the journal:\n{journal}"
    );

    // A good one starts: systemctl returns once the gateway said READY=1.
    c.write_file("/etc/egret/gateway.toml", gateway_config(""))?;
    ok(c, &format!("systemctl reset-failed {unit}"))?;
    start(c, unit)?;
    ensure!(property(c, unit, "ActiveState")? == "active");
    ensure!(property(c, unit, "StatusErrno")? == "0");
    check_credentials(
        c,
        unit,
        "egret-gateway",
        &["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"],
    )?;
    c.wait_until(
        Duration::from_secs(10),
        "the gateway owns the floating IP",
        |c| {
            let status: serde_json::Value =
                serde_json::from_str(&ok(c, "egret-gateway status --json")?)?;
            let fast = status["fast_path"]["enabled"].as_bool() == Some(true);
            ensure!(
                fast,
                "the fast path did not load under the unit: {}",
                status["fast_path"]
            );
            Ok(status["floating_ips"][0]["state"] == "master")
        },
    )?;

    // Reload: SIGHUP applies the file again in the same process; one that does not check
    // is refused, and the gateway goes on with the previous one.
    reloads(
        c,
        unit,
        "/etc/egret/gateway.toml",
        &gateway_config(""),
        "[gateway]\nbogus = 1\n",
    )?;

    // Stop: SIGTERM hands the address over, then the process exits.
    ok(c, &format!("systemctl stop {unit}"))?;
    ensure!(property(c, unit, "ActiveState")? == "inactive");
    let journal = c.journal(unit)?;
    ensure!(journal.contains("stopped"), "{journal}");

    // Upgrade with the operator's config (edited conffile): kept, the new default beside it,
    // and the running service restarted on the new binary.
    start(c, unit)?;
    let before = c.main_pid(unit)?;
    let work = WorkDir::new("inst-gw-rev")?;
    let version = deb_version(&deb)?;
    let next = next_revision(
        &deb,
        &format!("{}.1", version),
        "/etc/egret/gateway.toml",
        "# a line of the next release",
        work.path(),
    )?;
    c.write_file("/packages-next.deb", std::fs::read(&next)?)?;
    let said = ok(
        c,
        "DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold /packages-next.deb",
    )?;
    eprintln!("upgrade, edited conffile:\n{said}");
    let config = c.read_to_string("/etc/egret/gateway.toml")?;
    ensure!(config == gateway_config(""), "the edit was lost:\n{config}");
    let dist = c.read_to_string("/etc/egret/gateway.toml.dpkg-dist")?;
    ensure!(dist.contains("a line of the next release"), "{dist}");
    c.wait_until(Duration::from_secs(20), "restarted on upgrade", |c| {
        Ok(property(c, unit, "ActiveState")? == "active" && c.main_pid(unit)? != before)
    })?;

    // Remove: stopped, the conffile stays. Purge: the conffile and the state go.
    ok(c, "dpkg -r egret-gateway")?;
    ensure!(property(c, unit, "ActiveState")? == "inactive");
    ok(
        c,
        "test -f /etc/egret/gateway.toml && ! test -e /usr/bin/egret-gateway",
    )?;
    ok(c, "dpkg -P egret-gateway")?;
    ok(
        c,
        "! test -e /etc/egret/gateway.toml && ! test -e /etc/egret/gateway.toml.dpkg-dist && ! test -e /run/egret-gateway && ! test -e /usr/lib/systemd/system/egret-gateway.service",
    )?;
    ok(
        c,
        "! test -e /etc/systemd/system/multi-user.target.wants/egret-gateway.service",
    )?;

    // Upgrade with the conffile untouched: the new default replaces it, without a question.
    ok(c, &format!("dpkg -i {}", inside(&deb)))?;
    let said = ok(
        c,
        "DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold /packages-next.deb",
    )?;
    eprintln!("upgrade, unedited conffile:\n{said}");
    let config = c.read_to_string("/etc/egret/gateway.toml")?;
    ensure!(config.contains("a line of the next release"), "{config}");
    ok(
        c,
        "! test -e /etc/egret/gateway.toml.dpkg-dist && ! test -e /etc/egret/gateway.toml.dpkg-old",
    )?;
    ensure!(
        property(c, unit, "ActiveState")? == "inactive",
        "an unconfigured gateway was started on upgrade"
    );
    ok(c, "dpkg -P egret-gateway")?;
    Ok(())
}

/// An agent config in static mode for the machine: one policy to the floating IP.
fn agent_config(destination: &str) -> String {
    format!(
        "[agent]\nmode = \"static\"\nnode_name = \"node-installed\"\n\n\
         [tunnel]\nfloating_ips = [\"{FLOATING_IP}\"]\n\n\
         [[policy]]\nname = \"installed\"\nsources = [\"10.99.0.0/24\"]\n\
         destination_cidrs = [\"{destination}\"]\negress_source_ip = \"{FLOATING_IP}\"\n"
    )
}

#[test]
fn agent_deb_from_install_to_purge() -> Result<()> {
    require_root();
    let packages = Packages::get()?;
    let deb = packages.deb("egret-agent")?;
    let machine = Machine::boot("inst-agent")?;
    let c = &machine.container;
    let unit = "egret-agent.service";

    // What a host's systemd mounts at boot, and a container's does not.
    c.mount_bpffs()?;
    let said = ok(c, &format!("dpkg -i {}", inside(&deb)))?;
    eprintln!("dpkg -i:\n{said}");
    ok(
        c,
        "test \"$(stat -c %U:%a /sys/fs/bpf/egret)\" = egret-agent:700",
    )?;
    ensure!(
        said.contains("egret-agent: not started: /etc/egret/agent.toml does not check yet")
            && said.contains("kubernetes.kubeconfig"),
        "{said}"
    );
    ensure!(property(c, unit, "UnitFileState")? == "enabled");
    ensure!(property(c, unit, "ActiveState")? == "inactive");
    verify_unit(c, unit)?;

    // Started: systemctl returns once the node is programmed (READY=1).
    c.write_file("/etc/egret/agent.toml", agent_config("203.0.113.0/24"))?;
    start(c, unit)?;
    ensure!(property(c, unit, "ActiveState")? == "active");
    check_credentials(
        c,
        unit,
        "egret-agent",
        &["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"],
    )?;
    let status = ok(c, "egret-agent status")?;
    ensure!(status.contains("installed"), "{status}");
    ok(
        c,
        "ip link show egret0 && nft list table ip egret >/dev/null",
    )?;

    // Reload: SIGHUP re-reads the config; one that does not check keeps the previous one.
    reloads(
        c,
        unit,
        "/etc/egret/agent.toml",
        &agent_config("198.51.100.0/24"),
        "[agent]\nbogus = 1\n",
    )?;

    // Stop: the data path stays in place (pinned), so the node's traffic goes on.
    c.write_file("/etc/egret/agent.toml", agent_config("198.51.100.0/24"))?;
    ok(c, &format!("systemctl stop {unit}"))?;
    ensure!(property(c, unit, "ActiveState")? == "inactive");
    ok(
        c,
        "ls /sys/fs/bpf/egret/maps | grep -q . && ip link show egret0 >/dev/null",
    )?;

    // Remove takes the data path off the node; purge removes the config and the state.
    ok(c, "dpkg -r egret-agent")?;
    ok(
        c,
        "! test -e /sys/fs/bpf/egret/maps && ! ip link show egret0 2>/dev/null",
    )?;
    ok(c, "! nft list table ip egret 2>/dev/null")?;
    ok(c, "dpkg -P egret-agent")?;
    ok(
        c,
        "! test -e /etc/egret/agent.toml && ! test -e /run/egret && ! test -e /sys/fs/bpf/egret",
    )?;
    Ok(())
}

/// Each `.rpm`, installed with `rpm --root` into a system before it boots: the scriptlets
/// create the user and enable the unit by its preset (RPM convention: not started); booted,
/// the service starts with its user and capabilities and reloads (the agent); `rpm -e` in
/// the running system stops and disables it and takes the files away.
#[test]
fn rpms_install_offline_then_start_and_erase_under_systemd() -> Result<()> {
    require_root();
    let packages = Packages::get()?;
    for (name, capabilities) in [
        (
            "egret-gateway",
            &["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"][..],
        ),
        (
            "egret-agent",
            &["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"][..],
        ),
    ] {
        let rpm = packages.rpm(name)?;
        let tag = format!("inst-rpm-{}", name.trim_start_matches("egret-"));
        let mut machine = Machine::prepare(&tag)?;
        let root = machine.container.root();
        let said = egret_lab::check_output(
            std::process::Command::new("rpm")
                .arg("--root")
                .arg(&root)
                .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps"])
                .arg(&rpm),
        )?;
        eprintln!("rpm --root -i {name}: {said}");
        // A link to /usr/lib/systemd/system/NAME.service, which only resolves inside.
        let wants = root.join(format!(
            "etc/systemd/system/multi-user.target.wants/{name}.service"
        ));
        ensure!(
            wants.symlink_metadata().is_ok(),
            "{name} is not enabled by its preset"
        );
        let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
        ensure!(passwd.contains(&format!("\n{name}:")), "no user {name}");
        machine.container.boot()?;
        let c = &machine.container;
        let unit = format!("{name}.service");
        ensure!(property(c, &unit, "UnitFileState")? == "enabled");
        // Enabled, so started at boot, and failed: the default config does not check (the
        // agent, in a container, fails even before that: nspawn's /sys has no /sys/fs/bpf
        // until the test mounts one, where a host's always has).
        ensure!(property(c, &unit, "ActiveState")? != "active");
        if name == "egret-gateway" {
            let journal = c.journal(&unit)?;
            ensure!(journal.contains("error: gateway.interface"), "{journal}");
        }
        verify_unit(c, &unit)?;
        if name == "egret-gateway" {
            c.write_file("/etc/egret/gateway.toml", gateway_config(""))?;
        } else {
            c.mount_bpffs()?;
            ok(c, "systemd-tmpfiles --create egret-agent.conf")?;
            c.write_file("/etc/egret/agent.toml", agent_config("203.0.113.0/24"))?;
        }
        ok(c, &format!("systemctl reset-failed {unit}"))?;
        start(c, &unit)?;
        check_credentials(c, &unit, name, capabilities)?;
        let (reloaded, said) = sh(c, &format!("systemctl reload {unit}"))?;
        ensure!(reloaded, "reload: {said}");
        c.wait_until(Duration::from_secs(10), "the reload is applied", |c| {
            Ok(c.journal(&unit)?.contains("config reloaded"))
        })?;
        ok(c, &format!("rpm --dbpath /var/lib/rpm -e {name}"))?;
        ensure!(property(c, &unit, "ActiveState")? == "inactive");
        ok(
            c,
            &format!(
                "! test -e /usr/bin/{name} && ! test -e /etc/systemd/system/multi-user.target.wants/{unit}"
            ),
        )?;
        ok(c, &format!("! rpm --dbpath /var/lib/rpm -q {name}"))?;
    }
    Ok(())
}

/// The Vagrant lab's gateway provisioning script, run as it is on a booted Debian system
/// with the real package: it installs, configures, starts and waits for the gateway; run
/// again with the same arguments it changes nothing.
#[test]
fn vagrant_gateway_provisioning_installs_and_starts_the_gateway() -> Result<()> {
    require_root();
    let packages = Packages::get()?;
    let deb = packages.deb("egret-gateway")?;
    let machine = Machine::boot("inst-vagrant")?;
    let c = &machine.container;
    let script =
        std::fs::read(egret_lab::packages::workspace().join("vagrant/provision/gateway.sh"))?;
    c.write_file("/root/gateway.sh", script)?;
    let provision = format!(
        "bash /root/gateway.sh --deb {} --interface eth0 --allowed-sources 192.168.77.0/24 \
         --next-hop {PEER} --floating-ip {FLOATING_IP}:77 --name gw-vagrant --timeout 30",
        inside(&deb)
    );
    let said = ok(c, &provision)?;
    eprintln!("gateway.sh:\n{said}");
    ensure!(property(c, "egret-gateway.service", "ActiveState")? == "active");
    let pid = c.main_pid("egret-gateway.service")?;
    let status = ok(c, "egret-gateway status")?;
    ensure!(status.contains(FLOATING_IP), "{status}");
    let again = ok(c, &provision)?;
    ensure!(
        c.main_pid("egret-gateway.service")? == pid,
        "a second run with the same arguments restarted the gateway:\n{again}"
    );
    Ok(())
}
