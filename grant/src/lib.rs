//! Grant tables: how this domain lets another one (a backend) access its pages.
//!
//! [`abi`] holds the grant-table types of `public/grant_table.h`; [`refs`] hands out grant
//! references from a fixed pool, catching exhaustion and double frees; [`table`] is the
//! table itself, shared with Xen, in which references become grants; [`ops`] issues the
//! grant-table hypercalls that size the table and copy between grants; [`Page`] is what a
//! driver grants, and [`pool`] the life of every driver's granted pages.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod abi;
#[cfg(feature = "test-utils")]
pub mod fake;
pub mod ops;
mod page;
pub mod pool;
pub mod refs;
pub mod table;

pub use abi::{DomId, GrantRef};
pub use page::{Page, PAGE_SIZE};
pub use pool::{Granted, Grants, PagePool, PoolStats, Settled, Spare};
pub use refs::{RefAllocator, RefError};
pub use table::{GrantTable, MAX_FRAMES};

use abi::GrantStatus;
use hypercall::Errno;

/// Why a grant-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// Every reference is in use; more may come with another frame
    /// ([`GrantTable::needs_frames`]).
    Exhausted,
    /// The reference is not granted by us: ended already, never handed out, reserved, or
    /// beyond the table.
    NotGranted(GrantRef),
    /// The grantee is using the page (`GTF_reading`/`GTF_writing`); the grant stays, retry
    /// later.
    InUse(GrantRef),
    /// A v1 entry holds a 32-bit frame number.
    FrameTooLarge(u64),
    /// The table already has [`MAX_FRAMES`] frames.
    TableFull,
    /// The hypercall itself failed.
    Hypercall(Errno),
    /// Xen refused operation `index` of the call.
    Status { index: usize, status: GrantStatus },
    /// Xen wrote a status code for operation `index` that `grant_table.h` does not define.
    UnknownStatus { index: usize, raw: i16 },
}

impl From<RefError> for GrantError {
    fn from(e: RefError) -> Self {
        match e {
            RefError::Exhausted => GrantError::Exhausted,
            RefError::NotAllocated(r) | RefError::OutOfRange(r) => GrantError::NotGranted(r),
            RefError::Full => GrantError::TableFull,
        }
    }
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::Exhausted => f.write_str("no free grant reference"),
            GrantError::NotGranted(r) => write!(f, "grant reference {} is not granted", r.0),
            GrantError::InUse(r) => write!(f, "grant reference {} is in use by its grantee", r.0),
            GrantError::FrameTooLarge(fr) => write!(f, "frame {fr:#x} does not fit a v1 grant"),
            GrantError::TableFull => write!(f, "grant table already has {MAX_FRAMES} frames"),
            GrantError::Hypercall(e) => write!(f, "grant_table_op failed: {e}"),
            GrantError::Status { index, status } => write!(f, "grant op {index}: {status:?}"),
            GrantError::UnknownStatus { index, raw } => {
                write!(f, "grant op {index}: unknown status {raw}")
            }
        }
    }
}
