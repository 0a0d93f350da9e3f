//! Linking the eBPF object needs the `bpf-linker` binary, a dependency cargo cannot express (the
//! aya template's `-ebpf/build.rs` explains why). For the BPF target: fail early with the install
//! command when it is missing, and rebuild when it changes. Host builds of this crate (the
//! library as the agent's build-dependency, clippy, unit tests) link no eBPF and need nothing.

use std::env;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return Ok(());
    }
    let bpf_linker = which::which("bpf-linker").context(
        "bpf-linker is not on PATH; install it with `cargo install bpf-linker@0.10.4 --locked` \
         (scripts/setup does this)",
    )?;
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    Ok(())
}
