//! The Xen block frontend: a virtual disk served by a backend domain over a shared ring.
//!
//! So far this holds the protocol's ABI, [`abi`] (`io/blkif.h`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod abi;
