//! Minimal Debian systems booted with real systemd in `systemd-nspawn` containers: to install
//! egret's packages into, start, reload and stop its units, and run its daemons in lab
//! namespaces, as on a real machine.
//!
//! [`Rootfs::cached`] builds a Debian rootfs once per machine (debootstrap, cached under
//! `$EGRET_CACHE`). A [`Container`] boots a cheap per-test copy of it: an overlay whose lower
//! layer is the cached rootfs (never written) and whose upper layer lives in the container's work
//! directory, `/tmp/egret-lab-nspawn/<machine>`. [`Builder::prepare`] mounts the overlay without
//! booting, so files and packages (`rpm --root`) can go in offline; [`Container::boot`] starts
//! `systemd-nspawn --boot` and returns once systemd reports the system running.
//!
//! Invariants:
//! - A container never shares the host's network: it has a private network namespace (only
//!   `lo`) or joins a lab namespace ([`Network`]); there is no third choice.
//! - Each container runs in a cgroup of its own, `<this process's cgroup>/<machine>`. Without a
//!   systemd on the host, `nspawn --keep-unit` puts the container in `payload/` below its own
//!   cgroup; two containers started from one cgroup would share `payload/system.slice/X.service`,
//!   and stopping a unit in one would kill the other's. The cgroup also kills a container whole
//!   when it does not power off.
//! - Machines are named `<run prefix>-<name>` ([`run_prefix`]). A container's
//!   `Drop` powers it off (killing it after a bound), and removes its cgroups, overlay and work
//!   directory, also during a panic; what runs that died left behind (their pid is gone) is
//!   removed when a process prepares its first container ([`reap_stale_containers`]). That
//!   assumes runs start from the same cgroup, as on a host without systemd or in one CI job: a
//!   stale container is looked for below this process's own cgroup.
//!
//! Containers need root and a cgroup2 hierarchy (unified or hybrid host).

mod host;
mod rootfs;

pub use host::alive;
pub use rootfs::{MASKED_UNITS, MIRROR, PACKAGES, Rootfs, SUITE, cache_dir};

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::{CString, OsStr},
    fs::{self, OpenOptions},
    io::{self, Write as _},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::Once,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

use self::host::{
    Cgroups, HOST_PATH, child_named, kill_cgroup, mounts_under, poll, process, remove_cgroup,
    unmount,
};
use crate::{
    command::{check_output, command_line},
    netns::{NetNs, fail_in_drop, owner_pid, run_prefix},
};

/// Where containers' work directories live: a fixed place, so a later run finds what a crashed
/// one left whatever its `TMPDIR`.
const WORK_BASE: &str = "/tmp/egret-lab-nspawn";
/// Where nspawn keeps a directory per machine for `machinectl bind`.
const NSPAWN_PROPAGATE: &str = "/run/systemd/nspawn/propagate";
/// The environment of commands run inside a container: nothing of the test's own.
const CONTAINER_ENV: &[(&str, &str)] = &[
    ("PATH", HOST_PATH),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "dumb"),
    ("SYSTEMD_COLORS", "0"),
    ("SYSTEMD_PAGER", "cat"),
    ("PAGER", "cat"),
];
/// Capabilities egret's daemons use that nspawn does not grant by default: CAP_NET_ADMIN only
/// with `--private-network`, CAP_BPF and CAP_PERFMON never.
pub const NETWORK_CAPABILITIES: &[&str] =
    &["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"];
/// How long a boot may take by default: about a second on an idle machine, much longer while
/// two cores also compile.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a clean power-off may take before the container is killed (about two seconds).
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// Console lines quoted in errors.
const CONSOLE_TAIL: usize = 60;

/// The network a container lives in.
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// A namespace of its own with only `lo` (`--private-network`).
    #[default]
    Private,
    /// An existing network namespace, such as a lab [`NetNs`]'s path
    /// (`--network-namespace-path=`).
    Namespace(PathBuf),
}

/// How a container is made; see [`Container::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    name: String,
    network: Network,
    capabilities: Vec<String>,
    binds: Vec<Bind>,
    boot_timeout: Duration,
}

