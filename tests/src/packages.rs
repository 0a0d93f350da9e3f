//! The packages `scripts/package` builds (`target/packages/`), for the install tests.
//!
//! [`Packages::get`] takes them from `$EGRET_PACKAGES` when the test command built them
//! already, and otherwise runs `scripts/package` once for the whole test binary, under a
//! file lock so test binaries running at the same time build them once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

use crate::check_output;

/// The two packages, as `scripts/package` names them.
pub const NAMES: [&str; 2] = ["egret-gateway", "egret-agent"];

/// A folder holding the four packages.
#[derive(Debug)]
pub struct Packages {
    dir: PathBuf,
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

impl Packages {
    /// The packages of this checkout: `$EGRET_PACKAGES`, or built with `scripts/package`.
    ///
    /// # Errors
    ///
    /// When they cannot be built, or a package is missing from `$EGRET_PACKAGES`.
    pub fn get() -> Result<&'static Packages> {
        static PACKAGES: OnceLock<Result<Packages, String>> = OnceLock::new();
        PACKAGES
            .get_or_init(|| Packages::find_or_build().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn find_or_build() -> Result<Packages> {
        if let Some(dir) = std::env::var_os("EGRET_PACKAGES") {
            let packages = Packages {
                dir: PathBuf::from(dir),
            };
            packages.check()?;
            return Ok(packages);
        }
        let root = workspace();
        fs::create_dir_all(root.join("target")).context("creating target/")?;
        let lock = root.join("target/packages.lock");
        // flock(1) serialises the test binaries that build at the same time.
        check_output(
            Command::new("flock")
                .arg(&lock)
                .arg(root.join("scripts/package"))
                .current_dir(&root)
                .env_remove("CARGO_TARGET_DIR"),
        )
        .context("building the packages with scripts/package (scripts/setup installs its tools)")?;
        let packages = Packages {
            dir: root.join("target/packages"),
        };
        packages.check()?;
        Ok(packages)
    }

    fn check(&self) -> Result<()> {
        for name in NAMES {
            for path in [self.deb(name)?, self.rpm(name)?] {
                if !path.is_file() {
                    bail!("{} is missing", path.display());
                }
            }
        }
        Ok(())
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `.deb` of `name` (revision 1).
    ///
    /// # Errors
    ///
    /// When there is not exactly one.
    pub fn deb(&self, name: &str) -> Result<PathBuf> {
        self.one(name, &format!("{name}_"), ".deb")
    }

    /// The `.rpm` of `name`.
    ///
    /// # Errors
    ///
    /// When there is not exactly one.
    pub fn rpm(&self, name: &str) -> Result<PathBuf> {
        self.one(name, &format!("{name}-"), ".rpm")
    }

    fn one(&self, name: &str, prefix: &str, suffix: &str) -> Result<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
            })
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            n => bail!("{n} {suffix} packages of {name} in {}", self.dir.display()),
        }
    }
}

/// The version of a `.deb` (`dpkg-deb -f PKG Version`).
///
/// # Errors
///
/// When dpkg-deb fails.
pub fn deb_version(deb: &Path) -> Result<String> {
    Ok(
        check_output(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?
            .trim()
            .to_owned(),
    )
}

/// A newer revision of `deb` written into `out`: the same files with `Version` bumped to
/// `version`, and `line` appended to its conffile `conffile` (so an upgrade meets a
/// changed default config, as a new release would bring).
///
/// # Errors
///
/// When dpkg-deb fails or the files cannot be changed.
pub fn next_revision(
    deb: &Path,
    version: &str,
    conffile: &str,
    line: &str,
    out: &Path,
) -> Result<PathBuf> {
    let tree = out.join("tree");
    let _ = fs::remove_dir_all(&tree);
    check_output(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree))?;
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).context("reading DEBIAN/control")?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&control, text).context("writing DEBIAN/control")?;
    let path = tree.join(conffile.trim_start_matches('/'));
    let mut text = fs::read_to_string(&path).with_context(|| format!("reading {conffile}"))?;
    text.push_str(line);
    text.push('\n');
    fs::write(&path, text).with_context(|| format!("writing {conffile}"))?;
    let name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').next())
        .context("a .deb file name")?;
    let built = out.join(format!("{name}_{version}_amd64.deb"));
    check_output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-b"])
            .arg(&tree)
            .arg(&built),
    )?;
    fs::remove_dir_all(&tree).context("removing the unpacked tree")?;
    Ok(built)
}
