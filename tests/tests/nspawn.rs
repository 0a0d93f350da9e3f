//! The container module's own guarantees: containers boot to `running` with real systemd, run
//! commands inside, never share the host's network, join lab namespaces, keep their units apart,
//! take files and packages before boot, and leave nothing behind when dropped, when their test
//! panics or when their run is killed. Needs root (and builds the cached rootfs on first use,
//! about two minutes).

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::{MetadataExt as _, symlink},
    panic::{self, AssertUnwindSafe},
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    NetNs, check_output,
    nspawn::{Container, Footprint, NETWORK_CAPABILITIES, Rootfs, alive, reap_stale_containers},
    require_root, run_prefix, veth_pair,
};

/// Fails with what is left of a dropped container.
fn ensure_gone(footprint: &Footprint) -> Result<()> {
    let remains = footprint.remains()?;
    ensure!(remains.is_empty(), "left behind: {remains:?}");
    Ok(())
}

/// The inode of a network namespace file, which identifies the namespace.
fn netns_inode(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .ino())
}

#[test]
fn a_private_container_boots_runs_commands_and_leaves_nothing() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let started = Instant::now();
    let machine = Container::builder("private").boot(&rootfs)?;
    eprintln!("booted to running in {:.2?}", started.elapsed());

    let state = machine.system_state()?;
    ensure!(
        state == "running",
        "system {state}: {}",
        machine.run(&["systemctl", "--failed", "--no-pager"])?
    );
    let release = machine.read_to_string("/etc/os-release")?;
    ensure!(release.contains("bookworm"), "{release}");
    let hostname = machine.run(&["hostname"])?;
    ensure!(hostname.trim() == machine.name(), "host name {hostname:?}");

    // Its own network: a namespace other than the host's, with nothing but lo.
    let pid1 = machine.pid1().context("running container has an init")?;
    ensure!(
        netns_inode(format!("/proc/{pid1}/ns/net"))? != netns_inode("/proc/self/ns/net")?,
        "the container shares the host's network namespace"
    );
    let links = machine.run(&["ip", "-o", "link", "show"])?;
    let names: Vec<&str> = links
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .collect();
    ensure!(names == ["lo"], "links inside: {links}");

    // Files go in and out through the container's own view, /run (its tmpfs) included.
    machine.write_file("/run/egret/probe", b"hello\n")?;
    ensure!(machine.run(&["cat", "/run/egret/probe"])? == "hello\n");
    ensure!(machine.read_file("/run/egret/probe")? == b"hello\n");
    let failed = machine.exec(&["cat", "/nonexistent"])?;
    ensure!(!failed.status.success(), "cat of a missing file succeeded");
    let err = machine
        .run(&["cat", "/nonexistent"])
        .expect_err("run fails with the command");
    ensure!(format!("{err:#}").contains("No such file"), "{err:#}");

    let err = machine
        .write_file("/proc/egret", b"x")
        .expect_err("/proc takes no new files");
    ensure!(format!("{err:#}").contains("/proc/egret"), "{err:#}");
    let err = machine
        .systemctl("start", "egret-missing.service")
        .expect_err("no such unit");
    ensure!(
        format!("{err:#}").contains("egret-missing.service not found"),
        "{err:#}"
    );

    // The environment is the container's, not the test's.
    let env = machine.run(&["env"])?;
    ensure!(!env.contains("CARGO"), "test environment leaked in: {env}");
    ensure!(
        env.lines()
            .any(|line| line.starts_with("PATH=/usr/local/sbin")),
        "{env}"
    );
    let journal = machine.journal("systemd-journald.service")?;
    ensure!(!journal.trim().is_empty(), "journald's journal is empty");
    let init = machine.proc_status(1)?;
    ensure!(init["Name"] == "systemd", "{init:?}");
    let console = machine.console();
    ensure!(console.contains("Welcome to Debian"), "{console}");
    ensure!(!console.contains("FAILED"), "{console}");

    let footprint = machine.footprint();
    ensure!(
        footprint.remains()?.len() >= 2,
        "footprint sees the live container"
    );
    let stopping = Instant::now();
    drop(machine);
    eprintln!("powered off and removed in {:.2?}", stopping.elapsed());
    ensure_gone(&footprint)
}

