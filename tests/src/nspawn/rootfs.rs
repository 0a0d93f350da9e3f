//! The cached Debian root file system every container boots from.
//!
//! Built once per machine with debootstrap into `$EGRET_CACHE/rootfs-debian-<suite>-<key>`,
//! where the key hashes everything that decides its contents (suite, packages, masked units,
//! preparation version): changing any of them builds a new one beside the old. A build goes into
//! `<name>.tmp` and is renamed into place when complete, under an exclusive `flock` on
//! `<name>.lock`, so concurrent tests (threads or processes) build it once and the others wait.
//! Nothing ever writes to a finished rootfs: containers mount it as the read-only lower layer of
//! an overlay.

use std::{
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd as _,
        unix::{fs::symlink, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, PoisonError},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::host::{HOST_PATH, unmount_under};
use crate::command::check_output;

/// The Debian release the containers run.
pub const SUITE: &str = "bookworm";
/// Where debootstrap fetches packages (the only place on the internet the lab may reach).
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// Packages installed on top of debootstrap's `minbase`: systemd as init and its bus, what
/// egret's packages depend on (nftables, iproute2), what tests read the daemon with (procps,
/// libcap2-bin), and rpm, so a system given an `.rpm` with `rpm --root` can remove it again
/// with its scriptlets under the running systemd. Containers have no network, so every
/// dependency must already be here.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "nftables",
    "iproute2",
    "procps",
    "libcap2-bin",
    "rpm",
];
/// Units masked in the image. The timers start background jobs at times no test controls
/// (apt-daily wants the network; dpkg-db-backup takes the dpkg lock a test's `dpkg -i` needs;
/// fstrim and e2scrub have no block device to work on), e2scrub_reap looks for LVM at boot, and
/// console-getty puts a login prompt on the console log nobody answers.
pub const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "console-getty.service",
];
/// Version of [`prepare`]: bump it when the preparation changes, so caches rebuild.
const PREPARATION: u32 = 1;

/// A finished Debian root file system with systemd, ready to be the lower layer of containers.
#[derive(Debug, Clone)]
pub struct Rootfs {
    path: PathBuf,
}

impl Rootfs {
    /// The machine's cached rootfs, built first if it is missing (about two minutes; needs
    /// debootstrap and the Debian mirror). Later calls in the same process return at once.
    ///
    /// # Errors
    ///
    /// When the cache directory cannot be found or written, or debootstrap fails (the error
    /// carries the end of its log); later calls in the process fail the same way.
    pub fn cached() -> Result<Self> {
        // Threads of one process queue here; processes queue on the flock in `build`. A failed
        // build is not tried again by every test of the process: they all get its error.
        static BUILT: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        let built = built.get_or_insert_with(|| {
            cache_dir()
                .and_then(|cache| build(&cache))
                .map_err(|err| format!("{err:#}"))
        });
        match built {
            Ok(path) => Ok(Self { path: path.clone() }),
            Err(err) => bail!("the containers' rootfs could not be built: {err}"),
        }
    }

    /// An existing rootfs at `path` (built elsewhere); it must be left unchanged while in use.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The rootfs directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// egret's cache directory: `$EGRET_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/egret`, the
/// rule `scripts/setup` follows.
///
/// # Errors
///
/// When none of these variables is set.
pub fn cache_dir() -> Result<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(cache) = var("EGRET_CACHE") {
        return Ok(cache.into());
    }
    let base = match var("XDG_CACHE_HOME") {
        Some(xdg) => PathBuf::from(xdg),
        None => PathBuf::from(var("HOME").context("neither EGRET_CACHE nor HOME is set")?)
            .join(".cache"),
    };
    Ok(base.join("egret"))
}

