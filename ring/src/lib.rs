//! The two shared-memory ring protocols Xen frontends speak, each implemented once:
//! the byte ring of the console and xenstore pages ([`byte`]) and the request/response
//! ring of `io/ring.h` ([`shared`]) that blkfront and netfront use.
//!
//! The other side of every ring is another domain that may be buggy or hostile: indices it
//! publishes are validated before use and data it writes is copied out exactly once.
#![cfg_attr(not(test), no_std)]

pub mod byte;
pub mod shared;
