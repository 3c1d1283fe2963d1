//! The guest image: everything lives in the `guest` library; this binary only links it.
//! Built for the host (as `cargo test`/`clippy` on the workspace do), it only says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use guest as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the guest kernel runs under Xen or QEMU: build it with `make build`");
    std::process::exit(2);
}
