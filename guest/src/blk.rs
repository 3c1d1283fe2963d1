//! Block devices (Xen only): blkfront's environment in this kernel — pages, grants and
//! event channels from [`crate::xen::frontend`] — and connecting the disks the toolstack gave us.

use crate::arch::pfn_to_virt;
use crate::time;
use crate::xen::frontend::{self, GuestPages, RingError};
use crate::xen::{evtchn, xenstore};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use blkfront::abi::{BlkifRequest, BlkifResponse};
use blkfront::{BlkError, Blkfront, Timeout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use events::Port;
use grant::{DomId, GrantRef};
use ring::shared::FrontRing;

pub use crate::vdev::name;

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

impl blkfront::Pages for GuestPages {
    type Ring = GuestRing;

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

/// A disk's event channel, and what its watch on the backend's state saw.
pub struct GuestEvents {
    /// Set by the watch once the backend left Connected.
    closing: Arc<AtomicBool>,
}

impl blkfront::EventChannel for GuestEvents {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, BlkError> {
        frontend::alloc_port(remote).ok_or(BlkError::EventChannel)
    }

    fn notify(&mut self, port: u32) {
        frontend::notify(port)
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

    fn backend_closing(&mut self) -> bool {
        xenstore::service();
        self.closing.load(Ordering::SeqCst)
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

/// The virtual disks the toolstack has given us now (`device/vbd/<id>`), by id.
pub fn disk_ids() -> Vec<u32> {
    crate::xen::devices::ids(crate::xen::devices::VBD)
}

/// How long a disk the command line names may take to appear: QEMU's qdisk backend writes
/// its nodes only once the domain runs, and dom0's device model starts slowly under load.
pub const APPEAR_TIMEOUT_NS: u64 = 30_000_000_000;

/// Whether disk `id` is there, waiting for it up to [`APPEAR_TIMEOUT_NS`].
pub fn wait_for_disk(id: u32) -> bool {
    crate::xen::devices::wait_for(crate::xen::devices::VBD, id, APPEAR_TIMEOUT_NS)
}

/// Connects disk `id` (its xenbus device id, e.g. 51728 for xvdb), and watches its
/// backend's state: `xl block-detach` sets it Closing, and then the disk's requests fail
/// (with [`BlkError::BackendClosed`]) rather than wait for answers that will not come.
pub fn connect(id: u32) -> Result<Disk, BlkError> {
    let closing = Arc::new(AtomicBool::new(false));
    let events = GuestEvents { closing: closing.clone() };
    xenstore::with(|xs| {
        let disk = Blkfront::connect(xs, id, GuestPages, events, TIMEOUT_NS)?;
        let watched = frontend::watch_backend_state(
            xs,
            disk.device().clone(),
            &watch_token(id),
            move |state| {
                if !closing.swap(true, Ordering::SeqCst) {
                    log::error!("blkfront {}: the backend went {state:?}", name(id));
                }
            },
        );
        if let Err(e) = watched {
            log::warn!(
                "blkfront {}: cannot watch the backend ({e}): a detach would hang",
                name(id)
            );
        }
        Ok(disk)
    })
    .unwrap_or(Err(BlkError::NotConnected))
}

fn watch_token(id: u32) -> String {
    format!("vbd-{id}")
}

/// Disconnects a disk, failing what it still had outstanding.
pub fn close(disk: Disk) -> Result<(), BlkError> {
    let id = disk.device().id;
    xenstore::with(|xs| {
        if let Err(e) = xs.unwatch(&watch_token(id)) {
            log::warn!("blkfront {}: unwatching the backend: {e}", name(id));
        }
        disk.close(xs, TIMEOUT_NS).0
    })
    .unwrap_or(Err(BlkError::NotConnected))
}

/// Connects disk `id` once and prints what it is, `blk: xvdd attached: sectors=<n>
/// sector_size=<n> mode=ro|rw`, or why it could not be used: for a disk the toolstack
/// attached while we run.
pub fn describe(id: u32) {
    match connect(id) {
        Ok(disk) => {
            let info = disk.info();
            let mode = if info.read_only() { "ro" } else { "rw" };
            crate::println!(
                "blk: {} attached: sectors={} sector_size={} mode={mode}",
                name(id),
                info.sectors,
                info.sector_size
            );
            if let Err(e) = close(disk) {
                log::warn!("blk: {}: closing: {e}", name(id));
            }
        }
        Err(e) => log::error!("blk: {}: attached but unusable: {e}", name(id)),
    }
}
