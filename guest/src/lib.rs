//! A Xen PV guest unikernel. One image boots three ways (Xen PV via `startup_xen`, native
//! via the PVH entry QEMU's `-kernel` uses), with every privileged operation behind
//! [`pvops`], whose backend is chosen once at boot.
//!
//! Pure logic (command line, frame bookkeeping, clock arithmetic) builds on any target and
//! is unit-tested on the host; the kernel proper builds only for `target_os = "none"`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod apps;
pub mod cmdline;
pub mod mm;
pub mod net;
pub mod pvpatch;
pub mod sha256;
pub mod time;
pub mod vdev;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod bench;
#[cfg(target_os = "none")]
pub mod blk;
#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod pvops;
#[cfg(target_os = "none")]
pub mod selftest;
#[cfg(target_os = "none")]
pub mod smp;
#[cfg(target_os = "none")]
pub mod sync;
#[cfg(target_os = "none")]
pub mod xen;
