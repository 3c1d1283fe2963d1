//! What the driver needs from the guest: pages it can fill and grant, the shared ring, and
//! an event channel. The guest implements these with its frame allocator, grant table and
//! event channels; the host tests with fakes that play the backend.

use grant::{DomId, GrantRef};
use ring::shared::FrontRing;

use crate::abi::{BlkifRequest, BlkifResponse};
use crate::BlkError;

pub use grant::PAGE_SIZE;

/// A page the driver fills and grants (the `grant` crate's, shared by both drivers).
pub use grant::Page;

/// The ring the guest built for the driver: a [`FrontRing`] over pages it allocated and
/// granted (writable) to the backend, and the references of those grants, in page order.
///
/// The guest owns the memory: the driver hands the ring back through
/// [`Pages::free_ring`] when it closes or when the handshake fails.
pub trait SharedRing {
    fn front(&mut self) -> &mut FrontRing<BlkifRequest, BlkifResponse>;
    /// One reference per ring page, in page order (`1 << order` of them for a ring from
    /// [`Pages::alloc_ring`]`(_, order)`); the driver publishes them as `ring-ref` (one
    /// page) or `ring-ref0..N` (several).
    fn grant_refs(&self) -> &[GrantRef];
}

/// Pages and grants: the data pages' side is every driver's ([`grant::Grants`], which the
/// guest implements once), the ring is this driver's.
pub trait Pages: grant::Grants {
    type Ring: SharedRing;

    /// Allocates and zeroes `1 << order` pages for the shared ring, contiguous in our
    /// address space (the ring is one array across them; the frames behind them need not be
    /// contiguous, each is granted on its own), builds the [`FrontRing`] over all of them
    /// (`FrontRing::new(base, 1 << order)`, the only `unsafe` step, which is the guest's),
    /// and grants each page writable to `backend`, one grant per page, references in page
    /// order. The driver asks for an order from 0 to [`crate::RING_PAGE_ORDER`], never more
    /// than the backend's `max-ring-page-order`.
    ///
    /// Errors are [`BlkError::NoMemory`], [`BlkError::NotSupported`] (this order is not
    /// supported) or [`BlkError::Grant`]; the first two make the driver retry with order 0.
    /// On error nothing stays allocated or granted.
    fn alloc_ring(&mut self, backend: DomId, order: u32) -> Result<Self::Ring, BlkError>;

    /// Takes back a ring the driver is done with, after the backend disconnected (or never
    /// connected): the guest ends its grants and frees the pages, or leaks them if a grant
    /// is still in use.
    fn free_ring(&mut self, ring: Self::Ring);
}

/// The deadline passed without an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout;

/// The device's event channel.
pub trait EventChannel {
    /// A new port bound to nothing yet that `remote` may connect to
    /// (`EVTCHNOP_alloc_unbound`). The guest registers its handler for it (see
    /// [`crate::Blkfront::port`]) after [`crate::Blkfront::connect`] returns.
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, BlkError>;

    /// Signals the backend: new requests are on the ring (`EVTCHNOP_send`).
    fn notify(&mut self, port: u32);

    /// Blocks until `port` fired since the previous `wait` returned, or until
    /// [`now_ns`](Self::now_ns) reaches `deadline_ns`. An event that fired before the call
    /// must make it return at once: the driver checks the ring, then waits, and a response
    /// that arrived in between must not be missed until the deadline. Spurious returns are
    /// fine. Used only by the blocking calls of [`crate::BlockDevice`].
    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout>;

    /// A monotonic clock in nanoseconds.
    fn now_ns(&self) -> u64;

    /// Whether the backend left Connected (Closing, Closed, or its directory gone: the
    /// toolstack is taking the device away) since the driver connected. The guest learns
    /// it from a watch on the backend's `state`, as Linux's blkfront does. Every
    /// [`Blkfront::poll`](crate::Blkfront::poll) asks; once it says so, every request fails
    /// with [`BlkError::BackendClosed`] and the device only waits for its close.
    fn backend_closing(&mut self) -> bool;

    /// Closes `port` (`EVTCHNOP_close`), after the backend disconnected.
    fn close(&mut self, port: u32);
}
