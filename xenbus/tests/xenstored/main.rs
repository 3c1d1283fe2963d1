//! The xenstore client against a fake xenstored across an in-memory page.
//!
//! One test crate (not one per file) so that the fake is compiled once and each of its
//! helpers is used somewhere.

mod client;
mod fake;
mod frontend;
mod hostile;
