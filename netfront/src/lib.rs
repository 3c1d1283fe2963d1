//! The Xen network frontend: a virtual NIC served by a backend domain over a transmit and
//! a receive ring.
//!
//! So far this holds the protocol's ABI, [`abi`] (`io/netif.h`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod abi;
