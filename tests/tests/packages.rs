//! The packages as files: lint-clean, listing what they install, their conffiles and their
//! scriptlets, and their units hardened. Booting them is `install.rs`.

use std::process::Command;

use egret_lab::{
    WorkDir, check_output,
    packages::{NAMES, Packages, workspace},
};

fn packages() -> &'static Packages {
    Packages::get().expect("the packages (scripts/package)")
}

/// Runs a checker and fails with everything it said.
fn clean(command: &mut Command) {
    let output = command.output().expect("the checker runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{said}");
    eprintln!("{said}");
}

#[test]
fn lintian_finds_nothing_but_the_justified_overrides() {
    let mut lintian = Command::new("lintian");
    lintian.args(["--fail-on", "error,warning", "--no-tag-display-limit"]);
    for name in NAMES {
        lintian.arg(packages().deb(name).expect("deb"));
    }
    clean(&mut lintian);
}

#[test]
fn rpmlint_finds_nothing_but_the_justified_filters() {
    let mut rpmlint = Command::new("rpmlint");
    rpmlint
        .arg("--strict")
        .arg("-c")
        .arg(workspace().join("packaging/rpmlint.toml"));
    for name in NAMES {
        rpmlint.arg(packages().rpm(name).expect("rpm"));
    }
    clean(&mut rpmlint);
    // --strict turns warnings into a failure; the summary must agree.
    let output = rpmlint.output().expect("rpmlint");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("0 errors, 0 warnings"),
        "rpmlint summary: {summary}"
    );
}

/// What each package must install, besides its binary.
fn expected_files(name: &str) -> Vec<String> {
    let short = name.trim_start_matches("egret-");
    vec![
        format!("/usr/bin/{name}"),
        format!("/usr/lib/systemd/system/{name}.service"),
        format!("/usr/lib/sysusers.d/{name}.conf"),
        format!("/etc/egret/{short}.toml"),
        format!("/usr/share/man/man1/{name}.1.gz"),
        format!("/usr/share/man/man1/{name}-run.1.gz"),
        format!("/usr/share/man/man1/{name}-check.1.gz"),
        format!("/usr/share/bash-completion/completions/{name}"),
        format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
    ]
}

#[test]
fn rpm_lists_its_files_its_noreplace_config_and_the_systemd_scriptlets() {
    for name in NAMES {
        let rpm = packages().rpm(name).expect("rpm");
        let query = |args: &[&str]| {
            check_output(Command::new("rpm").arg("-qp").args(args).arg(&rpm)).expect("rpm -qp")
        };
        let files = query(&["-l"]);
        for file in expected_files(name) {
            assert!(files.lines().any(|l| l == file), "{file} not in:\n{files}");
        }
        assert!(files.contains(&format!("/usr/share/zsh/site-functions/_{name}")));
        for doc in ["changelog", "copyright"] {
            assert!(
                files.contains(&format!("/usr/share/doc/{name}/{doc}")),
                "{doc}"
            );
        }
        assert!(files.contains(&format!("/usr/lib/systemd/system-preset/80-{name}.preset")));
        // -c: the config files; the dump's 9th field says noreplace (%config(noreplace)).
        let config = query(&["-c"]);
        let conffile = format!("/etc/egret/{}.toml", name.trim_start_matches("egret-"));
        assert!(config.lines().any(|l| l == conffile), "-qpc: {config}");
        let dump = query(&["--dump"]);
        let line = dump
            .lines()
            .find(|l| l.starts_with(&format!("{conffile} ")))
            .expect("the conffile in --dump");
        // path size mtime digest mode owner group isconfig isdoc ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[7], "1", "the conffile is a config file: {line}");
        let flags = check_output(
            Command::new("rpm")
                .args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"])
                .arg(&rpm),
        )
        .expect("rpm --qf");
        assert!(
            flags
                .lines()
                .any(|l| l.starts_with(&conffile) && l.ends_with(" cn")),
            "{conffile} is %config(noreplace):\n{flags}"
        );
        let scripts = query(&["--scripts"]);
        for expected in [
            "postinstall scriptlet",
            "systemd-sysusers",
            "systemctl --no-reload preset",
            "preuninstall scriptlet",
            "disable --now",
            "postuninstall scriptlet",
            "try-restart",
        ] {
            assert!(scripts.contains(expected), "{expected} not in:\n{scripts}");
        }
        assert!(!scripts.contains("@NAME@"), "{scripts}");
        let requires = query(&["--requires"]);
        assert!(requires.contains("nftables"), "{requires}");
    }
}

#[test]
fn deb_lists_its_files_and_its_conffile() {
    for name in NAMES {
        let deb = packages().deb(name).expect("deb");
        let contents =
            check_output(Command::new("dpkg-deb").arg("-c").arg(&deb)).expect("dpkg-deb -c");
        let paths: Vec<&str> = contents
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .map(|p| p.trim_start_matches('.'))
            .collect();
        for file in expected_files(name) {
            assert!(paths.contains(&file.as_str()), "{file} not in:\n{contents}");
        }
        let work = WorkDir::new(&format!("ctrl-{name}")).expect("work dir");
        check_output(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(&deb)
                .arg(work.path().join("DEBIAN")),
        )
        .expect("dpkg-deb -e");
        let conffiles =
            std::fs::read_to_string(work.path().join("DEBIAN/conffiles")).expect("conffiles");
        assert_eq!(
            conffiles.trim(),
            format!("/etc/egret/{}.toml", name.trim_start_matches("egret-"))
        );
        for doc in ["copyright", "changelog.Debian.gz"] {
            assert!(
                paths.contains(&format!("/usr/share/doc/{name}/{doc}").as_str()),
                "{doc} not in:\n{contents}"
            );
        }
        for script in ["postinst", "prerm", "postrm"] {
            assert!(
                work.path().join("DEBIAN").join(script).is_file(),
                "{script}"
            );
        }
    }
}

/// The exposure `systemd-analyze security` may give a unit, in its tenths: both units score
/// 2.0 or less today ("OK"); a lost hardening setting fails this.
const EXPOSURE_THRESHOLD: u32 = 25;

#[test]
fn units_are_hardened_below_the_exposure_threshold() {
    for name in NAMES {
        let root = WorkDir::new(&format!("root-{name}")).expect("work dir");
        let deb = packages().deb(name).expect("deb");
        check_output(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(root.path()),
        )
        .expect("dpkg-deb -x");
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--root={}", root.path().display()))
            .arg(format!("--threshold={EXPOSURE_THRESHOLD}"))
            .arg(format!("{name}.service"))
            .output()
            .expect("systemd-analyze");
        let report = String::from_utf8_lossy(&output.stdout);
        let overall = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no overall line");
        eprintln!("{name}: {overall}");
        assert!(
            output.status.success(),
            "{name}: exposure over {EXPOSURE_THRESHOLD}/10:\n{report}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The settings this project relies on, read back from the installed unit.
        let unit = std::fs::read_to_string(
            root.path()
                .join(format!("usr/lib/systemd/system/{name}.service")),
        )
        .expect("the unit");
        for setting in [
            format!("User={name}"),
            "NoNewPrivileges=yes".to_owned(),
            "ProtectSystem=strict".to_owned(),
            "ProtectHome=yes".to_owned(),
            "PrivateTmp=yes".to_owned(),
            "Type=notify".to_owned(),
            "Restart=on-failure".to_owned(),
            "ExecStartPre=/usr/bin/".to_owned() + name + " check",
        ] {
            assert!(unit.contains(&setting), "{name}: {setting} missing");
        }
    }
}