/// A host path shown inside a container.
#[derive(Debug, Clone)]
struct Bind {
    host: PathBuf,
    inside: PathBuf,
    read_only: bool,
}

impl Builder {
    /// The container's network (private unless set).
    #[must_use]
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Puts the container in the lab namespace `netns`: it sees that namespace's interfaces.
    #[must_use]
    pub fn netns(self, netns: &NetNs) -> Self {
        self.network(Network::Namespace(netns.path()))
    }

    /// Grants capabilities beyond nspawn's default set, e.g. [`NETWORK_CAPABILITIES`]. Those
    /// outside this process's bounding set are left out by nspawn (with a note on the console).
    #[must_use]
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities
            .extend(capabilities.into_iter().map(Into::into));
        self
    }

    /// Shows the host directory or file `host` read-only at `inside` (`--bind-ro=`).
    #[must_use]
    pub fn bind_ro(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            read_only: true,
        });
        self
    }

    /// Shows the host directory or file `host` writable at `inside` (`--bind=`).
    #[must_use]
    pub fn bind(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            read_only: false,
        });
        self
    }

    /// How long [`Container::boot`] waits for systemd to report the system up.
    #[must_use]
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Makes the container's root, an overlay on `rootfs`, without booting it: write files with
    /// [`Container::write_file`] or install packages into [`Container::root`] with host tools,
    /// then [`Container::boot`].
    ///
    /// # Errors
    ///
    /// When an option is invalid, the name is taken in this run, or the overlay cannot be
    /// mounted.
    pub fn prepare(self, rootfs: &Rootfs) -> Result<Container> {
        static REAP: Once = Once::new();
        REAP.call_once(|| {
            if let Err(err) = reap_stale_containers() {
                eprintln!("egret-lab: could not remove stale containers: {err:#}");
            }
        });
        self.check()?;
        let place = Place::new(&format!("{}-{}", run_prefix(), self.name))?;
        ensure!(
            !place.work.exists(),
            "container {} exists already in this run",
            place.name
        );
        let lower = rootfs.path();
        ensure!(
            lower.join("usr/lib/systemd/systemd").exists(),
            "{} is not a rootfs with systemd",
            lower.display()
        );
        ensure!(
            !lower
                .as_os_str()
                .as_bytes()
                .iter()
                .any(|b| matches!(b, b',' | b':' | b'\\')),
            "rootfs path {} holds a ',', ':' or '\\', which overlayfs options cannot carry",
            lower.display()
        );
        let container = Container {
            place,
            options: self,
            running: None,
        };
        // From here on the container's Drop removes whatever was made.
        let place = &container.place;
        for dir in [place.upper(), place.overlay_work(), place.root()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut options = std::ffi::OsString::from("lowerdir=");
        options.push(lower);
        options.push(",upperdir=");
        options.push(place.upper());
        options.push(",workdir=");
        options.push(place.overlay_work());
        check_output(
            Command::new("mount")
                .args(["-t", "overlay", &place.name, "-o"])
                .arg(options)
                .arg(place.root())
                .env("PATH", HOST_PATH),
        )?;
        Ok(container)
    }

    /// Prepares and boots the container: [`Builder::prepare`] then [`Container::boot`].
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn boot(self, rootfs: &Rootfs) -> Result<Container> {
        let mut container = self.prepare(rootfs)?;
        container.boot()?;
        Ok(container)
    }

    fn check(&self) -> Result<()> {
        let name = &self.name;
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "container name {name:?}: use lower-case letters, digits and dashes"
        );
        // The machine name is also the container's host name: at most 64 characters.
        let machine = run_prefix().len() + 1 + name.len();
        ensure!(
            machine <= 64,
            "container name {name:?} is too long ({machine} characters with the run prefix, \
             at most 64)"
        );
        if let Network::Namespace(path) = &self.network {
            ensure!(
                path.exists(),
                "network namespace {} does not exist",
                path.display()
            );
        }
        for capability in &self.capabilities {
            ensure!(
                capability
                    .strip_prefix("CAP_")
                    .is_some_and(|rest| !rest.is_empty()
                        && rest.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')),
                "{capability:?} is not a capability name like CAP_NET_ADMIN"
            );
        }
        for Bind { host, inside, .. } in &self.binds {
            ensure!(
                host.exists(),
                "bind source {} does not exist",
                host.display()
            );
            ensure!(
                inside.is_absolute(),
                "bind target {} is not absolute",
                inside.display()
            );
            for path in [host, inside] {
                ensure!(
                    !path.as_os_str().as_bytes().contains(&b':'),
                    "bind path {} holds a ':', which nspawn takes as a separator",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Everything a container occupies on the host, derived from its machine name alone, so a later
/// run can find and remove what a crashed one left.
#[derive(Debug)]
struct Place {
    name: String,
    work: PathBuf,
    cgroups: Cgroups,
}

impl Place {
    fn new(name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            work: Path::new(WORK_BASE).join(name),
            cgroups: Cgroups::own()?.join(name),
        })
    }

    /// The overlay's mount point: the container's `/`.
    fn root(&self) -> PathBuf {
        self.work.join("root")
    }

    fn upper(&self) -> PathBuf {
        self.work.join("upper")
    }

    fn overlay_work(&self) -> PathBuf {
        self.work.join("overlay-work")
    }

    fn console(&self) -> PathBuf {
        self.work.join("console.log")
    }

    fn propagate(&self) -> PathBuf {
        Path::new(NSPAWN_PROPAGATE).join(&self.name)
    }

    /// Removes all of it, in order: the processes in its cgroup, the cgroups, the mounts, the
    /// directories. Goes on after a failure and reports them all; removing twice is harmless.
    fn remove(&self) -> Result<()> {
        let mut failures = Vec::new();
        let mut attempt = |result: Result<()>| {
            if let Err(err) = result {
                failures.push(format!("{err:#}"));
            }
        };
        attempt(kill_cgroup(&self.cgroups.unified));
        for cgroup in self.cgroups.all() {
            attempt(remove_cgroup(cgroup));
        }
        attempt(self.unmount());
        for dir in [self.work.clone(), self.propagate()] {
            attempt(remove_unmounted(&dir));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("removing container {}: {}", self.name, failures.join("; "))
        }
    }

    /// Unmounts the overlay and anything below the work directory; a busy mount is detached
    /// anyway (so the next run is not blocked), and reported.
    fn unmount(&self) -> Result<()> {
        let mut busy = Vec::new();
        for point in mounts_under(&self.work)? {
            if let Err(err) = unmount(&point, false) {
                unmount(&point, true)?;
                busy.push(format!("{err:#}"));
            }
        }
        ensure!(
            busy.is_empty(),
            "mounts were busy (detached lazily): {}",
            busy.join("; ")
        );
        Ok(())
    }
}

/// Deletes `dir` unless something is mounted below it (deleting would reach into that).
fn remove_unmounted(dir: &Path) -> Result<()> {
    let mounts = mounts_under(dir)?;
    ensure!(
        mounts.is_empty(),
        "not deleting {}: {} still mounted there",
        dir.display(),
        mounts.len()
    );
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("deleting {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Removes containers of runs whose process is gone (processes, cgroups, overlays, work
/// directories); returns their machine names. Runs by itself before a process's first
/// container; containers of live runs are left alone.
///
/// # Errors
///
/// When something stale cannot be removed.
pub fn reap_stale_containers() -> Result<Vec<String>> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![PathBuf::from(WORK_BASE), PathBuf::from(NSPAWN_PROPAGATE)];
    dirs.extend(Cgroups::own()?.all().map(Path::to_owned));
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(pid) = owner_pid(name) else { continue };
            if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
                names.insert(name.to_owned());
            }
        }
    }
    let failures: Vec<String> = names
        .iter()
        .filter_map(|name| {
            Place::new(name)
                .and_then(|place| place.remove())
                .err()
                .map(|err| format!("{err:#}"))
        })
        .collect();
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(names.into_iter().collect())
}

/// A booted (or prepared, or powered-off) Debian system; see the [module](self) docs.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use egret_lab::nspawn::{Container, Rootfs};
/// let rootfs = Rootfs::cached()?;
/// let machine = Container::builder("deb").bind_ro("target/debian", "/packages").boot(&rootfs)?;
/// machine.run(&["dpkg", "-i", "/packages/egret-gateway.deb"])?;
/// machine.systemctl("start", "egret-gateway.service")?;
/// let pid = machine.main_pid("egret-gateway.service")?;
/// let status = machine.proc_status(pid)?;
/// assert_eq!(status["CapAmb"], "0000000000000000");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Container {
    place: Place,
    options: Builder,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    nspawn: Child,
    /// The container's init as the host sees it, once found.
    pid1: Option<u32>,
}

