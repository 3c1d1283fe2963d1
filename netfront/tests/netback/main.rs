//! The network frontend against a fake netback: a fake xenstored plays the toolstack and the
//! backend's side of the handshake, and a fake backend serves both rings, reaching our pages
//! only through a fake grant table, as netback would.
//!
//! One test crate, so the fakes compile once. Everything runs on one thread: the backend
//! works when a test tells it to (`Rig::serve`, or the raw ring helpers of `World` to play
//! a hostile one) and during the handshake when xenstore waits.
#![allow(clippy::arc_with_non_send_sync)]

use netfront::fake;
mod handshake;
mod hostile;
mod resume;
mod rx;
mod smol;
mod tx;