/// The cached rootfs's directory name: suite and a hash of everything that shapes it.
pub fn name() -> String {
    let recipe = format!(
        "{SUITE}\n{}\n{}\n{PREPARATION}",
        PACKAGES.join(","),
        MASKED_UNITS.join(",")
    );
    format!("rootfs-debian-{SUITE}-{:016x}", fnv1a(recipe.as_bytes()))
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (std's does not promise to).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds the rootfs in `cache` unless it is there; returns its path.
fn build(cache: &Path) -> Result<PathBuf> {
    let name = name();
    let target = cache.join(&name);
    if target.is_dir() {
        return Ok(target);
    }
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let lock_path = cache.join(format!("{name}.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if !flock(&lock, libc::LOCK_EX | libc::LOCK_NB)? {
        eprintln!(
            "egret-lab: waiting for another process building {}",
            target.display()
        );
        flock(&lock, libc::LOCK_EX)?;
    }
    // Whoever held the lock may have finished it.
    if target.is_dir() {
        return Ok(target);
    }
    let tmp = cache.join(format!("{name}.tmp"));
    // With the lock held, a temporary directory is what a crashed build left; debootstrap may
    // have left /proc or /sys mounted in it, which must go before anything is deleted.
    if tmp.exists() {
        unmount_under(&tmp)?;
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    eprintln!(
        "egret-lab: building the containers' Debian {SUITE} rootfs in {} (about two minutes, \
         once per machine)",
        target.display()
    );
    let started = Instant::now();
    let log = cache.join(format!("{name}.log"));
    let built = debootstrap(&tmp, &log, &lock).and_then(|()| prepare(&tmp));
    if let Err(err) = built {
        // Leave no mounts behind; the directory itself goes on the next attempt.
        if let Err(unmount) = unmount_under(&tmp) {
            eprintln!("egret-lab: {unmount:#}");
        }
        return Err(err);
    }
    fs::rename(&tmp, &target)
        .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    eprintln!(
        "egret-lab: rootfs built in {:.0?}: {}",
        started.elapsed(),
        target.display()
    );
    Ok(target)
}

/// `flock(2)` on `file`; `Ok(false)` when `LOCK_NB` was asked and another holds the lock.
fn flock(file: &File, operation: libc::c_int) -> Result<bool> {
    loop {
        // SAFETY: the descriptor is open for the whole call; flock touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) if operation & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(err).context("locking the rootfs cache"),
        }
    }
}

/// Runs debootstrap into `root`, its output into `log`. It inherits the build `lock`: should
/// this process die, a debootstrap left running still holds it, and the next builder waits for
/// it instead of building into the same directory.
fn debootstrap(root: &Path, log: &Path, lock: &File) -> Result<()> {
    let output = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new("debootstrap");
    command
        .args([
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
        ])
        .arg(SUITE)
        .arg(root)
        .arg(MIRROR)
        .env("PATH", HOST_PATH)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    let lock = lock.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; fcntl is, and
    // it only clears close-on-exec of a descriptor that stays open in the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(lock, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = command
        .status()
        .context("running debootstrap (scripts/setup installs it)")?;
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "debootstrap of Debian {SUITE} into {} failed ({status}); the end of {}:\n{}",
            root.display(),
            log.display(),
            tail(&text, 30)
        );
    }
    Ok(())
}

/// Makes a fresh debootstrap fit to boot many times under nspawn, offline.
fn prepare(root: &Path) -> Result<()> {
    let write = |path: &str, contents: &str| {
        let path = root.join(path);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    let replace_with_link = |path: &str, target: &str| {
        let path = root.join(path);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
        symlink(target, &path).with_context(|| format!("linking {}", path.display()))
    };
    // An empty machine-id: systemd then takes the container UUID nspawn hands each container,
    // instead of every container sharing the one debootstrap made.
    write("etc/machine-id", "")?;
    replace_with_link("var/lib/dbus/machine-id", "/etc/machine-id")?;
    // debootstrap copies the host's name; without the file the container keeps the machine
    // name nspawn gives it.
    match fs::remove_file(root.join("etc/hostname")) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(err).context("removing etc/hostname");
        }
        _ => {}
    }
    for unit in MASKED_UNITS {
        replace_with_link(&format!("etc/systemd/system/{unit}"), "/dev/null")?;
    }
    // No container has a network to fetch packages with: the downloaded archives and the
    // package lists only take space.
    check_output(
        Command::new("chroot")
            .arg(root)
            .args(["apt-get", "clean"])
            .env_clear()
            .env("PATH", HOST_PATH),
    )?;
    let lists = root.join("var/lib/apt/lists");
    for entry in fs::read_dir(&lists).with_context(|| format!("listing {}", lists.display()))? {
        let path = entry?.path();
        if path.is_file() && path.file_name().is_some_and(|name| name != "lock") {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The last `lines` lines of `text`.
pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_stable_and_follows_the_recipe() {
        // FNV-1a's published test vector: a changed hash would silently rebuild every cache.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(name().starts_with("rootfs-debian-bookworm-"), "{}", name());
        assert_eq!(name(), name());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