impl Container {
    /// A container named `name` (lower-case letters, digits, dashes); its machine name and host
    /// name get the run prefix. Private network, nspawn's default capabilities, no binds.
    pub fn builder(name: &str) -> Builder {
        Builder {
            name: name.to_owned(),
            network: Network::Private,
            capabilities: Vec::new(),
            binds: Vec::new(),
            boot_timeout: BOOT_TIMEOUT,
        }
    }

    /// The machine name, also the container's host name.
    pub fn name(&self) -> &str {
        &self.place.name
    }

    /// The container's `/` as the host sees it: the overlay's merged directory. Host tools can
    /// install into it before boot (`rpm --root`). While the container runs, its own mounts
    /// (`/run`, `/tmp`, `/proc`) are not visible here; use [`Container::write_file`].
    pub fn root(&self) -> PathBuf {
        self.place.root()
    }

    /// The container's work directory (overlay layers and `console.log`).
    pub fn work_dir(&self) -> &Path {
        &self.place.work
    }

    /// The host pid of the container's init, while it runs.
    pub fn pid1(&self) -> Option<u32> {
        self.running.as_ref().and_then(|running| running.pid1)
    }

    /// What nspawn and the container's systemd wrote to the console, all boots so far.
    pub fn console(&self) -> String {
        fs::read_to_string(self.place.console()).unwrap_or_default()
    }

