//! The Vagrant lab (`vagrant/`), checked offline: booting its VMs needs a hypervisor that CI
//! does not have (vagrant/README.md walks through a real run), so this checks what can be
//! checked without one.
//!
//! - `vagrant validate` accepts the Vagrantfile with the libvirt provider (its settings are
//!   checked too) and, settings of the provider aside, with VirtualBox; no box is needed.
//! - `vagrant up` without the packages stops at once with the message to run `scripts/package`,
//!   before any box is fetched or machine created.
//! - Every shell script of the repository passes shellcheck: each file with an `sh`/`bash`
//!   shebang or a `# shellcheck shell=` directive, found by walking the repository (but
//!   `target/`, `.git/` and `.vagrant/`), so new scripts are checked without a list to update.
//!
//! Vagrant runs with a home and a state directory of the test's own (nothing of the user's is
//! read or written) and in a network namespace of its own (`unshare --net --map-root-user`), so
//! it cannot reach the network whatever it tries. Debian's vagrant finds its system plugins
//! (vagrant-libvirt) in /usr/share/vagrant-plugins, independently of `VAGRANT_HOME`.
//!
//! The gateway's provisioning script (`vagrant/provision/gateway.sh`) is written to run on
//! its own in a booted Debian container as well; its header says how it is called.

use std::{
    ffi::OsStr,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The lab's machines, in the order Vagrant brings them up.
const MACHINES: [&str; 6] = ["outside", "cp", "w1", "w2", "gw1", "gw2"];

/// A directory of the test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "egret-vagrant-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("packages")).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `vagrant ARGS` in vagrant/, offline, with `provider` as the default provider, a home and
/// state of `scratch`'s and its empty `packages` directory as the packages.
fn vagrant(scratch: &Scratch, provider: &str, args: &[&str]) -> Output {
    let output = Command::new("unshare")
        .args(["--net", "--map-root-user", "vagrant"])
        .args(args)
        .current_dir(Path::new(REPO).join("vagrant"))
        .env("VAGRANT_HOME", scratch.0.join("home"))
        .env("VAGRANT_DOTFILE_PATH", scratch.0.join("dot"))
        .env("VAGRANT_DEFAULT_PROVIDER", provider)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_BOX_UPDATE_CHECK_DISABLE", "1")
        .env("EGRET_PACKAGES", scratch.0.join("packages"))
        .env_remove("VAGRANT_CWD")
        .env_remove("VAGRANT_VAGRANTFILE")
        .env_remove("EGRET_BOX")
        .output()
        .expect(
            "runs vagrant through unshare (Debian packages vagrant, vagrant-libvirt, util-linux)",
        );
    eprintln!(
        "$ vagrant {} ({provider}): {}\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_vagrantfile_validates_offline_for_libvirt_and_virtualbox() {
    let scratch = Scratch::new("validate");
    let libvirt = vagrant(&scratch, "libvirt", &["validate"]);
    assert!(libvirt.status.success(), "{}", text(&libvirt));
    assert!(text(&libvirt).contains("Vagrantfile validated successfully"));

    // Without VirtualBox installed its provider cannot check its own settings; the rest of
    // the Vagrantfile is still validated with it as the default provider.
    let virtualbox = vagrant(&scratch, "virtualbox", &["validate", "--ignore-provider"]);
    assert!(virtualbox.status.success(), "{}", text(&virtualbox));

    let status = vagrant(&scratch, "libvirt", &["status", "--machine-readable"]);
    assert!(status.status.success(), "{}", text(&status));
    let machines: Vec<&str> = std::str::from_utf8(&status.stdout)
        .expect("UTF-8")
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.get(2) == Some(&"state")).then(|| fields[1])
        })
        .collect();
    assert_eq!(machines, MACHINES);
}

#[test]
fn up_without_packages_stops_with_the_way_to_build_them() {
    let scratch = Scratch::new("up");
    for machine in ["gw1", "cp"] {
        let up = vagrant(&scratch, "libvirt", &["up", machine]);
        assert!(!up.status.success(), "{}", text(&up));
        let message = text(&up);
        assert!(
            message.contains("No egret-agent or egret-gateway package in")
                && message.contains("scripts/package"),
            "{message}"
        );
    }
    let status = vagrant(&scratch, "libvirt", &["status", "--machine-readable"]);
    let states = String::from_utf8_lossy(&status.stdout).into_owned();
    for machine in MACHINES {
        assert!(
            states.contains(&format!(",{machine},state,not_created")),
            "{machine} was created: {states}"
        );
    }
}

