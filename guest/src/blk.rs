//! Block devices (Xen only): blkfront's environment in this kernel — pages, grants and
//! event channels from [`crate::frontend`] — and connecting the disks the toolstack gave us.

use crate::arch::pfn_to_virt;
use crate::frontend::{self, GuestPage, RingError};
use crate::xenstore;
use alloc::vec::Vec;
use blkfront::abi::{BlkifRequest, BlkifResponse};
use blkfront::{BlkError, Blkfront, Timeout};
use core::ptr::NonNull;
use grant::{DomId, GrantError, GrantRef};
use ring::shared::FrontRing;

/// A request ring of 2^order contiguous pages, each granted to the backend.
pub struct GuestRing {
    pfn: u64,
    front: FrontRing<BlkifRequest, BlkifResponse>,
    refs: Vec<GrantRef>,
}

impl blkfront::SharedRing for GuestRing {
    fn front(&mut self) -> &mut FrontRing<BlkifRequest, BlkifResponse> {
        &mut self.front
    }

    fn grant_refs(&self) -> &[GrantRef] {
        &self.refs
    }
}

pub struct GuestPages;

impl blkfront::Pages for GuestPages {
    type Page = GuestPage;
    type Ring = GuestRing;

    fn alloc_page(&mut self) -> Option<GuestPage> {
        GuestPage::alloc()
    }

    fn free_page(&mut self, page: GuestPage) {
        page.free()
    }

    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError> {
        frontend::grant(frame, domid, readonly)
    }

    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        frontend::end_grant(gref)
    }

    fn alloc_ring(&mut self, backend: DomId, order: u32) -> Result<GuestRing, BlkError> {
        // Beyond 16 pages (order 4, blkback's usual limit) is not worth the memory.
        if order > 4 {
            return Err(BlkError::NotSupported);
        }
        let pages = 1usize << order;
        let (pfn, refs) =
            frontend::alloc_ring_pages(backend, pages as u64).map_err(|e| match e {
                RingError::NoMemory => BlkError::NoMemory,
                RingError::Grant(e) => BlkError::Grant(e),
            })?;
        let va = pfn_to_virt(pfn) as *mut u8;
        // SAFETY: the zeroed pages are ours for as long as the ring lives (free_ring frees
        // them only after the backend gave every grant back) and only this ring uses them.
        let front = unsafe { FrontRing::new(NonNull::new_unchecked(va), pages) };
        Ok(GuestRing { pfn, front, refs })
    }

    fn free_ring(&mut self, ring: GuestRing) {
        frontend::release_ring_pages(ring.pfn, &ring.refs);
    }
}

pub struct GuestEvents;

impl blkfront::EventChannel for GuestEvents {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, BlkError> {
        frontend::alloc_port(remote).ok_or(BlkError::EventChannel)
    }

    fn notify(&mut self, port: u32) {
        frontend::notify(port)
    }

    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout> {
        frontend::wait(port, deadline_ns).then_some(()).ok_or(Timeout)
    }

    fn now_ns(&self) -> u64 {
        frontend::now_ns()
    }

    fn close(&mut self, port: u32) {
        frontend::close_port(port)
    }
}

pub type Disk = Blkfront<GuestPages, GuestEvents>;

/// How long a disk may take to connect or answer.
pub const TIMEOUT_NS: u64 = 10_000_000_000;

/// The virtual disks the toolstack gave us (`device/vbd/<id>`), by id.
pub fn disk_ids() -> Result<Vec<u32>, xenbus::Error> {
    xenstore::with(|xs| xenbus::frontend::device_ids(xs, "vbd")).unwrap_or(Ok(Vec::new()))
}

/// Connects disk `id` (its xenbus device id, e.g. 51728 for xvdb).
pub fn connect(id: u32) -> Result<Disk, BlkError> {
    xenstore::with(|xs| Blkfront::connect(xs, id, GuestPages, GuestEvents, TIMEOUT_NS))
        .unwrap_or(Err(BlkError::NotConnected))
}

/// Disconnects a disk, failing what it still had outstanding.
pub fn close(disk: Disk) -> Result<(), BlkError> {
    xenstore::with(|xs| disk.close(xs, TIMEOUT_NS).0).unwrap_or(Err(BlkError::NotConnected))
}

/// The xenbus device id of `xvd<letter>` (major 202, 16 minors a disk).
pub const fn xvd(letter: u8) -> u32 {
    (202 << 8) | ((letter - b'a') as u32 * 16)
}
