//! The xenstore client against a fake xenstored across an in-memory page.
//!
//! One test crate (not one per file) so that the fake is compiled once and each of its
//! helpers is used somewhere.
//!
//! Everything here runs on one thread. State shared with watch handlers is in
//! `Arc<Mutex<_>>` only because the client requires handlers to be `Send` (the guest keeps
//! its client in a static); the fake xenstored, whose page is a raw pointer, rides along.
#![allow(clippy::arc_with_non_send_sync)]

mod client;
use xenbus::fake;
mod frontend;
mod hostile;
