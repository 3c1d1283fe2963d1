//! Xenbus: the xenstore client and the frontend/backend handshake built on it.
//!
//! - [`wire`] and [`state`]: the wire format of `io/xs_wire.h` and `io/xenbus.h`.
//! - [`client`]: [`Xenstore`], a state machine over the two byte rings of the xenstore page
//!   that keeps many requests in flight, queues watch events and reports everything xenstored
//!   gets wrong as an [`Error`]. The guest supplies the side effects through [`Transport`].
//! - [`store`]: the typed operations ([`Store`]), shared by plain requests and transactions.
//! - [`frontend`]: device discovery and the XenbusState handshake of a frontend.
//! - [`control`]: the toolstack's shutdown requests and the features we advertise.
//! - `fake` (feature `test-utils`): a fake xenstored, with knobs for misbehaving, for the
//!   host tests of this crate, of the drivers and of the fuzz targets.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]
// The fake xenstored (feature `test-utils`, never in the guest) hands the client its ends of
// the page's rings, the one `unsafe` step: everything else here is safe code.
#![cfg_attr(not(feature = "test-utils"), forbid(unsafe_code))]
#![cfg_attr(feature = "test-utils", deny(unsafe_code))]

extern crate alloc;

pub mod client;
pub mod control;
mod events;
#[cfg(feature = "test-utils")]
#[allow(unsafe_code)]
pub mod fake;
pub mod frontend;
pub mod state;
pub mod store;
pub mod wire;

pub use client::{Error, Protocol, ReqId, Timeout, Transport, WatchEvent, WatchHandler, Xenstore};
pub use state::XenbusState;
pub use store::{Access, Perm, Store, Transaction};
pub use wire::{XsError, XsType, XsdSockmsg};
