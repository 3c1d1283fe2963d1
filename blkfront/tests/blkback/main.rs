//! The block frontend against a fake blkback: a fake xenstored plays the toolstack and the
//! backend's side of the handshake, and a fake backend serves the shared ring, reaching our
//! pages only through a fake grant table, as blkback would.
//!
//! One test crate, so the fakes compile once. Everything runs on one thread: the backend
//! works when the driver waits (its event channel's `wait`, xenstore's `Transport::wait`)
//! or when a test tells it to.
#![allow(clippy::arc_with_non_send_sync)]

use blkfront::fake;

mod handshake;
mod hostile;
mod indirect;
mod io;
mod multipage;
mod persistent;
mod resume;
