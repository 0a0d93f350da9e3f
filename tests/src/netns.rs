//! Network namespaces that live as long as a guard.
//!
//! A [`NetNs`] is made with `ip netns add <prefix>-<name>`, where the prefix is unique to the
//! test process (`egt<pid>-<random>`, see [`run_prefix`]), and deleted with `ip netns delete`
//! when the guard drops, also during a panic. Namespaces of runs that were killed before they
//! could clean up (their pid is gone) are deleted when a process makes its first namespace.
//! That assumes one pid namespace per `/run/netns`, as on a host or in one CI container.

use std::{
    collections::hash_map::RandomState,
    ffi::OsStr,
    fs::File,
    hash::BuildHasher as _,
    io,
    net::IpAddr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{self, Command},
    sync::{Once, OnceLock},
    thread,
    time::SystemTime,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    command::{check_output, command_line},
    link::Link,
    packet,
};

/// Moves the calling thread into the namespace `file` (named `name`, for the error).
fn enter(file: &File, name: &str) -> Result<()> {
    // SAFETY: `file` is an open namespace file for the whole call; setns only changes the
    // calling thread.
    let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if entered != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("entering network namespace {name}"));
    }
    Ok(())
}

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// First letters of every lab namespace.
const TAG: &str = "egt";

/// The prefix of this process's namespaces: `egt<pid>-<4 random hex digits>`.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let random = RandomState::new().hash_one(SystemTime::now()) & 0xffff;
        format!("{TAG}{}-{random:04x}", process::id())
    })
}

/// The pid in a lab name made by [`run_prefix`] (namespaces, containers), or `None` for any
/// other name.
pub(crate) fn owner_pid(namespace: &str) -> Option<u32> {
    let (pid, rest) = namespace.strip_prefix(TAG)?.split_once('-')?;
    let (random, name) = rest.split_once('-')?;
    let is_random = random.len() == 4 && random.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_random || name.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes lab namespaces whose owning process no longer exists; returns their names.
///
/// # Errors
///
/// When `ip netns` fails.
pub fn reap_stale_namespaces() -> Result<Vec<String>> {
    let listing = check_output(Command::new("ip").args(["netns", "list"]))?;
    let mut reaped = Vec::new();
    for name in listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = owner_pid(name) else { continue };
        if pid == process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        check_output(Command::new("ip").args(["netns", "delete", name]))?;
        reaped.push(name.to_owned());
    }
    Ok(reaped)
}

