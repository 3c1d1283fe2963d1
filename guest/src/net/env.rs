//! netfront's environment in this kernel: ring pages granted to the backend and event
//! channels, through the frontends' common plumbing.

use crate::arch::pfn_to_virt;
use crate::xen::frontend::{self, GuestPages, RingError};
use core::ptr::NonNull;
use grant::{DomId, GrantRef};
use netfront::{NetError, Netfront};
use ring::shared::{FrontRing, Pod};

/// One ring page, granted to the backend.
pub struct NetRing<Req: Pod, Rsp: Pod> {
    pfn: u64,
    front: FrontRing<Req, Rsp>,
    gref: GrantRef,
}

impl<Req: Pod, Rsp: Pod> netfront::SharedRing<Req, Rsp> for NetRing<Req, Rsp> {
    fn front(&mut self) -> &mut FrontRing<Req, Rsp> {
        &mut self.front
    }

    fn grant_ref(&self) -> GrantRef {
        self.gref
    }
}

impl netfront::Pages for GuestPages {
    type Ring<Req: Pod, Rsp: Pod> = NetRing<Req, Rsp>;

    fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        backend: DomId,
    ) -> Result<NetRing<Req, Rsp>, NetError> {
        let (pfn, refs) = frontend::alloc_ring_pages(backend, 1).map_err(|e| match e {
            RingError::NoMemory => NetError::NoMemory,
            RingError::Grant(e) => NetError::Grant(e),
        })?;
        let va = pfn_to_virt(pfn) as *mut u8;
        // SAFETY: the zeroed page is ours for as long as the ring lives (free_ring frees it
        // only after the backend gave its grant back) and only this ring uses it.
        let front = unsafe { FrontRing::new(NonNull::new_unchecked(va), 1) };
        Ok(NetRing { pfn, front, gref: refs[0] })
    }

    fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: NetRing<Req, Rsp>) {
        frontend::release_ring_pages(ring.pfn, &[ring.gref]);
    }
}

pub struct NetEvents;

impl netfront::EventChannel for NetEvents {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, NetError> {
        frontend::alloc_port(remote).ok_or(NetError::EventChannel)
    }

    fn notify(&mut self, port: u32) {
        frontend::notify(port)
    }

    fn close(&mut self, port: u32) {
        frontend::close_port(port)
    }
}

pub type Vif = Netfront<GuestPages, NetEvents>;
