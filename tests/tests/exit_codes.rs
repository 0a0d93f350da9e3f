//! Both daemons end `check` with the same exit codes, the policy the README documents: 0 for
//! a valid config, 2 for an invalid one (every problem printed as `FILE:LINE:COL: error:`),
//! 1 for a file that cannot be read. Needs the two binaries (`scripts/test` builds them, or
//! `$EGRET_GATEWAY_BIN` and `$EGRET_AGENT_BIN` name them), not root.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context as _, Result, ensure};
use egret_lab::WorkDir;
use egret_lab::egress::agent_binary;
use egret_lab::topology::gateway_binary;

/// Valid on any host: the loopback interface holds 127.0.0.1/8, and the floating IPs lie
/// in its subnet.
const GATEWAY_VALID: &str = r#"
[gateway]
name = "gw-exit"
interface = "lo"

[tunnel]
allowed_sources = ["127.0.0.0/8"]

[[floating_ip]]
address = "127.0.0.100"
vrid = 10
"#;

/// Static mode needs no cluster; the node name comes from the file.
const AGENT_VALID: &str = r#"
[agent]
node_name = "node-exit"
mode = "static"
"#;

/// `check` on `text` written to `dir/name` (`None`: a file that does not exist).
fn check(binary: &Path, dir: &Path, name: &str, text: Option<&str>) -> Result<Output> {
    let path = dir.join(name);
    if let Some(text) = text {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Command::new(binary)
        .args(["check", "--quiet", "--config"])
        .arg(&path)
        .output()
        .with_context(|| format!("running {} check", binary.display()))
}

#[test]
fn both_daemons_exit_0_for_a_valid_config_2_for_an_invalid_one_and_1_for_no_file() -> Result<()> {
    let work = WorkDir::new("exit-codes")?;
    let dir = work.path();
    let daemons = [
        (gateway_binary()?, "gateway", GATEWAY_VALID),
        (agent_binary()?, "agent", AGENT_VALID),
    ];
    for (binary, daemon, valid) in daemons {
        // One unknown key in a section that is otherwise valid.
        let invalid = valid.replacen("vrid = 10\n", "vrid = 10\nvird = 11\n", 1).replacen(
            "mode = \"static\"\n",
            "mode = \"static\"\nmdoe = \"static\"\n",
            1,
        );
        let cases = [
            ("valid.toml", Some(valid), 0),
            ("invalid.toml", Some(invalid.as_str()), 2),
            ("missing.toml", None, 1),
        ];
        for (name, text, expected) in cases {
            let output = check(&binary, dir, &format!("{daemon}-{name}"), text)?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                output.status.code() == Some(expected),
                "egret-{daemon} check of {name} exited {:?}, expected {expected}; stderr:\n{stderr}",
                output.status.code()
            );
            if expected == 2 {
                let file = dir.join(format!("{daemon}-{name}"));
                let prefix = format!("{}:", file.display());
                ensure!(
                    stderr
                        .lines()
                        .any(|l| l.starts_with(&prefix) && l.contains(": error: ")),
                    "egret-{daemon}: no FILE:LINE:COL error line in:\n{stderr}"
                );
            }
        }
    }
    Ok(())
}
