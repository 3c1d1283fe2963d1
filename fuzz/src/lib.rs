//! Fuzz targets for every parser of data the other side of a Xen interface controls:
//! xenstore replies and watch events, the blkfront and netfront ring consumers, the console
//! ring, the kernel command line, and what the guest's network code reads off the wire.
//!
//! Each target ([`targets`]) is one `fn(&[u8])` that reads its input as a script of what a
//! hostile peer does and drives the real driver code through it. A target fails if it
//! panics (an `unwrap`, an overflow, an index out of bounds) or does not return. cargo-fuzz's
//! binaries (`fuzz_targets/`) run the same functions under libFuzzer; [`runner`] runs them
//! on stable Rust without it, for `cargo test`.
//!
//! The fakes the drivers' own tests use (xenstored, blkback, netback) play the peer here too,
//! from those crates' `test-utils` feature.
#![allow(clippy::arc_with_non_send_sync)] // the fakes' choice: see xenbus/tests/xenstored

pub mod input;
pub mod runner;
pub mod targets;

// The drivers' and xenbus's own fakes (their `test-utils` feature).
use blkfront::fake as blkback;
use netfront::fake as netback;
use xenbus::fake as xenstored;
