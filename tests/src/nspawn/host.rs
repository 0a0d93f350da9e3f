//! The host's side of containers: mounts, cgroups and processes, found and removed.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::command::check_output;

/// `PATH` for the host tools the lab runs (debootstrap, chroot, nspawn), whatever the test's own.
pub(super) const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Calls `attempt` every `interval` until it returns a value or `timeout` has passed; `None`
/// on timeout. Errors end the wait at once.
pub(super) fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt()? {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(interval);
    }
}

/// Mount points at or below `dir` in this process's mount namespace, the last mounted first
/// (the order to unmount them in).
pub(super) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    // mountinfo names mounts by their canonical path.
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .filter(|point| point.starts_with(&dir))
        .collect();
    found.reverse();
    Ok(found)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `point`; lazily (detached now, freed when unused) when `lazy`.
pub(super) fn unmount(point: &Path, lazy: bool) -> Result<()> {
    let mut command = Command::new("umount");
    if lazy {
        command.arg("--lazy");
    }
    check_output(command.arg(point).env("PATH", HOST_PATH))?;
    Ok(())
}

/// Detaches every mount at or below `dir`, so the directory can be deleted without reaching
/// into a mounted file system.
pub(super) fn unmount_under(dir: &Path) -> Result<()> {
    for point in mounts_under(dir)? {
        unmount(&point, true)?;
    }
    Ok(())
}

/// A cgroup in each hierarchy nspawn uses: the unified one, and on hybrid hosts also systemd's
/// named v1 one (where nspawn and the container's systemd track processes too).
#[derive(Debug, Clone)]
pub(super) struct Cgroups {
    /// In the unified hierarchy, where `cgroup.kill` and `cgroup.events` are.
    pub unified: PathBuf,
    pub systemd: Option<PathBuf>,
}

impl Cgroups {
    /// This process's own cgroups, below which containers' cgroups are made.
    pub fn own() -> Result<Self> {
        own_cgroups()
    }

    /// The child cgroups `name`.
    pub fn join(&self, name: &str) -> Self {
        Self {
            unified: self.unified.join(name),
            systemd: self.systemd.as_ref().map(|dir| dir.join(name)),
        }
    }

    /// All of them, the unified one first.
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.unified.as_path()).chain(self.systemd.as_deref())
    }
}

fn own_cgroups() -> Result<Cgroups> {
    let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let own_path = |hierarchy: &str| {
        own.lines().find_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            (controllers == hierarchy).then(|| path.to_owned())
        })
    };
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut unified = None;
    let mut named = None;
    for line in info.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mount: Vec<&str> = mount.split(' ').collect();
        let fs: Vec<&str> = fs.split(' ').collect();
        let (Some(root), Some(point), Some(kind)) = (mount.get(3), mount.get(4), fs.first()) else {
            continue;
        };
        let hierarchy = match *kind {
            "cgroup2" if unified.is_none() => "",
            "cgroup"
                if named.is_none()
                    && fs
                        .get(2)
                        .is_some_and(|options| options.split(',').any(|o| o == "name=systemd")) =>
            {
                "name=systemd"
            }
            _ => continue,
        };
        let Some(path) = own_path(hierarchy) else {
            continue;
        };
        // The mount shows the part of the hierarchy below its root.
        let Some(relative) = path.strip_prefix(root.trim_end_matches('/')) else {
            continue;
        };
        let dir = Path::new(&unescape(point)).join(relative.trim_start_matches('/'));
        if hierarchy.is_empty() {
            unified = Some(dir);
        } else {
            named = Some(dir);
        }
    }
    let Some(unified) = unified else {
        bail!("no cgroup2 hierarchy is mounted: containers need one to be kept apart and killed");
    };
    Ok(Cgroups {
        unified,
        systemd: named,
    })
}

/// Whether any process is in the unified cgroup `dir` or below it.
fn populated(dir: &Path) -> Result<bool> {
    let events = dir.join("cgroup.events");
    match fs::read_to_string(&events) {
        Ok(text) => Ok(text.lines().any(|line| line == "populated 1")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).with_context(|| format!("reading {}", events.display())),
    }
}

/// Kills every process in the unified cgroup `dir` and below it, and waits until they are gone.
pub(super) fn kill_cgroup(dir: &Path) -> Result<()> {
    if !populated(dir)? {
        return Ok(());
    }
    match fs::write(dir.join("cgroup.kill"), "1") {
        Ok(()) => {}
        // Kernels before 5.14 lack cgroup.kill: kill the processes one by one.
        Err(err) if err.kind() == io::ErrorKind::NotFound => kill_each(dir)?,
        Err(err) => return Err(err).with_context(|| format!("killing cgroup {}", dir.display())),
    }
    let emptied = poll(Duration::from_secs(10), Duration::from_millis(10), || {
        Ok((!populated(dir)?).then_some(()))
    })?;
    if emptied.is_none() {
        bail!(
            "processes of cgroup {} survived SIGKILL for 10 s",
            dir.display()
        );
    }
    Ok(())
}

fn kill_each(dir: &Path) -> Result<()> {
    for pid in fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|line| line.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill has no memory effects; a pid gone meanwhile is ESRCH, which is fine.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            kill_each(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes the cgroup `dir` and every cgroup below it (they must hold no process).
pub(super) fn remove_cgroup(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup(&entry.path())?;
        }
    }
    // A cgroup whose last process just died can be busy for a moment.
    let removed = poll(
        Duration::from_secs(2),
        Duration::from_millis(10),
        || match fs::remove_dir(dir) {
            Ok(()) => Ok(Some(())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Some(())),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("removing cgroup {}", dir.display())),
        },
    )?;
    if removed.is_none() {
        bail!("cgroup {} stayed busy", dir.display());
    }
    Ok(())
}

/// A living process's parent pid and command name (`comm`); `None` when it is gone or a
/// zombie (dead, only waiting for its parent, which may be the host's init, to reap it).
pub(super) fn process(pid: u32) -> Option<(u32, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may itself hold spaces and parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, comm) = head.split_once('(')?;
    let mut fields = rest.split_whitespace();
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, comm.to_owned()))
}

/// Whether `pid` is a living process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    process(pid).is_some()
}

/// The child of `parent` whose command name is `comm`, if there is one.
pub(super) fn child_named(parent: u32, comm: &str) -> Result<Option<u32>> {
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        if process(pid).is_some_and(|(ppid, name)| ppid == parent && name == comm) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/tmp/back\134slash"), r"/tmp/back\slash");
        assert_eq!(unescape(r"/plain\x"), r"/plain\x");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn this_process_is_found_with_its_parent() {
        let (ppid, comm) = process(std::process::id()).expect("this process exists");
        assert_eq!(ppid, std::os::unix::process::parent_id());
        assert!(!comm.is_empty());
    }

    #[test]
    fn children_are_found_by_name() -> Result<()> {
        let mut child = Command::new("sleep").arg("10").spawn()?;
        let found = child_named(std::process::id(), "sleep");
        child.kill()?;
        child.wait()?;
        assert_eq!(found?, Some(child.id()));
        Ok(())
    }
}
