//! Xenbus: the xenstore client and the frontend/backend handshake built on it.
//!
//! - [`wire`] and [`state`]: the wire format of `io/xs_wire.h` and `io/xenbus.h`.
//! - [`client`]: [`Xenstore`], a state machine over the two byte rings of the xenstore page
//!   that keeps many requests in flight, queues watch events and reports everything xenstored
//!   gets wrong as an [`Error`]. The guest supplies the side effects through [`Transport`].
//! - [`store`]: the typed operations ([`Store`]), shared by plain requests and transactions.
//! - [`frontend`]: device discovery and the XenbusState handshake of a frontend.
//! - [`control`]: the toolstack's shutdown requests and the features we advertise.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod client;
pub mod control;
pub mod frontend;
pub mod state;
pub mod store;
pub mod wire;

pub use client::{Error, Protocol, ReqId, Timeout, Transport, WatchEvent, WatchHandler, Xenstore};
pub use state::XenbusState;
pub use store::{Access, Perm, Store, Transaction};
pub use wire::{XsError, XsType, XsdSockmsg};
