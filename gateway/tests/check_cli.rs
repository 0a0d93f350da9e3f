//! `egret-gateway check` as an operator runs it: the real binary, the real host.
//!
//! The good file uses `lo` with floating IPs inside 127.0.0.0/8 so it validates on every
//! Linux host; `check` only parses, nothing is sent.
//!
//! Its exit codes are egret-agent's ([`Exit`], asserted the same way in the agent's
//! `check_cli`): 0 for a valid file, 2 for an invalid one, 1 for one that cannot be read.

use std::path::PathBuf;
use std::process::{Command, Output};

use egret_gateway::config::Exit;

const GOOD: &str = r#"[gateway]
name = "gw-cli"
interface = "lo"

[tunnel]
allowed_sources = ["127.0.0.0/8"]

[[floating_ip]]
address = "127.0.0.100"
vrid = 10

[nat]
udp_timeout = "30s"
"#;

const BAD: &str = r#"[gateway]
interface = "lo"

[tunnel]
allowed_sources = ["127.0.0.0/8"]

[[floating_ip]]
address = "127.0.0.100"
vrid = 10

[[floating_ip]]
address = "127.0.0.101"
vrid = 10

[nat]
port_range = "1024-65535"
"#;

fn write(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

fn check(path: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_egret-gateway"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run egret-gateway")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(exit: Exit) -> Option<i32> {
    Some(exit.code().into())
}

#[test]
fn a_good_file_prints_the_effective_config_and_exits_0() {
    let path = write("check_cli_good.toml", GOOD);
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), code(Exit::Success), "stderr:\n{stderr}");
    for line in [
        "[gateway]",
        "name = \"gw-cli\"",
        "port = 4800",
        "advert_interval = \"1s\"",
        "tcp_established_timeout = \"2h4m\"",
        "udp_timeout = \"30s\"",
        "listen = \"127.0.0.1:9477\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} not in\n{stdout}"
        );
    }
    // The UDP timeout is below RFC 4787's minimum: accepted, with a warning on stderr.
    let warning = format!("{}:13:15: warning: nat.udp_timeout: ", path.display());
    assert!(stderr.starts_with(&warning), "{stderr}");
    assert!(stderr.contains("RFC 4787"), "{stderr}");

    // What check prints is itself a valid config.
    let printed = write("check_cli_effective.toml", &stdout);
    let again = check(&printed);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), stdout);
}

#[test]
fn a_bad_file_lists_every_error_and_exits_2() {
    let path = write("check_cli_bad.toml", BAD);
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
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{file}:13:8: error: floating_ip[1].vrid: 10 is already used by floating_ip[0].vrid (line 9); allowed: "
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:16:14: error: nat.port_range: 1024-65535 contains [tunnel].port 4800"
        )),
        "{stderr}"
    );
    assert!(lines[1].contains("; allowed: "), "{stderr}");
}

#[test]
fn an_unreadable_file_exits_1() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check_cli_missing.toml");
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), code(Exit::Failure), "stderr:\n{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(stderr.contains("check_cli_missing.toml"), "{stderr}");
}
