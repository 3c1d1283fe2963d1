//! What the split drivers (blkfront, netfront) get from this kernel (Xen only): the
//! frontend core's environment ([`frontend::Pages`], [`frontend::EventChannel`]),
//! implemented once for both: pages from the frame allocator, granted through the grant
//! table, rings over zeroed granted pages, event channels whose handler records that they
//! fired, and a watch on the backend's state.

use super::{evtchn, gnttab, xenstore};
use crate::arch::pfn_to_virt;
use crate::{mm, pvops, time};
use ::frontend::{DeviceError, FrontRing, Pod, Timeout};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
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

/// The drivers' pages, grants and rings: one implementation for every driver.
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

/// The most pages one ring gets: 16 (order 4, blkback's usual limit); more is not worth
/// the memory.
const MAX_RING_PAGES: usize = 16;

/// A shared ring over contiguous zeroed pages, each granted to the backend.
pub struct GuestRing<Req: Pod, Rsp: Pod> {
    pfn: u64,
    front: FrontRing<Req, Rsp>,
    refs: Vec<GrantRef>,
}

impl<Req: Pod, Rsp: Pod> frontend::SharedRing<Req, Rsp> for GuestRing<Req, Rsp> {
    fn front(&mut self) -> &mut FrontRing<Req, Rsp> {
        &mut self.front
    }

    fn grant_refs(&self) -> &[GrantRef] {
        &self.refs
    }
}

impl frontend::Pages for GuestPages {
    type Ring<Req: Pod, Rsp: Pod> = GuestRing<Req, Rsp>;

    fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        backend: DomId,
        pages: usize,
    ) -> Result<GuestRing<Req, Rsp>, DeviceError> {
        if pages == 0 || pages > MAX_RING_PAGES {
            return Err(DeviceError::NoMemory);
        }
        let pfn = mm::alloc_zeroed_frames(pages as u64).map_err(|_| DeviceError::NoMemory)?;
        let mut refs = Vec::with_capacity(pages);
        for i in 0..pages as u64 {
            match gnttab::grant_access(backend, pvops::pfn_to_frame(pfn + i), false) {
                Ok(gref) => refs.push(gref),
                Err(e) => {
                    release_ring_pages(pfn, &refs);
                    return Err(DeviceError::Grant(e));
                }
            }
        }
        let va = pfn_to_virt(pfn) as *mut u8;
        // SAFETY: the zeroed pages are ours for as long as the ring lives (free_ring frees
        // them only after the backend gave every grant back) and only this ring uses them.
        let front = unsafe { FrontRing::new(NonNull::new_unchecked(va), pages) };
        Ok(GuestRing { pfn, front, refs })
    }

    fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: GuestRing<Req, Rsp>) {
        release_ring_pages(ring.pfn, &ring.refs);
    }
}

/// Ends the ring pages' grants and frees the pages, or leaks them all if the backend keeps
/// any page mapped.
fn release_ring_pages(first_pfn: u64, refs: &[GrantRef]) {
    let ended = refs.iter().filter(|&&r| gnttab::end_access(r).is_ok()).count();
    if ended == refs.len() {
        for i in 0..refs.len() as u64 {
            let _ = mm::free_frame(first_pfn + i);
        }
    } else {
        log::warn!("ring pages from pfn {first_pfn:#x} leaked: the backend keeps them mapped");
    }
}

/// A device's event channels, and what the watch on its backend's state saw: one
/// implementation for every driver.
pub struct GuestEvents {
    /// Set by the device's watch once the backend left Connected.
    closing: Arc<AtomicBool>,
    /// The port epoch of the device's ports ([`evtchn::epoch`]): after a resume in a new
    /// domain they are gone, and their numbers may name ports of someone else's since.
    epoch: u64,
}

impl GuestEvents {
    /// Events for a device whose backend watch sets `closing`.
    pub fn new(closing: Arc<AtomicBool>) -> Self {
        GuestEvents { closing, epoch: evtchn::epoch() }
    }
}

impl frontend::EventChannel for GuestEvents {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, DeviceError> {
        self.epoch = evtchn::epoch();
        alloc_port(remote).ok_or(DeviceError::EventChannel)
    }

    fn notify(&mut self, port: u32) {
        if self.epoch == evtchn::epoch() {
            let _ = evtchn::send(Port(port));
        }
    }

    fn close(&mut self, port: u32) {
        if self.epoch != evtchn::epoch() {
            // The port went with the old domain; the number may be another port's now.
            return;
        }
        if let Err(e) = evtchn::close(Port(port)) {
            log::warn!("closing event channel {port}: {e}");
        }
    }

    /// Also wakes for xenstore, whose watch may say the backend is closing: then no
    /// answer will come, and the driver learns it at its next poll.
    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout> {
        let fired = time::wait_until(
            || evtchn::take_fired(Port(port)) || xenstore::signalled(),
            deadline_ns,
        );
        fired.then_some(()).ok_or(Timeout)
    }

    fn now_ns(&self) -> u64 {
        pvops::clock_ns()
    }

    fn backend_closing(&mut self) -> bool {
        xenstore::service();
        self.closing.load(Ordering::SeqCst)
    }
}

/// A port `remote` may connect to, bound so that [`evtchn::take_fired`] tells whether it
/// fired, and throttled (a flood costs one upcall per look); `None` if Xen or the handler
/// table has no room.
fn alloc_port(remote: DomId) -> Option<u32> {
    let port = hypercall::ops::evtchn_alloc_unbound(remote.0).ok()?;
    if evtchn::bind_throttled(Port(port)).is_err() {
        let _ = hypercall::ops::evtchn_close(port);
        return None;
    }
    Some(port)
}

/// Waits until `port` fired or the clock reaches `deadline_ns`; true if it fired.
pub fn wait(port: u32, deadline_ns: u64) -> bool {
    time::wait_until(|| evtchn::take_fired(Port(port)), deadline_ns)
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
