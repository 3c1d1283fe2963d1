//! Xenbus: the xenstore client and the frontend/backend handshake built on it.
//!
//! So far this holds the wire format: [`wire`] for `io/xs_wire.h` (message header, message
//! types, error strings, the shared page's layout) and [`state`] for `io/xenbus.h`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod state;
pub mod wire;

pub use state::XenbusState;
pub use wire::{XsError, XsType, XsdSockmsg};
