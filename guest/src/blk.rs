//! Block devices (Xen only): connecting the disks the toolstack gave us, over the drivers'
//! environment in this kernel ([`crate::xen::frontend`]).

use crate::xen::frontend::{self, GuestEvents, GuestPages};
use crate::xen::xenstore;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use blkfront::{BlkError, Blkfront, DeviceError};
use core::sync::atomic::{AtomicBool, Ordering};

pub use crate::vdev::name;

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
/// (with [`BlkError::Device(DeviceError::BackendClosed)`]) rather than wait for answers that will not come.
pub fn connect(id: u32) -> Result<Disk, BlkError> {
    let (events, closing) = events();
    xenstore::with(|xs| {
        let disk = Blkfront::connect(xs, id, GuestPages, events, TIMEOUT_NS)?;
        watch_backend(xs, &disk, closing);
        Ok(disk)
    })
    .unwrap_or(Err(BlkError::Device(DeviceError::NotConnected)))
}

/// After a resume in a new domain, for whoever holds `disk` (a suspend comes between its
/// requests): it reconnects to its new backend, issuing again what had not completed
/// (see [`Blkfront::reconnect`]), and the watch moves to the new backend's state.
pub fn resume(disk: &mut Disk) -> Result<(), BlkError> {
    let id = disk.device().id;
    let (events, closing) = events();
    xenstore::with(|xs| {
        // The watch xenstore re-registered names the old domain's backend.
        if let Err(e) = xs.unwatch(&watch_token(id)) {
            log::warn!("blkfront {}: unwatching the old backend: {e}", name(id));
        }
        disk.reconnect(xs, events, TIMEOUT_NS)?;
        watch_backend(xs, disk, closing);
        log::info!("blk: {} reconnected after the resume", name(id));
        Ok(())
    })
    .unwrap_or(Err(BlkError::Device(DeviceError::NotConnected)))
}

/// A disk's events, and the flag its backend watch sets.
fn events() -> (GuestEvents, Arc<AtomicBool>) {
    let closing = Arc::new(AtomicBool::new(false));
    (GuestEvents::new(closing.clone()), closing)
}

fn watch_backend(
    xs: &mut xenbus::Xenstore<xenstore::Channel>,
    disk: &Disk,
    closing: Arc<AtomicBool>,
) {
    let id = disk.device().id;
    let watched =
        frontend::watch_backend_state(xs, disk.device().clone(), &watch_token(id), move |state| {
            if !closing.swap(true, Ordering::SeqCst) {
                log::error!("blkfront {}: the backend went {state:?}", name(id));
            }
        });
    if let Err(e) = watched {
        log::warn!("blkfront {}: cannot watch the backend ({e}): a detach would hang", name(id));
    }
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
    .unwrap_or(Err(BlkError::Device(DeviceError::NotConnected)))
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
