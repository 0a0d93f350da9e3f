//! The lab's own guarantees: guards remove what they made, also on panic; `run` really enters
//! the namespace; leftovers of dead runs are reaped and live ones are not. Needs root.

use std::{
    os::unix::fs::MetadataExt as _,
    panic::{self, AssertUnwindSafe},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use egret_lab::{NetNs, check_output, reap_stale_namespaces, require_root, run_prefix, veth_pair};

fn namespaces() -> Result<Vec<String>> {
    Ok(check_output(Command::new("ip").args(["netns", "list"]))?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

#[test]
fn guards_remove_namespaces_and_links_even_when_the_test_panics() -> Result<()> {
    require_root();
    let mut made = Vec::new();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let a = NetNs::new("guard-a")?;
        let b = NetNs::new("guard-b")?;
        let (_a_if, _b_if) = veth_pair(&a, "guard0", &b, "guard1")?;
        let bridge = a.add_link("guardbr", &["type", "bridge"])?;
        bridge.set_up()?;
        made.extend([a.name().to_owned(), b.name().to_owned()]);
        let () = a.run(|| panic!("a test failing inside the namespace"))?;
        Ok(())
    }));
    let message = outcome
        .expect_err("the panic inside run reached the caller")
        .downcast::<&str>()
        .map(|message| *message)
        .unwrap_or("?");
    assert_eq!(message, "a test failing inside the namespace");

    ensure!(made.len() == 2, "setup did not finish: {made:?}");
    let left = namespaces()?;
    for name in &made {
        ensure!(!left.contains(name), "{name} left behind: {left:?}");
    }
    Ok(())
}

#[test]
fn link_guards_delete_their_links_from_living_namespaces() -> Result<()> {
    require_root();
    let a = NetNs::new("links-a")?;
    let b = NetNs::new("links-b")?;
    let has_link = |netns: &NetNs, name: &str| netns.ip(["link", "show", "dev", name]).is_ok();
    {
        let (_a_if, _b_if) = veth_pair(&a, "pair0", &b, "pair1")?;
        let _bridge = a.add_link("bridge0", &["type", "bridge"])?;
        ensure!(has_link(&a, "pair0") && has_link(&b, "pair1") && has_link(&a, "bridge0"));
    }
    ensure!(!has_link(&a, "pair0"), "pair0 left behind");
    ensure!(!has_link(&b, "pair1"), "pair1 left behind");
    ensure!(!has_link(&a, "bridge0"), "bridge0 left behind");
    Ok(())
}

#[test]
fn run_enters_the_namespace_and_only_its_thread_does() -> Result<()> {
    require_root();
    let netns = NetNs::new("enter")?;
    let expected = std::fs::metadata(netns.path())?.ino();
    let inode_here = || -> Result<u64> { Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino()) };
    let inside = netns.run(inode_here)??;
    ensure!(
        inside == expected,
        "run: in namespace inode {inside}, wanted {expected}"
    );
    ensure!(
        inode_here()? != expected,
        "the calling thread moved into the lab namespace"
    );
    Ok(())
}

#[test]
fn commands_run_inside_the_namespace() -> Result<()> {
    require_root();
    let netns = NetNs::new("exec")?;
    let _link = netns.add_link("onlyhere0", &["type", "bridge"])?;
    let links = netns.exec("ip", ["-o", "link", "show"])?;
    ensure!(links.contains("onlyhere0"), "{links}");
    ensure!(
        !check_output(Command::new("ip").args(["-o", "link", "show"]))?.contains("onlyhere0"),
        "a lab link appeared in the caller's namespace"
    );
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_runs_are_reaped_and_live_ones_kept() -> Result<()> {
    require_root();
    let live = NetNs::new("live")?;
    // A pid that existed and is gone: a finished child's.
    let mut child = Command::new("true").spawn().context("spawning true")?;
    let dead_pid = child.id();
    child.wait()?;
    let stale = format!("egt{dead_pid}-dead-x");
    check_output(Command::new("ip").args(["netns", "add", &stale]))?;

    let reaped = reap_stale_namespaces();
    let left = namespaces()?;
    if left.contains(&stale) {
        // Do not leave it behind if reaping failed.
        check_output(Command::new("ip").args(["netns", "delete", &stale]))?;
    }
    let reaped = reaped?;
    ensure!(reaped.contains(&stale), "{stale} not reaped: {reaped:?}");
    ensure!(!left.contains(&stale), "{stale} still listed");
    ensure!(
        left.iter().any(|name| name == live.name()),
        "live namespace reaped"
    );
    ensure!(live.name().starts_with(run_prefix()), "{}", live.name());
    Ok(())
}