    /// Boots the container and waits until systemd reports the system `running` (or
    /// `degraded`, which is printed with the failed units).
    ///
    /// # Errors
    ///
    /// When nspawn fails, the container's init does not appear, or the system is not up within
    /// the boot timeout; the error carries the console's end and systemd's failed units and
    /// pending jobs.
    pub fn boot(&mut self) -> Result<()> {
        ensure!(self.running.is_none(), "{} is already running", self.name());
        let Err(err) = self.start() else {
            return Ok(());
        };
        // Nothing to power off cleanly in a system that did not come up.
        match self.kill() {
            Ok(()) => Err(err),
            Err(kill) => bail!("{err:#}\n(killing it afterwards failed too: {kill:#})"),
        }
    }

    fn start(&mut self) -> Result<()> {
        for cgroup in self.place.cgroups.all() {
            match fs::create_dir(cgroup) {
                Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(err)
                        .with_context(|| format!("creating cgroup {}", cgroup.display()));
                }
                _ => {}
            }
        }
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.place.console())
            .context("opening the console log")?;
        let mut command = self.nspawn_command()?;
        command
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        let nspawn = command
            .spawn()
            .with_context(|| format!("starting `{}`", command_line(&command)))?;
        self.running = Some(Running { nspawn, pid1: None });

        let timeout = self.options.boot_timeout;
        let started = std::time::Instant::now();
        let pid1 = poll(timeout, Duration::from_millis(10), || {
            let nspawn = self.nspawn()?;
            child_named(nspawn, "systemd")
        })?;
        let Some(pid1) = pid1 else {
            bail!(
                "{}: no systemd started within {timeout:?}\n{}",
                self.name(),
                self.diagnosis()
            );
        };
        if let Some(running) = &mut self.running {
            running.pid1 = Some(pid1);
        }

        let mut last = String::new();
        let state = poll(
            timeout.saturating_sub(started.elapsed()),
            Duration::from_millis(50),
            || {
                self.nspawn()?;
                last = self.system_state().unwrap_or_default();
                match last.as_str() {
                    "running" | "degraded" => Ok(Some(last.clone())),
                    "maintenance" | "stopping" => {
                        bail!("{}: the system is {last} instead of booting", self.name())
                    }
                    _ => Ok(None),
                }
            },
        );
        let state = match state {
            Ok(Some(state)) => state,
            Ok(None) => bail!(
                "{}: not up within {timeout:?} (last state {last:?})\n{}",
                self.name(),
                self.diagnosis()
            ),
            Err(err) => bail!("{err:#}\n{}", self.diagnosis()),
        };
        if state == "degraded" {
            eprintln!(
                "egret-lab: {} booted degraded:\n{}",
                self.name(),
                self.failed_units()
            );
        }
        Ok(())
    }

    /// nspawn's pid while it runs; an error with the console's end once it has exited.
    fn nspawn(&mut self) -> Result<u32> {
        let Some(running) = &mut self.running else {
            bail!("{} is not running", self.place.name);
        };
        if let Some(status) = running.nspawn.try_wait()? {
            bail!(
                "systemd-nspawn for {} exited ({status}); the console's end:\n{}",
                self.place.name,
                rootfs::tail(&self.console(), CONSOLE_TAIL)
            );
        }
        Ok(running.nspawn.id())
    }

    fn nspawn_command(&self) -> Result<Command> {
        let options = &self.options;
        let mut command = Command::new("systemd-nspawn");
        command
            .arg("--directory")
            .arg(self.root())
            .args(["--machine", self.name()])
            // No systemd on the host to register with or to make a scope: the container stays
            // in the cgroup it is started in, its own (see the pre_exec below).
            .args(["--register=no", "--keep-unit"])
            // A pseudo terminal whose output nspawn copies to the console log; with `pipe`,
            // the container has no /dev/console and systemd's boot messages are lost.
            .arg("--console=read-only")
            // Leave the host's journal, resolv.conf and time zone out of the container.
            .args(["--link-journal=no", "--resolv-conf=off", "--timezone=off"])
            .arg("--setenv=SYSTEMD_COLORS=0");
        match &options.network {
            Network::Private => command.arg("--private-network"),
            // --private-network as well: nspawn then mounts a sysfs of the container's own
            // namespace; without it /sys/class/net shows the host's interfaces.
            Network::Namespace(path) => command
                .arg("--private-network")
                .arg(format!("--network-namespace-path={}", path.display())),
        };
        if !options.capabilities.is_empty() {
            command.arg(format!("--capability={}", options.capabilities.join(",")));
        }
        if options.capabilities.iter().any(|c| c == "CAP_BPF") {
            // nspawn's own system call filter allows bpf() only with CAP_SYS_ADMIN.
            command.arg("--system-call-filter=bpf");
        }
        for Bind {
            host,
            inside,
            read_only,
        } in &options.binds
        {
            let flag = if *read_only { "--bind-ro" } else { "--bind" };
            command.arg(format!("{flag}={}:{}", host.display(), inside.display()));
        }
        command
            .arg("--boot")
            .env_clear()
            .env("PATH", HOST_PATH)
            // Signals for the test's process group (a terminal's ^C) do not reach it; Drop
            // stops it.
            .process_group(0);
        let procs = self
            .place
            .cgroups
            .all()
            .map(|cgroup| CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .context("cgroup path holds a NUL")?;
        // SAFETY: between fork and exec only async-signal-safe calls are allowed; open, write,
        // close, sigemptyset and sigprocmask are, and nothing is allocated (the paths were
        // made before the fork).
        unsafe {
            command.pre_exec(move || {
                // Into the container's own cgroups before nspawn reads where it is.
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let error = io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(error);
                    }
                }
                // Whatever this process blocks, nspawn must get its signals.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&raw mut set);
                if libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(command)
    }

    /// `nsenter --all` into the running container: `program` runs in all its namespaces with
    /// its root, and a clean environment: the container's `PATH`, `HOME=/root`, `LANG=C.UTF-8`,
    /// no colours or pager. Add arguments and run it like any [`Command`].
    ///
    /// # Errors
    ///
    /// When the container is not running.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command> {
        let pid1 = self
            .pid1()
            .with_context(|| format!("container {} is not running", self.name()))?;
        let mut command = Command::new("nsenter");
        command
            .arg("--target")
            .arg(pid1.to_string())
            .args(["--all", "--root", "--wd", "--"])
            .arg(program)
            .env_clear()
            .envs(CONTAINER_ENV.iter().copied());
        Ok(command)
    }

    /// Runs `argv` inside the container and returns its output, whatever its exit status.
    ///
    /// # Errors
    ///
    /// When the container is not running, `argv` is empty or nsenter cannot start.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        let (program, args) = argv.split_first().context("no command given")?;
        let mut command = self.command(program)?;
        command.args(args);
        command
            .output()
            .with_context(|| format!("running `{}`", command_line(&command)))
    }

    /// Runs `argv` inside the container and returns its standard output.
    ///
    /// # Errors
    ///
    /// As [`Container::exec`], and when the command fails; the error carries its standard
    /// error.
    pub fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<String> {
        let (program, args) = argv.split_first().context("no command given")?;
        check_output(self.command(program)?.args(args))
            .with_context(|| format!("in container {}", self.name()))
    }

    /// `systemctl <verb> <unit>` inside; a failure carries the unit's status and journal.
    ///
    /// # Errors
    ///
    /// When systemctl fails.
    pub fn systemctl(&self, verb: &str, unit: &str) -> Result<()> {
        match self.run(&["systemctl", verb, unit]) {
            Ok(_) => Ok(()),
            Err(err) => bail!("{err:#}\n{}", self.unit_report(unit)),
        }
    }

    /// The unit's main process (its pid inside the container).
    ///
    /// # Errors
    ///
    /// When the unit has no main process.
    pub fn main_pid(&self, unit: &str) -> Result<u32> {
        let pid = self.run(&["systemctl", "show", "--property=MainPID", "--value", unit])?;
        match pid.trim().parse() {
            Ok(0) | Err(_) => bail!(
                "{unit} has no main process (MainPID={})\n{}",
                pid.trim(),
                self.unit_report(unit)
            ),
            Ok(pid) => Ok(pid),
        }
    }

    /// The fields of `/proc/<pid>/status` of a process inside the container (pid as the
    /// container sees it), e.g. `CapEff`, `CapAmb`, `Uid`, `NoNewPrivs`.
    ///
    /// # Errors
    ///
    /// When the process does not exist.
    pub fn proc_status(&self, pid: u32) -> Result<BTreeMap<String, String>> {
        let status = self.read_to_string(format!("/proc/{pid}/status"))?;
        Ok(status
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
            .collect())
    }

    /// Mounts a BPF file system at `/sys/fs/bpf`, as a host's systemd does at boot and a
    /// container's does not. nspawn's `/sys` is a read-only tmpfs without that directory:
    /// it is made writable for the moment the mount point takes.
    ///
    /// # Errors
    ///
    /// When a mount fails.
    pub fn mount_bpffs(&self) -> Result<()> {
        self.run(&[
            "sh",
            "-c",
            "mountpoint -q /sys/fs/bpf && exit 0
             if [ ! -d /sys/fs/bpf ]; then
                 mount -o remount,rw /sys && mkdir /sys/fs/bpf && mount -o remount,ro /sys
             fi
             mount -t bpf -o mode=0700 bpf /sys/fs/bpf",
        ])?;
        Ok(())
    }

    /// `journalctl --unit <unit>` inside: the unit's log, for failure messages.
    ///
    /// # Errors
    ///
    /// When journalctl fails.
    pub fn journal(&self, unit: &str) -> Result<String> {
        self.run(&["journalctl", "--no-pager", "--unit", unit])
    }

    /// What `systemctl is-system-running` says (`running`, `degraded`, `starting`, ...).
    ///
    /// # Errors
    ///
    /// When it says nothing (the container is not running).
    pub fn system_state(&self) -> Result<String> {
        let output = self.exec(&["systemctl", "is-system-running"])?;
        let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        ensure!(
            !state.is_empty(),
            "systemctl is-system-running: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(state)
    }

    /// Polls `check` every 50 ms until it holds, for at most `timeout`: to wait for what a
    /// daemon does after a command returns (a file written, a journal line).
    ///
    /// # Errors
    ///
    /// When `check` fails, or does not hold in time (the error names `what`).
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let held = poll(timeout, Duration::from_millis(50), || {
            Ok(check(self)?.then_some(()))
        })?;
        ensure!(
            held.is_some(),
            "{}: no {what} within {timeout:?}",
            self.name()
        );
        Ok(())
    }

    /// Writes `contents` to the file `path` of the container, making its directories. Paths
    /// and symbolic links resolve inside the container: through its namespaces while it runs,
    /// through `chroot` into its root before boot.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_file(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let mut command = self.shell(r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1""#, path)?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running `{}`", command_line(&command)))?;
        // Dropping stdin after the write closes it, so cat ends.
        let written = child
            .stdin
            .take()
            .map_or(Ok(()), |mut stdin| stdin.write_all(contents.as_ref()));
        let output = child.wait_with_output()?;
        // A failed shell (its reason on stderr) also breaks the pipe: report the reason.
        ensure!(
            output.status.success(),
            "writing {} in {}: {}",
            path.display(),
            self.name(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        written.with_context(|| format!("writing {} in {}", path.display(), self.name()))
    }

    /// The contents of the file `path` of the container (resolved as in
    /// [`Container::write_file`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    pub fn read_file(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let mut command = self.shell(r#"cat -- "$1""#, path)?;
        let output = command
            .output()
            .with_context(|| format!("running `{}`", command_line(&command)))?;
        ensure!(
            output.status.success(),
            "reading {} in {}: {}",
            path.display(),
            self.name(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(output.stdout)
    }

    /// [`Container::read_file`] as text.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not UTF-8.
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> Result<String> {
        let path = path.as_ref();
        String::from_utf8(self.read_file(path)?)
            .with_context(|| format!("{} in {} is not UTF-8", path.display(), self.name()))
    }

    /// `sh -c script sh path` inside the container: entered while it runs, chrooted before.
    fn shell(&self, script: &str, path: &Path) -> Result<Command> {
        ensure!(
            path.is_absolute(),
            "{} is not an absolute path",
            path.display()
        );
        let mut command = if self.running.is_some() {
            self.command("/bin/sh")?
        } else {
            let mut command = Command::new("chroot");
            command
                .arg(self.root())
                .arg("/bin/sh")
                .env_clear()
                .envs(CONTAINER_ENV.iter().copied());
            command
        };
        command.args(["-c", script, "sh"]).arg(path);
        Ok(command)
    }

    /// Powers the container off cleanly (SIGRTMIN+4 to its systemd) and waits for nspawn to
    /// exit; kills the whole container if it does not within 30 s. It can be booted again.
    ///
    /// # Errors
    ///
    /// When it had to be killed (the error carries the console's end).
    pub fn poweroff(&mut self) -> Result<()> {
        let Some(running) = &mut self.running else {
            return Ok(());
        };
        let (target, signal) = match running.pid1 {
            Some(pid1) => (pid1, libc::SIGRTMIN() + 4),
            // Not yet booted: nspawn passes SIGTERM on to the container as a halt request.
            None => (running.nspawn.id(), libc::SIGTERM),
        };
        if running.nspawn.try_wait()?.is_none() {
            let target = libc::pid_t::try_from(target).context("pid out of range")?;
            // SAFETY: kill has no memory effects. The target is alive or a zombie not yet
            // reaped by nspawn (which has not exited), so its pid was not reused.
            unsafe { libc::kill(target, signal) };
        }
        if wait_exit(&mut running.nspawn, POWEROFF_TIMEOUT)?.is_some() {
            self.running = None;
            return Ok(());
        }
        self.kill()?;
        bail!(
            "{} did not power off within {POWEROFF_TIMEOUT:?} and was killed; the console's \
             end:\n{}",
            self.name(),
            rootfs::tail(&self.console(), CONSOLE_TAIL)
        )
    }

    /// Kills the container at once, every process in its cgroup (nspawn's supervisor part
    /// included), and waits for nspawn to exit.
    fn kill(&mut self) -> Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        let killed = kill_cgroup(&self.place.cgroups.unified);
        if wait_exit(&mut running.nspawn, Duration::from_secs(10))?.is_none() {
            // Should the cgroup have failed us, nspawn itself at least.
            running.nspawn.kill()?;
            running.nspawn.wait()?;
        }
        killed
    }

    /// Where the container is on the host, to check after it is dropped that nothing is left.
    pub fn footprint(&self) -> Footprint {
        let mut processes = Vec::new();
        if let Some(running) = &self.running {
            processes.push((running.nspawn.id(), "systemd-nspawn"));
            processes.extend(running.pid1.map(|pid| (pid, "systemd")));
        }
        Footprint::new(&self.place, processes)
    }

    /// Evidence for a failed boot: the failed units and pending jobs (once systemd runs) and
    /// the console's end.
    fn diagnosis(&self) -> String {
        let mut diagnosis = String::new();
        if self.pid1().is_some() {
            let jobs = self
                .run(&["systemctl", "list-jobs", "--no-pager"])
                .unwrap_or_else(|err| format!("{err:#}"));
            diagnosis = format!("failed units:\n{}\njobs:\n{jobs}\n", self.failed_units());
        }
        diagnosis + "the console's end:\n" + &rootfs::tail(&self.console(), CONSOLE_TAIL)
    }

    fn failed_units(&self) -> String {
        self.run(&["systemctl", "--failed", "--no-pager", "--plain"])
            .unwrap_or_else(|err| format!("{err:#}"))
    }

    fn unit_report(&self, unit: &str) -> String {
        let status = self
            .exec(&["systemctl", "status", "--no-pager", "--lines=0", unit])
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_else(|err| format!("{err:#}"));
        let journal = self
            .journal(unit)
            .map(|journal| rootfs::tail(&journal, 30))
            .unwrap_or_else(|err| format!("{err:#}"));
        format!("{unit} in {}:\n{status}\n{journal}", self.name())
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    poll(timeout, Duration::from_millis(20), || Ok(child.try_wait()?))
}

impl Drop for Container {
    fn drop(&mut self) {
        let powered_off = self.poweroff();
        let removed = self.place.remove();
        let failures: Vec<String> = [powered_off, removed]
            .into_iter()
            .filter_map(|result| result.err().map(|err| format!("{err:#}")))
            .collect();
        if !failures.is_empty() {
            fail_in_drop(&failures.join("\n"));
        }
    }
}

/// The host paths and processes a container had, to check that it left nothing behind.
#[derive(Debug, Clone)]
pub struct Footprint {
    name: String,
    paths: Vec<PathBuf>,
    processes: Vec<(u32, &'static str)>,
}

impl Footprint {
    /// The footprint of the machine `name` (with its run prefix) from its name alone: its
    /// directories, cgroups and mounts, not its processes (which only live in its cgroups).
    ///
    /// # Errors
    ///
    /// When the cgroup hierarchies cannot be read.
    pub fn of_machine(name: &str) -> Result<Self> {
        Ok(Self::new(&Place::new(name)?, Vec::new()))
    }

    fn new(place: &Place, processes: Vec<(u32, &'static str)>) -> Self {
        Self {
            name: place.name.clone(),
            paths: [place.work.clone(), place.propagate()]
                .into_iter()
                .chain(place.cgroups.all().map(Path::to_owned))
                .collect(),
            processes,
        }
    }

    /// What of the container is still on the host: directories, cgroups, mounts, processes.
    ///
    /// # Errors
    ///
    /// When the mount table cannot be read.
    pub fn remains(&self) -> Result<Vec<String>> {
        let mut remains = Vec::new();
        for path in &self.paths {
            if path.exists() {
                remains.push(format!("{}", path.display()));
            }
            for point in mounts_under(path)? {
                remains.push(format!("mount {}", point.display()));
            }
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        if mounts.lines().any(|line| {
            line.split_once(" - ")
                .is_some_and(|(_, fs)| fs.split(' ').nth(1) == Some(self.name.as_str()))
        }) {
            remains.push(format!("a mount of {}", self.name));
        }
        for &(pid, comm) in &self.processes {
            if process(pid).is_some_and(|(_, name)| name == comm) {
                remains.push(format!("process {pid} ({comm})"));
            }
        }
        Ok(remains)
    }
}