/// A network namespace, deleted (with every interface in it) when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Makes the namespace `<run prefix>-<name>` with its loopback up.
    ///
    /// # Errors
    ///
    /// When `name` is not lower-case letters, digits and dashes, or `ip` fails.
    pub fn new(name: &str) -> Result<Self> {
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "lab namespace name {name:?}: use lower-case letters, digits and dashes"
        );
        static REAP: Once = Once::new();
        REAP.call_once(|| {
            if let Err(err) = reap_stale_namespaces() {
                eprintln!("egret-lab: could not delete stale lab namespaces: {err:#}");
            }
        });

        let name = format!("{}-{name}", run_prefix());
        check_output(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on the guard exists, so a failure below still deletes the namespace.
        let netns = Self { name };
        netns.ip(["link", "set", "dev", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's full name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, which `setns` and `ip netns exec` open.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n <namespace> <args>` and returns its output.
    ///
    /// # Errors
    ///
    /// When `ip` fails; the error carries its message.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        check_output(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip netns exec <namespace> <program>`: a command that runs inside the namespace. Add
    /// arguments and run it like any [`Command`]. Anything that sends traffic must be run this
    /// way (or with [`NetNs::run`]) and bound to one of the namespace's interfaces.
    ///
    /// The child starts with no signal blocked, whatever this process blocks (the lab's
    /// programs block SIGINT and SIGTERM to handle them on a thread of their own, and the
    /// standard library does not clear the mask for children): stopping a lab process with
    /// SIGTERM must work.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new("ip");
        command.args(["netns", "exec"]).arg(&self.name).arg(program);
        // SAFETY: between fork and exec only async-signal-safe calls are allowed;
        // sigemptyset and sigprocmask are, and nothing is allocated.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&raw mut set);
                if libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// Runs `program` with `args` inside the namespace and returns its output.
    ///
    /// # Errors
    ///
    /// When the program fails; the error names it and carries its standard error.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        check_output(self.command(program).args(args))
    }

    /// Makes an interface `name` in this namespace with `ip link add <name> <kind...>`
    /// (e.g. `["type", "bridge"]`), deleted when the returned guard drops.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn add_link(&self, name: &str, kind: &[&str]) -> Result<Link<'_>> {
        self.ip(["link", "add", name].iter().chain(kind))?;
        Ok(Link::adopt(self, name))
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    ///
    /// Everything the thread does that depends on the network namespace (interface lookups,
    /// netlink, sockets, loading eBPF onto interfaces) happens in this namespace; the calling
    /// thread stays where it is. A panic in `f` resumes in the caller with its own message.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered (`f` does not run then).
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.open()?;
        let joined = thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&file, &self.name)?;
                    Ok(f())
                })
                .join()
        });
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts a thread named `name` that enters this namespace and runs `f`, for work that
    /// outlives the caller's borrow of the namespace (a traffic generator beside the rest of
    /// a measurement). The thread's sockets are this namespace's; threads it starts are in
    /// it too. When the namespace cannot be entered, `f` does not run and the thread
    /// returns the error.
    ///
    /// # Errors
    ///
    /// When the namespace file cannot be opened or the thread cannot start.
    pub fn spawn<F, R>(&self, name: &str, f: F) -> Result<thread::JoinHandle<Result<R>>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.open()?;
        let namespace = self.name.clone();
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                enter(&file, &namespace)?;
                Ok(f())
            })
            .context("starting a thread")
    }

    fn open(&self) -> Result<File> {
        let path = self.path();
        File::open(&path).with_context(|| format!("opening {}", path.display()))
    }

    /// Pings `destination` `count` times from `interface` of this namespace (one ping every
    /// 200 ms, one second to answer each) and returns how many replies came back.
    ///
    /// # Errors
    ///
    /// When ping cannot run or fails for another reason than missing replies.
    pub fn ping(&self, interface: &str, destination: IpAddr, count: u32) -> Result<u32> {
        let mut command = self.command("ping");
        command
            .args(["-n", "-q", "-i", "0.2", "-W", "1", "-I", interface, "-c"])
            .arg(count.to_string())
            .arg(destination.to_string());
        let output = command
            .output()
            .with_context(|| format!("running `{}`", command_line(&command)))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        // ping exits 1 when replies are missing, which the caller judges from the count.
        match (output.status.code(), ping_replies(&stdout)) {
            (Some(0 | 1), Some(received)) => Ok(received),
            _ => bail!(
                "`{}` failed ({}): {} {}",
                command_line(&command),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                stdout.trim()
            ),
        }
    }

    /// Sends each of `frames` (complete Ethernet frames, sent as they are) out of `interface` of
    /// this namespace through a packet socket, from inside the namespace.
    ///
    /// # Errors
    ///
    /// When the interface does not exist here or the kernel refuses a frame.
    pub fn send_frames(&self, interface: &str, frames: &[&[u8]]) -> Result<()> {
        self.run(|| packet::send_frames(interface, frames))?
            .with_context(|| format!("sending frames on {interface} in {}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = check_output(Command::new("ip").args(["netns", "delete", &self.name])) {
            fail_in_drop(&format!(
                "deleting network namespace {}: {err:#}",
                self.name
            ));
        }
    }
}

/// Reports a failed cleanup: a panic normally, a message when already panicking (a second panic
/// would abort the test binary and hide the first one).
pub(crate) fn fail_in_drop(message: &str) {
    if thread::panicking() {
        eprintln!("egret-lab: {message}");
    } else {
        panic!("egret-lab: {message}");
    }
}

/// The reply count from ping's summary (`5 packets transmitted, 5 received, ...`).
fn ping_replies(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .find(|line| line.contains("packets transmitted"))?
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_names_this_process() {
        let prefix = run_prefix();
        assert_eq!(owner_pid(&format!("{prefix}-a")), Some(process::id()));
        assert_eq!(run_prefix(), prefix, "the prefix is fixed for the run");
    }

    #[test]
    fn only_lab_names_have_an_owner() {
        assert_eq!(owner_pid("egt4242-0a1f-cls-a"), Some(4242));
        for foreign in [
            "egt4242-0a1f-",
            "egt4242-0a1-x",
            "egt4242-0a1g-x",
            "egt42a2-0a1f-x",
            "egt-0a1f-x",
            "egress",
            "cni-1234-abcd-x",
        ] {
            assert_eq!(owner_pid(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn ping_summary_gives_the_reply_count() {
        let all = "PING 198.18.0.2 (198.18.0.2) from 198.18.0.1 veth0: 56(84) bytes of data.\n\n\
                   --- 198.18.0.2 ping statistics ---\n\
                   5 packets transmitted, 5 received, 0% packet loss, time 813ms\n\
                   rtt min/avg/max/mdev = 0.031/0.045/0.067/0.012 ms\n";
        assert_eq!(ping_replies(all), Some(5));
        let some = "3 packets transmitted, 1 received, +2 errors, 66.6667% packet loss, time 2s\n";
        assert_eq!(ping_replies(some), Some(1));
        assert_eq!(
            ping_replies("ping: connect: Network is unreachable\n"),
            None
        );
    }
}