#[test]
fn a_container_in_a_lab_namespace_sees_its_interfaces() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let lan = NetNs::new("ct-lan")?;
    let peer = NetNs::new("ct-peer")?;
    let (gw, _peer_if) = veth_pair(&lan, "gw0", &peer, "peer0")?;
    gw.add_address("198.18.0.1/24")?;

    let machine = Container::builder("in-lan")
        .netns(&lan)
        .capabilities(NETWORK_CAPABILITIES.iter().copied())
        .boot(&rootfs)?;
    let pid1 = machine.pid1().context("running container has an init")?;
    ensure!(
        netns_inode(format!("/proc/{pid1}/ns/net"))? == netns_inode(lan.path())?,
        "the container is not in {}",
        lan.name()
    );
    let addresses = machine.run(&["ip", "-o", "address", "show", "dev", "gw0"])?;
    ensure!(addresses.contains("198.18.0.1/24"), "{addresses}");
    // Its sysfs is the namespace's too: /sys/class/net lists the namespace's interfaces,
    // not the host's.
    let listed = machine.run(&["ls", "/sys/class/net"])?;
    let mut listed: Vec<&str> = listed.split_whitespace().collect();
    listed.sort_unstable();
    ensure!(listed == ["gw0", "lo"], "/sys/class/net: {listed:?}");

    // The capabilities asked for reach the container's init, and nftables works in there:
    // a table made inside is seen from the lab namespace.
    let cap_eff = u64::from_str_radix(&machine.proc_status(1)?["CapEff"], 16)?;
    for (bit, name) in [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ] {
        ensure!(cap_eff & (1 << bit) != 0, "{name} missing: {cap_eff:#x}");
    }
    machine.run(&["nft", "add", "table", "inet", "egret_probe"])?;
    let tables = lan.exec("nft", ["list", "tables"])?;
    ensure!(tables.contains("egret_probe"), "{tables}");

    let footprint = machine.footprint();
    drop(machine);
    ensure_gone(&footprint)?;
    ensure!(
        lan.ip(["-o", "link", "show", "dev", "gw0"]).is_ok(),
        "the lab namespace lost its interface"
    );
    Ok(())
}

/// A unit that runs as nobody with one ambient capability: what a test reads of egret's
/// daemons.
const PROBE_UNIT: &str = "\
[Unit]
Description=egret lab probe

[Service]
ExecStart=/bin/sleep infinity
User=nobody
AmbientCapabilities=CAP_NET_ADMIN
CapabilityBoundingSet=CAP_NET_ADMIN

[Install]
WantedBy=multi-user.target
";

#[test]
fn prepared_containers_take_files_offline_and_keep_their_units_apart() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let mut machines = Vec::new();
    for name in ["units-a", "units-b"] {
        let machine = Container::builder(name).prepare(&rootfs)?;
        // Offline: files through the container's root, links made on the host.
        machine.write_file("/etc/systemd/system/egret-probe.service", PROBE_UNIT)?;
        symlink(
            "/etc/systemd/system/egret-probe.service",
            machine
                .root()
                .join("etc/systemd/system/multi-user.target.wants/egret-probe.service"),
        )?;
        machines.push(machine);
    }
    // Both boot at once.
    let started = Instant::now();
    std::thread::scope(|scope| {
        let boots: Vec<_> = machines
            .iter_mut()
            .map(|machine| scope.spawn(|| machine.boot()))
            .collect();
        boots
            .into_iter()
            .map(|boot| boot.join().expect("boot thread"))
            .collect::<Result<Vec<()>>>()
    })?;
    eprintln!("two containers booted in {:.2?}", started.elapsed());
    let [a, b] = &mut machines[..] else {
        bail!("two machines")
    };
    let pids = [
        a.main_pid("egret-probe.service")?,
        b.main_pid("egret-probe.service")?,
    ];
    for (machine, pid) in [(&*a, pids[0]), (&*b, pids[1])] {
        let status = machine.proc_status(pid)?;
        ensure!(status["Uid"].starts_with("65534\t"), "{status:?}");
        ensure!(status["CapAmb"] == "0000000000001000", "{status:?}");
        ensure!(status["CapEff"] == "0000000000001000", "{status:?}");
    }

    // Stopping the unit in one container leaves the other's alone (separate cgroups).
    a.systemctl("stop", "egret-probe.service")?;
    ensure!(
        a.main_pid("egret-probe.service").is_err(),
        "still running in a"
    );
    ensure!(
        b.main_pid("egret-probe.service")? == pids[1],
        "stopping the unit in a touched b: {}",
        b.journal("egret-probe.service")?
    );

    // Power off and boot again on the same root: the enabled unit starts by itself.
    a.poweroff()?;
    ensure!(a.pid1().is_none());
    a.boot()?;
    a.main_pid("egret-probe.service")?;

    let footprints: Vec<Footprint> = machines.iter().map(Container::footprint).collect();
    drop(machines);
    footprints.iter().try_for_each(ensure_gone)
}

