//! `egret-package-assets OUT`: writes into `OUT` what the packages ship besides the binaries,
//! all of it derived from the sources so it cannot drift from them:
//!
//! - `man/`: a page for each binary and each of its subcommands (clap_mangen);
//! - `completions/{bash,zsh,fish}/`: the shell completions (clap_complete);
//! - `etc/gateway.toml`, `etc/agent.toml`: the default configs, which are the commented
//!   examples of `packaging/` with their example values commented out (see [`conffile`]);
//! - `rpm/NAME.{post,preun,postun}`: the rpm scriptlets, `packaging/rpm/*.sh` for each
//!   package (cargo-generate-rpm takes them as they are; dpkg tells the Debian scripts
//!   which package they run for, rpm does not).
//!
//! `scripts/package` runs it before it builds the packages.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;

use egret_packaging::conffile;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: egret-package-assets OUT_DIR");
    };
    let out = PathBuf::from(out);
    let binaries = [
        (egret_gateway::cli::Cli::command(), "gateway"),
        (egret_agent::cli::Cli::command(), "agent"),
    ];
    for (command, config) in binaries {
        man_pages(command.clone(), &out.join("man"))?;
        completions(command, &out.join("completions"))?;
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{config}.toml"));
        let text = fs::read_to_string(&example)
            .with_context(|| format!("cannot read {}", example.display()))?;
        let package = format!("egret-{config}");
        write(
            &out.join("etc").join(format!("{config}.toml")),
            conffile::default_config(&text, &package).as_bytes(),
        )?;
        for scriptlet in ["post", "preun", "postun"] {
            let template = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("rpm")
                .join(format!("{scriptlet}.sh"));
            let text = fs::read_to_string(&template)
                .with_context(|| format!("cannot read {}", template.display()))?;
            write(
                &out.join("rpm").join(format!("{package}.{scriptlet}")),
                text.replace("@NAME@", &package).as_bytes(),
            )?;
        }
    }
    Ok(())
}

/// `NAME.1` and `NAME-SUBCOMMAND.1` for every subcommand.
fn man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}

/// Completions where each shell's package looks for them: the file names of bash, zsh and fish.
fn completions(mut command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut command, &name, &mut text);
        write(&dir.join(shell.to_string()).join(file), &text)?;
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
