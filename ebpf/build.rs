//! Builds egret's eBPF objects from `ebpf/programs` with aya-build and leaves them in `OUT_DIR`,
//! where the crate embeds its own; as the aya template's `{{project-name}}/build.rs` does. Both
//! egret-agent and egret-gateway use this one script (`build = "../ebpf/build.rs"`).
//!
//! aya-build runs `cargo +nightly build --target bpfel-unknown-none -Z build-std=core` on the
//! eBPF crate (needs nightly with rust-src and bpf-linker, see scripts/setup). The eBPF crate is
//! also a build-dependency of the crate being built, so cargo reruns this script when it changes.
//!
//! `EGRET_SKIP_EBPF_BUILD=1` writes empty objects instead, for quick checks without that
//! toolchain; the loader refuses an empty object with an error that names this variable.
//! aya-build's own `AYA_BUILD_SKIP=1` does the same.

use std::{
    env::{self, VarError},
    fs,
    path::PathBuf,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use cargo_metadata::{MetadataCommand, Package, Target, TargetKind};

const EBPF_PACKAGE: &str = "egret-ebpf-programs";
const SKIP_ENV: &str = "EGRET_SKIP_EBPF_BUILD";
const AYA_SKIP_ENV: &str = "AYA_BUILD_SKIP";

fn main() -> anyhow::Result<()> {
    // aya-build's own switch builds nothing and keeps whatever object an earlier build left in
    // OUT_DIR; treat it as ours so that a stale object is never embedded.
    let skip = if flag(SKIP_ENV)? {
        Some(SKIP_ENV)
    } else if flag(AYA_SKIP_ENV)? {
        Some(AYA_SKIP_ENV)
    } else {
        None
    };

    let metadata = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|Package { name, .. }| name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} not found in the workspace"))?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // One object per [[bin]] of the eBPF crate, named after it.
    let objects: Vec<PathBuf> = package
        .targets
        .iter()
        .filter(|Target { kind, .. }| *kind == [TargetKind::Bin])
        .map(|Target { name, .. }| out_dir.join(name))
        .collect();

    if let Some(switch) = skip {
        println!(
            "cargo:warning={switch} is set: embedding an empty eBPF object; this binary cannot \
             load its eBPF programs"
        );
        for object in &objects {
            fs::write(object, []).with_context(|| format!("writing {}", object.display()))?;
        }
        return Ok(());
    }

    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", package.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .with_context(|| format!("building the eBPF object (set {SKIP_ENV}=1 to skip it)"))?;

    for object in &objects {
        // Fail here rather than with an unreadable include_bytes! error.
        ensure!(
            object.is_file(),
            "aya-build produced no {}",
            object.display()
        );
    }
    Ok(())
}

/// Whether the skip switch `name` is on: `1` or `true` is on; unset, empty, `0` or `false` is
/// off; anything else is an error.
fn flag(name: &str) -> anyhow::Result<bool> {
    println!("cargo:rerun-if-env-changed={name}");
    match env::var(name) {
        Ok(value) if value == "1" || value.eq_ignore_ascii_case("true") => Ok(true),
        Ok(value) if value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false") => {
            Ok(false)
        }
        Ok(other) => bail!("{name}={other:?}: set 1 to skip the eBPF build, or 0 to build it"),
        Err(VarError::NotPresent) => Ok(false),
        Err(err @ VarError::NotUnicode(_)) => bail!("{name}: {err}"),
    }
}