/// A package as egret's will be: a unit that runs as nobody with one ambient capability and
/// reloads on SIGHUP, and dependencies the image must already hold (the container has no
/// network to fetch them).
const DEB_CONTROL: &str = "\
Package: egret-lab-probe
Version: 1.0
Architecture: all
Maintainer: egret lab <lab@example.invalid>
Depends: nftables, iproute2
Description: egret lab probe
";
const DEB_UNIT: &str = r#"[Unit]
Description=egret lab probe (packaged)

[Service]
User=nobody
RuntimeDirectory=egret-lab-probe
ExecStart=/bin/sh -c 'trap "echo reloaded >> /run/egret-lab-probe/reloads" HUP; while :; do sleep 1 & wait $!; done'
ExecReload=/bin/kill -HUP $MAINPID
AmbientCapabilities=CAP_NET_ADMIN
CapabilityBoundingSet=CAP_NET_ADMIN
"#;

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            eprintln!("removing {}: {err}", self.0.display());
        }
    }
}

#[test]
fn a_deb_installs_and_its_unit_starts_reloads_and_stops() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let dir = TempDir(std::env::temp_dir().join(format!("{}-deb", run_prefix())));
    let tree = dir.0.join("tree");
    std::fs::create_dir_all(tree.join("DEBIAN"))?;
    std::fs::create_dir_all(tree.join("lib/systemd/system"))?;
    std::fs::write(tree.join("DEBIAN/control"), DEB_CONTROL)?;
    std::fs::write(
        tree.join("lib/systemd/system/egret-lab-probe.service"),
        DEB_UNIT,
    )?;
    let packages = dir.0.join("packages");
    std::fs::create_dir_all(&packages)?;
    check_output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&tree)
            .arg(packages.join("egret-lab-probe.deb")),
    )?;

    let machine = Container::builder("deb")
        .bind_ro(&packages, "/packages")
        .boot(&rootfs)?;
    machine.run(&["dpkg", "-i", "/packages/egret-lab-probe.deb"])?;
    machine.run(&["systemctl", "daemon-reload"])?;
    let unit = "egret-lab-probe.service";
    machine.systemctl("start", unit)?;
    let pid = machine.main_pid(unit)?;
    let status = machine.proc_status(pid)?;
    ensure!(status["Uid"].starts_with("65534\t"), "{status:?}");
    ensure!(status["CapEff"] == "0000000000001000", "{status:?}");
    ensure!(status["CapAmb"] == "0000000000001000", "{status:?}");

    machine.systemctl("reload", unit)?;
    machine
        .wait_until(Duration::from_secs(10), "reload", |machine| {
            Ok(machine
                .read_to_string("/run/egret-lab-probe/reloads")
                .is_ok_and(|reloads| reloads.contains("reloaded")))
        })
        .with_context(|| machine.journal(unit).unwrap_or_default())?;
    ensure!(
        machine.main_pid(unit)? == pid,
        "the reload restarted the unit"
    );

    machine.systemctl("stop", unit)?;
    ensure!(machine.main_pid(unit).is_err(), "{unit} still runs");
    let journal = machine.journal(unit)?;
    ensure!(journal.contains("Stopped"), "{journal}");
    Ok(())
}

/// An RPM as egret's will be, built with rpmbuild: one unit, no scriptlets.
const RPM_SPEC: &str = r#"Name: egret-lab-probe
Version: 1.0
Release: 1
Summary: egret lab probe
License: Apache-2.0
BuildArch: noarch

%description
egret lab probe

%install
mkdir -p %{buildroot}/usr/lib/systemd/system
cat > %{buildroot}/usr/lib/systemd/system/egret-lab-probe.service <<'UNIT'
[Service]
ExecStart=/bin/sleep infinity
UNIT

%files
/usr/lib/systemd/system/egret-lab-probe.service
"#;

