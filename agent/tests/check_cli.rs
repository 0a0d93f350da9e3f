//! `egret-agent check` as an operator runs it: the real binary, the real host. Static mode
//! with a node name needs nothing from the host; `check` only parses.
//!
//! Its exit codes are egret-gateway's ([`Exit`], asserted the same way in the gateway's
//! `check_cli`): 0 for a valid file, 2 for an invalid one, 1 for one that cannot be read.

use std::path::PathBuf;
use std::process::{Command, Output};

use egret_agent::config::Exit;

const GOOD: &str = r#"[agent]
node_name = "node-cli"
mode = "static"

[tunnel]
floating_ips = ["192.168.1.100"]

[[policy]]
name = "alice"
sources = ["10.10.1.0/28"]
destination_cidrs = ["8.8.8.0/24"]
egress_source_ip = "192.168.1.100"
"#;

/// GOOD with two errors in `[agent]`, one of them a key serde refuses: the other is still
/// checked.
fn bad() -> String {
    GOOD.replacen(
        "mode = \"static\"\n",
        "mode = \"static\"\nmdoe = \"static\"\nfwmark = 0\n",
        1,
    )
}

fn write(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

fn check(path: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_egret-agent"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run egret-agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(exit: Exit) -> Option<i32> {
    Some(exit.code().into())
}

#[test]
fn a_good_file_prints_the_effective_config_and_exits_0() {
    let out = check(&write("agent_check_cli_good.toml", GOOD));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), code(Exit::Success), "stderr:\n{stderr}");
    for line in [
        "[agent]",
        "node_name = \"node-cli\"",
        "port = 4800",
        "name = \"alice\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} not in\n{stdout}"
        );
    }
}

#[test]
fn a_bad_file_lists_every_error_and_exits_2() {
    let path = write("agent_check_cli_bad.toml", &bad());
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        code(Exit::InvalidConfig),
        "stderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad file");
    let file = path.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{file}:4:1: error: agent.mdoe: unknown key; allowed: "
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:5:10: error: agent.fwmark: 0 is out of range"
        )),
        "{stderr}"
    );
    assert_eq!(
        lines[2],
        format!("egret-agent: {file}: 2 errors in the config")
    );
}

#[test]
fn an_unreadable_file_exits_1() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent_check_cli_missing.toml");
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), code(Exit::Failure), "stderr:\n{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(stderr.contains("agent_check_cli_missing.toml"), "{stderr}");
}
