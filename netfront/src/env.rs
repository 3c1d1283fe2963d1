//! What the driver needs from the guest: pages it can fill and grant, the two shared rings,
//! and event channels. The guest implements these with its frame allocator, grant table and
//! event channels; the host tests with fakes that play the backend.
//!
//! The shape is blkfront's (`blkfront::env`): the same page and grant contract, so one
//! guest implementation of the memory side can serve both drivers. What differs is the
//! rings (two one-page rings of different slot types instead of one ring of `1 << order`
//! pages) and the event channel, which needs no blocking wait and no clock: nothing in this
//! driver blocks, and smoltcp gets its timestamps from its caller.

use grant::{DomId, GrantRef};
use ring::shared::{FrontRing, Pod};

use crate::NetError;

pub use grant::PAGE_SIZE;

/// A page the driver fills and grants (the `grant` crate's, shared by both drivers).
pub use grant::Page;

/// A one-page ring the guest built for the driver: a [`FrontRing`] over a zeroed page it
/// granted writable to the backend, and that grant's reference.
///
/// The driver uses two: `SharedRing<NetifTxRequest, NetifTxResponse>` for transmit and
/// `SharedRing<NetifRxRequest, NetifRxResponse>` for receive (see [`crate::abi`]).
pub trait SharedRing<Req: Pod, Rsp: Pod> {
    fn front(&mut self) -> &mut FrontRing<Req, Rsp>;
    /// Published as `tx-ring-ref` or `rx-ring-ref`.
    fn grant_ref(&self) -> GrantRef;
}

/// Pages and grants: the data pages' side is every driver's ([`grant::Grants`], which the
/// guest implements once), the rings are this driver's.
pub trait Pages: grant::Grants {
    /// Both rings are this type, one instance per slot layout.
    type Ring<Req: Pod, Rsp: Pod>: SharedRing<Req, Rsp>;

    /// Allocates and zeroes one page, builds the [`FrontRing`] over it
    /// (`FrontRing::new(base, 1)`, the only `unsafe` step, which is the guest's) and grants
    /// it writable to `backend`. Called twice per connection, once per ring.
    ///
    /// Errors are [`NetError::NoMemory`] or [`NetError::Grant`]; on error nothing stays
    /// allocated or granted.
    fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        backend: DomId,
    ) -> Result<Self::Ring<Req, Rsp>, NetError>;

    /// Takes back a ring the driver is done with, after the backend disconnected (or never
    /// connected): the guest ends its grant and frees the page, or leaks it if the grant is
    /// still in use.
    fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: Self::Ring<Req, Rsp>);
}

/// The device's event channels.
pub trait EventChannel {
    /// A new port bound to nothing yet that `remote` may connect to
    /// (`EVTCHNOP_alloc_unbound`). The guest registers its handler for it (see
    /// [`crate::Netfront::ports`]) after [`crate::Netfront::connect`] returns.
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, NetError>;

    /// Signals the backend: new requests are on a ring (`EVTCHNOP_send`).
    fn notify(&mut self, port: u32);

    /// Closes `port` (`EVTCHNOP_close`), after the backend disconnected.
    fn close(&mut self, port: u32);
}
