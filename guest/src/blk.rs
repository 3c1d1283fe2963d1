//! Block devices (Xen only): blkfront's environment in this kernel — pages from the frame
//! allocator, grants from the grant table, event channels — and connecting the disks the
//! toolstack gave us.

use crate::arch::{pfn_to_virt, xen};
use crate::{evtchn, gnttab, mm, pvops, time, xenstore};
use alloc::vec::Vec;
use blkfront::abi::{BlkifRequest, BlkifResponse};
use blkfront::{BlkError, Blkfront, Timeout};
use core::ptr::NonNull;
use events::Port;
use grant::{DomId, GrantError, GrantRef};
use ring::shared::FrontRing;

/// A page of ours that blkfront fills and grants. Dropping it leaks the frame on purpose:
/// blkfront drops a page only when the backend would not give its grant back.
pub struct GuestPage {
    pfn: u64,
}

impl blkfront::Page for GuestPage {
    fn bytes(&self) -> &[u8; 4096] {
        // SAFETY: the frame belongs to this value alone and is direct-mapped; blkfront reads
        // it only while no grant lets the backend write it (before granting, after the
        // grant ended).
        unsafe { &*(pfn_to_virt(self.pfn) as *const [u8; 4096]) }
    }

    fn bytes_mut(&mut self) -> &mut [u8; 4096] {
        // SAFETY: as for `bytes`, and `&mut self` makes the access exclusive in this domain.
        unsafe { &mut *(pfn_to_virt(self.pfn) as *mut [u8; 4096]) }
    }

    fn frame(&self) -> u64 {
        xen::pfn_to_mfn(self.pfn)
    }
}

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
        mm::alloc_frame().ok().map(|pfn| GuestPage { pfn })
    }

    fn free_page(&mut self, page: GuestPage) {
        if let Err(e) = mm::free_frame(page.pfn) {
            log::error!("blkfront returned pfn {:#x} twice: {e:?}", page.pfn);
        }
    }

    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError> {
        gnttab::grant_access(domid, frame, readonly)
    }

    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        gnttab::end_access(gref)
    }

    fn alloc_ring(&mut self, backend: DomId, order: u32) -> Result<GuestRing, BlkError> {
        // Beyond 16 pages (order 4, blkback's usual limit) is not worth the memory.
        if order > 4 {
            return Err(BlkError::NotSupported);
        }
        let pages = 1u64 << order;
        let pfn = mm::alloc_zeroed_frames(pages).map_err(|_| BlkError::NoMemory)?;
        let va = pfn_to_virt(pfn) as *mut u8;
        let mut refs = Vec::new();
        for i in 0..pages {
            match gnttab::grant_access(backend, xen::pfn_to_mfn(pfn + i), false) {
                Ok(gref) => refs.push(gref),
                Err(e) => {
                    release(pfn, &refs);
                    return Err(BlkError::Grant(e));
                }
            }
        }
        // SAFETY: the zeroed pages are ours for as long as the ring lives (free_ring frees
        // them only after the backend gave every grant back) and only this ring uses them.
        let front = unsafe { FrontRing::new(NonNull::new_unchecked(va), pages as usize) };
        Ok(GuestRing { pfn, front, refs })
    }

    fn free_ring(&mut self, ring: GuestRing) {
        release(ring.pfn, &ring.refs);
    }
}

/// Ends the ring pages' grants and frees the pages, or leaks them all if the backend keeps
/// any page mapped.
fn release(first_pfn: u64, refs: &[GrantRef]) {
    let ended = refs.iter().filter(|&&r| gnttab::end_access(r).is_ok()).count();
    if ended == refs.len() {
        for i in 0..refs.len() as u64 {
            let _ = mm::free_frame(first_pfn + i);
        }
    } else {
        log::warn!("ring pages from pfn {first_pfn:#x} leaked: the backend keeps them mapped");
    }
}

pub struct GuestEvents;

impl blkfront::EventChannel for GuestEvents {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, BlkError> {
        let port =
            hypercall::ops::evtchn_alloc_unbound(remote.0).map_err(|_| BlkError::EventChannel)?;
        if evtchn::bind_recording(Port(port)).is_err() {
            let _ = hypercall::ops::evtchn_close(port);
            return Err(BlkError::EventChannel);
        }
        Ok(port)
    }

    fn notify(&mut self, port: u32) {
        let _ = evtchn::send(Port(port));
    }

    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout> {
        if time::wait_until(|| evtchn::take_fired(Port(port)), deadline_ns) {
            Ok(())
        } else {
            Err(Timeout)
        }
    }

    fn now_ns(&self) -> u64 {
        pvops::clock_ns()
    }

    fn close(&mut self, port: u32) {
        if let Err(e) = evtchn::close(Port(port)) {
            log::warn!("closing blkfront {port}: {e}");
        }
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
