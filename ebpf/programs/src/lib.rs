//! Everything egret's eBPF programs do besides being entry points: bounds-checked frame reads,
//! header parsers and the node programs' decisions. The entry points live in `gateway_main.rs`
//! (egret-gateway's eBPF object) and `node_main.rs` (egret-agent's); this library keeps the code generic
//! over [`frame::Frame`] so unit tests run it on byte slices on the host.
#![cfg_attr(not(test), no_std)]

pub mod classify;
pub mod frame;
pub mod gateway;
pub mod node;

/// What the crate root of each eBPF object holds besides its programs and maps: the panic
/// handler (BPF target only), the host stub `main` that names the daemon loading the object,
/// and the license section.
#[macro_export]
macro_rules! object_root {
    ($object:literal, $daemon:literal) => {
        #[cfg(target_arch = "bpf")]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            // Nothing in the programs may panic: a reachable panic is an endless loop, which
            // the verifier refuses to load.
            loop {}
        }

        /// Host stub: the programs run in the kernel.
        #[cfg(not(target_arch = "bpf"))]
        fn main() -> std::process::ExitCode {
            eprintln!(concat!(
                $object,
                " is an eBPF object for ",
                $daemon,
                " to load; it does not run on the host"
            ));
            std::process::ExitCode::FAILURE
        }

        /// No GPL-only helper is used, so the object carries the workspace's own license.
        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 11] = *b"Apache-2.0\0";
    };
}
