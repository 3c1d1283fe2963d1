//! The only place that enters the hypervisor: hypercall instructions written from the
//! x86-64 register ABI, typed wrappers returning `Result<_, Errno>`, and the ABI types
//! `xen-sys` lacks.
//!
//! The hypercall page is filled by Xen (PV) or by the guest through an MSR (PVH); until
//! [`init`] names it, every hypercall fails with `ENOSYS` instead of jumping to nowhere.
#![cfg_attr(not(test), no_std)]

pub mod abi;
mod errno;
pub mod multicall;
pub mod ops;
pub mod raw;

pub use errno::Errno;
pub use raw::{init, is_available};

/// The result of a hypercall: Xen returns `-errno` in `rax` on failure.
pub type Result<T> = core::result::Result<T, Errno>;
