//! The Xen block frontend: a virtual disk served by a backend domain over a shared ring.
//!
//! - [`abi`]: the protocol's structs and constants (`io/blkif.h`).
//! - [`mod@env`]: what the guest supplies, as traits: pages it can grant ([`Pages`]), the ring
//!   it built over one of them ([`SharedRing`]) and an event channel ([`EventChannel`]).
//!   Everything that touches raw memory or Xen sits behind them, so this crate forbids
//!   `unsafe` and runs on the host against a fake backend.
//! - [`info`]: what the backend tells us about the disk, validated.
//! - [`Blkfront`]: the driver. [`Blkfront::connect`] runs the xenbus handshake; then
//!   [`Blkfront::submit`] and [`Blkfront::poll`] keep many requests in flight, and the
//!   [`BlockDevice`] trait offers blocking reads and writes on top of them.
//!
//! # Integrating it (the guest's side)
//!
//! 1. Implement [`Pages`] (frame allocator + [`grant::GrantTable`]; `alloc_ring` is where
//!    the one `unsafe` call, `FrontRing::new`, lives, over `1 << order` pages) and [`EventChannel`] (the `events`
//!    crate's alloc_unbound/send/close, plus a wait on the port with the clock).
//! 2. `Blkfront::connect(&mut xenstore, vbd_id, pages, evtchn, timeout_ns)`; the vbd ids
//!    come from `xenbus::frontend::device_ids(xs, "vbd")`.
//! 3. Route the port [`Blkfront::port`] to the driver. The driver is a plain `&mut` value
//!    with no locking of its own, so either (a) the event handler only records that the
//!    port fired (the `events` crate's pending bit does) and whoever holds the driver calls
//!    [`Blkfront::poll`] in its wait loop, which is what the blocking [`BlockDevice`]
//!    calls do through [`EventChannel::wait`]; or (b) the driver sits behind a lock and
//!    the handler calls `poll` when it can take the lock. `poll` is cheap and idempotent;
//!    calling it with nothing to do, or too often, is harmless.
//! 4. Asynchronous users [`Blkfront::submit`] requests and collect
//!    [`Blkfront::take_completion`] after `poll`; everyone else uses [`BlockDevice`].
//! 5. [`Blkfront::close`] before giving the memory up.
//!
//! # Negotiated features
//!
//! - Indirect descriptors (`feature-max-indirect-segments`): reads and writes of more than
//!   11 pages go out as one [`abi::BlkifRequestIndirect`] of up to
//!   [`MAX_INDIRECT_SEGMENTS`] pages (1 MiB) instead of many direct requests.
//! - Multi-page rings (`max-ring-page-order`): up to `1 << `[`RING_PAGE_ORDER`] pages (128
//!   requests in flight), if the guest's [`Pages::alloc_ring`] provides them; a one-page
//!   ring otherwise.
//! - Persistent grants (`feature-persistent`): up to [`MAX_PERSISTENT_GRANTS`] bounce pages
//!   stay granted and mapped by the backend across requests, which spares it a map and an
//!   unmap per page (see the `driver` module's docs for what that trusts the backend with).
//!
//! Not yet: multiple queues.
//!
//! The backend is another domain and may be buggy or hostile. Data only ever crosses in
//! bounce pages the driver owns and fills with nothing but the request's data; every value
//! it writes to xenstore or the ring is validated before use, and a response is matched to
//! a request only through the driver's own table of outstanding requests.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
mod block;
mod driver;
pub mod env;
#[cfg(feature = "test-utils")]
pub mod fake;
mod handshake;
pub mod info;

pub use block::BlockDevice;
pub use driver::{
    Blkfront, Completion, Request, RequestId, Stats, MAX_INDIRECT_SEGMENTS, MAX_PERSISTENT_GRANTS,
    MAX_QUARANTINED,
};
pub use env::{BlkRing, EventChannel, Page, Pages, SharedRing, Timeout};
pub use handshake::RING_PAGE_ORDER;
pub use info::{DiskInfo, Features};

use core::fmt;

pub use frontend::DeviceError;

/// Why a block operation, or the connection, failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The backend answered `BLKIF_RSP_ERROR`: the I/O failed.
    Io,
    /// The backend answered `BLKIF_RSP_EOPNOTSUPP`, or it does not offer the feature the
    /// operation needs (discard). Checked before the ring where the feature is known.
    NotSupported,
    /// The sectors lie (partly) beyond the end of the disk. Checked before the ring.
    OutOfRange,
    /// A write or discard to a read-only disk. Checked before the ring.
    ReadOnly,
    /// An empty transfer, or a sector or length that is not a whole number of the disk's
    /// logical sectors ([`DiskInfo::sector_size`]).
    Misaligned,
    /// The backend answered this request with a response that cannot be right (wrong
    /// operation, unknown status), or answered a read while still holding its pages (the
    /// data could change under us). The driver goes on serving the others.
    BadResponse,
    /// No completion before the deadline. The request stays owned by the driver (the
    /// backend may still be using its pages) and its late completion is discarded.
    Timeout,
    /// What every frontend may fail with: the device broke (a corrupted ring, more pages
    /// held past their requests than [`MAX_QUARANTINED`]) or closed, the guest ran out of
    /// pages (and no request in flight could free one), grants or ports, the handshake's
    /// xenstore or backend values failed.
    Device(DeviceError),
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::Io => f.write_str("blkfront: I/O error reported by the backend"),
            BlkError::NotSupported => f.write_str("blkfront: operation not supported"),
            BlkError::OutOfRange => f.write_str("blkfront: sectors beyond the end of the disk"),
            BlkError::ReadOnly => f.write_str("blkfront: disk is read-only"),
            BlkError::Misaligned => {
                f.write_str("blkfront: empty or not a multiple of the logical sector size")
            }
            BlkError::BadResponse => f.write_str(
                "blkfront: the backend's answer cannot be trusted (malformed, or its pages still \
                 mapped)",
            ),
            BlkError::Timeout => f.write_str("blkfront: timed out"),
            BlkError::Device(e) => write!(f, "blkfront: {e}"),
        }
    }
}

frontend::wrap_device_error!(BlkError);