#[test]
fn the_gateway_script_explains_how_to_call_it() {
    let help = Command::new("bash")
        .arg(Path::new(REPO).join("vagrant/provision/gateway.sh"))
        .arg("--help")
        .output()
        .expect("runs bash");
    let usage = String::from_utf8_lossy(&help.stderr);
    assert_eq!(help.status.code(), Some(2), "{usage}");
    for option in [
        "--deb FILE",
        "--interface NAME",
        "--floating-ip",
        "EGRET_SYNC_KEY",
    ] {
        assert!(usage.contains(option), "{usage}");
    }
}

/// Whether `path` is a shell script: an `sh`, `bash`, `dash` or `ksh` shebang (directly or
/// through `env`), or a `# shellcheck shell=` directive at its top for a file that is sourced.
fn is_shell_script(path: &Path) -> bool {
    let mut head = [0u8; 1024];
    let Ok(n) = fs::File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    let head = String::from_utf8_lossy(&head[..n]);
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    if let Some(command) = first.strip_prefix("#!") {
        let mut words = command.split_whitespace();
        let mut program = words.next().map(basename).unwrap_or_default();
        if program == "env" {
            program = words
                .find(|word| !word.starts_with('-'))
                .map(basename)
                .unwrap_or_default();
        }
        return matches!(program, "sh" | "bash" | "dash" | "ksh");
    }
    std::iter::once(first)
        .chain(lines)
        .take_while(|line| line.starts_with('#'))
        .any(|line| line.starts_with("# shellcheck shell="))
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Every shell script below `root`, as paths relative to it, sorted; build output, Git's
/// and Vagrant's directories are skipped, and so are symbolic links.
fn shell_scripts(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                let name = entry.file_name();
                if ![".git", "target", ".vagrant"]
                    .map(OsStr::new)
                    .contains(&name.as_os_str())
                {
                    walk(root, &path, found);
                }
            } else if kind.is_file() && is_shell_script(&path) {
                found.push(path.strip_prefix(root).expect("below the root").to_owned());
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found.sort();
    found
}

/// shellcheck on `scripts` (relative to `root`, where it runs, so `source=` directives resolve
/// from there), following what they source.
fn shellcheck(root: &Path, scripts: &[PathBuf]) -> Output {
    Command::new("shellcheck")
        .args(["--external-sources", "--color=never"])
        .args(scripts)
        .current_dir(root)
        .output()
        .expect("runs shellcheck (Debian package shellcheck)")
}

#[test]
fn every_shell_script_of_the_repository_passes_shellcheck() {
    let root = Path::new(REPO).canonicalize().expect("the repository");
    let scripts = shell_scripts(&root);
    for expected in [
        ".ci/run",
        "scripts/setup",
        "scripts/test",
        "tests/measure/run-example",
        "vagrant/provision/common.sh",
        "vagrant/provision/gateway.sh",
        "vagrant/provision/outside/whoami",
    ] {
        assert!(
            scripts.contains(&PathBuf::from(expected)),
            "the walk missed {expected}: {scripts:?}"
        );
    }
    let check = shellcheck(&root, &scripts);
    assert!(
        check.status.success(),
        "shellcheck found problems in the repository's scripts ({}):\n{}",
        check.status,
        text(&check)
    );
    eprintln!("shellcheck passed {} scripts: {scripts:?}", scripts.len());
}

#[test]
fn the_walk_finds_scripts_by_their_shebang_and_shellcheck_fails_a_warning() {
    let scratch = Scratch::new("walk");
    let root = &scratch.0;
    let files = [
        ("bin/tool", "#!/bin/bash\nunused=1\n"),
        ("bin/env-sh", "#!/usr/bin/env sh\necho ok\n"),
        ("bin/env-split", "#!/usr/bin/env -S bash -e\necho ok\n"),
        (
            "lib/sourced",
            "# Sourced by tool.\n# shellcheck shell=bash\nf() { :; }\n",
        ),
        ("bin/python", "#!/usr/bin/env python3\nprint(1)\n"),
        ("notes.txt", "echo not a script\n"),
        ("target/debug/build.sh", "#!/bin/sh\nunused=1\n"),
        (".git/hooks/pre-commit", "#!/bin/sh\nunused=1\n"),
        ("vagrant/.vagrant/x.sh", "#!/bin/sh\nunused=1\n"),
    ];
    for (path, content) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("directory");
        fs::write(&path, content).expect("file");
    }
    let scripts = shell_scripts(root);
    assert_eq!(
        scripts,
        ["bin/env-sh", "bin/env-split", "bin/tool", "lib/sourced"].map(PathBuf::from)
    );
    let check = shellcheck(root, &scripts);
    assert!(!check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("SC2034"), "{}", text(&check));
}
