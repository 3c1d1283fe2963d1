//! What the split drivers (blkfront, netfront) get from this kernel (Xen only): pages from
//! the frame allocator, granted through the grant table, rings over zeroed granted pages,
//! event channels whose handler records that they fired, and a watch on the backend's state.

use super::{evtchn, gnttab};
use crate::arch::pfn_to_virt;
use crate::{mm, pvops, time};
use alloc::boxed::Box;
use alloc::vec::Vec;
use events::Port;
use grant::{DomId, GrantError, GrantRef};

/// A page of ours that a driver fills and grants. Dropping it leaks the frame on purpose:
/// a driver drops a page only when the backend would not give its grant back.
pub struct GuestPage {
    pfn: u64,
}

impl GuestPage {
    pub fn alloc() -> Option<GuestPage> {
        mm::alloc_frame().ok().map(|pfn| GuestPage { pfn })
    }

    pub fn free(self) {
        if let Err(e) = mm::free_frame(self.pfn) {
            log::error!("a driver returned pfn {:#x} twice: {e:?}", self.pfn);
        }
    }
}

// SAFETY: the frame belongs to this value alone (from the frame allocator, returned only by
// `free`) and stays direct-mapped, page-aligned; nothing in this kernel makes a reference to
// a driver's page: drivers reach it only through the trait's volatile accessors.
unsafe impl grant::Page for GuestPage {
    fn base(&self) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::new(pfn_to_virt(self.pfn) as *mut u8)
            .expect("the direct map does not start at 0")
    }

    /// The machine frame the backend is granted.
    fn frame(&self) -> u64 {
        crate::pvops::pfn_to_frame(self.pfn)
    }
}

/// The drivers' data pages and their grants: one implementation for every driver, whose
/// environment types add their rings (`blk::GuestRing`, `net::env::NetRing`).
pub struct GuestPages;

impl grant::Grants for GuestPages {
    type Page = GuestPage;

    fn alloc_page(&mut self) -> Option<GuestPage> {
        GuestPage::alloc()
    }

    fn free_page(&mut self, page: GuestPage) {
        page.free()
    }

    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError> {
        gnttab::grant_access(domid, frame, readonly)
    }

    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        gnttab::end_access(gref)
    }
}

/// `pages` zeroed pages, contiguous in our address space, each granted writable to
/// `backend`: the memory of a shared ring. Returns the first pfn and the references in
/// page order; on error nothing stays allocated or granted.
pub fn alloc_ring_pages(backend: DomId, pages: u64) -> Result<(u64, Vec<GrantRef>), RingError> {
    let pfn = mm::alloc_zeroed_frames(pages).map_err(|_| RingError::NoMemory)?;
    let mut refs = Vec::new();
    for i in 0..pages {
        match gnttab::grant_access(backend, crate::pvops::pfn_to_frame(pfn + i), false) {
            Ok(gref) => refs.push(gref),
            Err(e) => {
                release_ring_pages(pfn, &refs);
                return Err(RingError::Grant(e));
            }
        }
    }
    Ok((pfn, refs))
}

/// Why [`alloc_ring_pages`] failed.
pub enum RingError {
    NoMemory,
    Grant(GrantError),
}

/// Ends the ring pages' grants and frees the pages, or leaks them all if the backend keeps
/// any page mapped.
pub fn release_ring_pages(first_pfn: u64, refs: &[GrantRef]) {
    let ended = refs.iter().filter(|&&r| gnttab::end_access(r).is_ok()).count();
    if ended == refs.len() {
        for i in 0..refs.len() as u64 {
            let _ = mm::free_frame(first_pfn + i);
        }
    } else {
        log::warn!("ring pages from pfn {first_pfn:#x} leaked: the backend keeps them mapped");
    }
}

/// A port `remote` may connect to, bound so that [`evtchn::take_fired`] tells whether it
/// fired, and throttled (a flood costs one upcall per look); `None` if Xen or the handler
/// table has no room.
pub fn alloc_port(remote: DomId) -> Option<u32> {
    let port = hypercall::ops::evtchn_alloc_unbound(remote.0).ok()?;
    if evtchn::bind_throttled(Port(port)).is_err() {
        let _ = hypercall::ops::evtchn_close(port);
        return None;
    }
    Some(port)
}

pub fn notify(port: u32) {
    let _ = evtchn::send(Port(port));
}

/// Waits until `port` fired or the clock reaches `deadline_ns`; true if it fired.
pub fn wait(port: u32, deadline_ns: u64) -> bool {
    time::wait_until(|| evtchn::take_fired(Port(port)), deadline_ns)
}

pub fn now_ns() -> u64 {
    pvops::clock_ns()
}

pub fn close_port(port: u32) {
    if let Err(e) = evtchn::close(Port(port)) {
        log::warn!("closing event channel {port}: {e}");
    }
}

/// Watches `device`'s backend state under `token`: `on_leave(state)` runs whenever the watch
/// finds it anything but Connected (`xl block-detach` and `xl network-detach` set it
/// Closing and wait for us to close).
pub fn watch_backend_state(
    xs: &mut xenbus::Xenstore<super::xenstore::Channel>,
    device: xenbus::frontend::Device,
    token: &str,
    on_leave: impl Fn(xenbus::XenbusState) + Send + 'static,
) -> Result<(), xenbus::Error> {
    xs.watch(
        &device.backend_state_path(),
        token,
        Box::new(move |xs, _| match device.backend_state(xs) {
            Ok(xenbus::XenbusState::Connected) => {}
            Ok(state) => on_leave(state),
            Err(e) => log::warn!("reading {}: {e}", device.backend_state_path()),
        }),
    )
}