#[test]
fn an_rpm_installed_before_boot_runs_its_unit() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let dir = TempDir(std::env::temp_dir().join(format!("{}-rpm", run_prefix())));
    std::fs::create_dir_all(dir.0.join("SPECS"))?;
    let spec = dir.0.join("SPECS/probe.spec");
    std::fs::write(&spec, RPM_SPEC)?;
    let mut topdir = std::ffi::OsString::from("_topdir ");
    topdir.push(&dir.0);
    check_output(
        Command::new("rpmbuild")
            .args(["-bb", "--quiet", "--define"])
            .arg(topdir)
            .arg(&spec),
    )?;
    let rpm = dir.0.join("RPMS/noarch/egret-lab-probe-1.0-1.noarch.rpm");

    // Installed offline into the container's root, as a test of egret's RPM will.
    let mut machine = Container::builder("rpm").prepare(&rootfs)?;
    check_output(
        Command::new("rpm")
            .arg("--root")
            .arg(machine.root())
            .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps"])
            .arg(&rpm),
    )?;
    machine.boot()?;
    let unit = "egret-lab-probe.service";
    machine.systemctl("start", unit)?;
    machine.main_pid(unit)?;
    let installed = check_output(Command::new("rpm").arg("--root").arg(machine.root()).args([
        "--dbpath",
        "/var/lib/rpm",
        "-q",
        "egret-lab-probe",
    ]))?;
    ensure!(
        installed.starts_with("egret-lab-probe-1.0-1"),
        "{installed}"
    );
    Ok(())
}

#[test]
fn a_container_is_removed_when_its_test_panics() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let footprint = Mutex::new(None);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let machine = Container::builder("panics").boot(&rootfs)?;
        *footprint.lock().expect("no panic holding it") = Some(machine.footprint());
        panic!("a test failing with a container up");
    }));
    let message = outcome
        .expect_err("the test panicked")
        .downcast::<&str>()
        .map(|message| *message)
        .unwrap_or("?");
    ensure!(message == "a test failing with a container up", "{message}");
    let footprint = footprint
        .into_inner()
        .expect("no panic holding it")
        .context("the container booted")?;
    ensure_gone(&footprint)
}

#[test]
fn a_boot_that_times_out_says_why_and_leaves_nothing() -> Result<()> {
    require_root();
    let rootfs = Rootfs::cached()?;
    let mut machine = Container::builder("too-slow")
        .boot_timeout(Duration::ZERO)
        .prepare(&rootfs)?;
    let err = machine.boot().expect_err("nothing boots in no time");
    let message = format!("{err:#}");
    ensure!(message.contains("within 0ns"), "{message}");
    ensure!(
        machine.pid1().is_none(),
        "a failed boot left the container running"
    );
    let footprint = machine.footprint();
    drop(machine);
    ensure_gone(&footprint)
}

/// Set in the environment of the helper run that boots a container and waits to be killed.
const CRASH_HELPER: &str = "EGRET_LAB_NSPAWN_CRASH_HELPER";

/// Not a test: the process [`a_killed_runs_container_is_reaped_by_the_next`] kills.
#[test]
#[ignore = "run by a_killed_runs_container_is_reaped_by_the_next"]
fn crashed_run_helper() -> Result<()> {
    if std::env::var_os(CRASH_HELPER).is_none() {
        return Ok(());
    }
    let machine = Container::builder("crashed").boot(&Rootfs::cached()?)?;
    println!(
        "booted {} {}",
        machine.name(),
        machine.pid1().context("running container has an init")?
    );
    loop {
        std::thread::park();
    }
}

#[test]
fn a_killed_runs_container_is_reaped_by_the_next() -> Result<()> {
    require_root();
    // The rootfs is built here, not in the helper, so the helper only boots.
    Rootfs::cached()?;
    let mut helper = Command::new(std::env::current_exe()?)
        .args(["--ignored", "--exact", "crashed_run_helper", "--nocapture"])
        .env(CRASH_HELPER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the helper run")?;
    let stdout = helper.stdout.take().context("helper's stdout")?;
    let booted = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("booted ").map(str::to_owned));
    // The run dies without any cleanup, its container still up.
    helper.kill()?;
    helper.wait()?;
    let booted = booted.context("the helper run exited before its container booted")?;
    let (name, pid1) = booted.split_once(' ').context("booted <name> <pid1>")?;
    let pid1: u32 = pid1.parse()?;
    let footprint = Footprint::of_machine(name)?;
    ensure!(
        !footprint.remains()?.is_empty() && alive(pid1),
        "the killed run's container is already gone"
    );

    let reaped = reap_stale_containers()?;
    eprintln!("reaped {reaped:?}");
    ensure_gone(&footprint)?;
    ensure!(
        !alive(pid1),
        "the killed run's container init {pid1} still runs"
    );
    Ok(())
}
