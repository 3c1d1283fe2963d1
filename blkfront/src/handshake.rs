//! The xenbus handshake of a block frontend (`io/blkif.h`, "Frontend XenBus Nodes";
//! `io/xenbus.h`), and closing.
//!
//! ```text
//! frontend                                  backend (blkback)
//!                                            writes feature nodes, InitWait
//! probe device/vbd/<id>, wait for InitWait+
//! read max-ring-page-order
//! ring pages + grants, unbound port
//! one transaction: ring-ref (or
//!   ring-page-order, ring-ref0..N),
//!   event-channel, protocol,
//!   feature-persistent
//! Initialised
//!                                            maps the ring, binds the port,
//!                                            writes sectors, info, sector-size,
//!                                            feature-*, Connected
//! wait for Connected, read + check the disk
//! Connected
//! ```
//!
//! The disk's description is read once the backend is Connected, not at InitWait: Linux's
//! blkback writes `sectors`, `info`, `sector-size` and most features only when it connects,
//! and Linux's blkfront reads them at that point too.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use grant::{DomId, GrantRef};
use log::warn;
use xenbus::frontend::Device;
use xenbus::{Transport, XenbusState, Xenstore};

use crate::driver::Completion;
use crate::env::{BlkRing, EventChannel, Pages, SharedRing};
use crate::info::{read_disk_info, read_ring_order, DiskInfo};
use crate::{BlkError, Blkfront, DeviceError};

/// How long each step of the handshake waits, and blocking I/O waits, unless told
/// otherwise.
pub const DEFAULT_TIMEOUT_NS: u64 = 5_000_000_000;

/// `XEN_IO_PROTO_ABI_X86_64`: the request layout we use, written to `protocol`.
pub const PROTOCOL: &str = "x86_64-abi";

/// The largest ring we ask for: `1 << 2` = 4 pages, 128 slots, when the backend's
/// `max-ring-page-order` allows. Enough to keep a disk busy; each slot may pin a request's
/// bounce pages, so a larger ring would mostly let callers tie up more memory.
pub const RING_PAGE_ORDER: u32 = 2;

impl<P: Pages, E: EventChannel> Blkfront<P, E> {
    /// Connects to the backend of `device/vbd/<id>`: probes the device, sets up the ring
    /// (through `pages`) and the event channel (through `evtchn`), publishes them in one
    /// transaction and walks the XenbusState handshake to Connected. Each wait (for the
    /// toolstack's keys, for each backend state) gets `timeout_ns`.
    ///
    /// On failure everything allocated is handed back to the guest (ring, port), our state
    /// is set to Closing if we had published anything, and `pages` and `evtchn` are dropped.
    pub fn connect<T: Transport>(
        xs: &mut Xenstore<T>,
        id: u32,
        mut pages: P,
        mut evtchn: E,
        timeout_ns: u64,
    ) -> Result<Self, BlkError> {
        let link = handshake(xs, id, &mut pages, &mut evtchn, timeout_ns)?;
        // The request layout's `handle` is 16 bits (`blkif_vdev_t`); Linux truncates the
        // device id the same way, and backends ignore the field.
        let handle = id as u16;
        let order = link.order;
        let blk = Blkfront::new(pages, evtchn, link, handle);
        blk.say_connected("connected", order);
        Ok(blk)
    }

    /// Connects again after the guest was restored or migrated into a new domain, where
    /// the backend, the ring's grants and the event channel are new: the handshake of
    /// [`connect`](Self::connect) over `evtchn` (the new domain's), then every request that
    /// had not completed is issued again on the new ring, oldest first: reads and writes are
    /// idempotent, and a write the old backend had not acknowledged may or may not have
    /// reached the disk. The new backend may offer less than the old: a request it cannot
    /// take now (beyond a smaller disk, a write to a disk now read-only, a discard without
    /// `feature-discard`) fails with the error [`submit`](Self::submit) would give it.
    ///
    /// If the handshake fails, every outstanding request fails with its error, the device
    /// takes no more requests, and the error is returned; [`close`](Self::close) or dropping
    /// the driver are what is left to do.
    pub fn reconnect<T: Transport>(
        &mut self,
        xs: &mut Xenstore<T>,
        mut evtchn: E,
        timeout_ns: u64,
    ) -> Result<(), BlkError> {
        let in_flight = self.take_back_in_flight();
        match handshake(xs, self.device.id, &mut self.pages, &mut evtchn, timeout_ns) {
            Ok(link) => {
                let order = link.order;
                self.resume_on(link, evtchn);
                self.say_connected(
                    &format!("reconnected, {in_flight} ring request(s) issued again"),
                    order,
                );
                Ok(())
            }
            Err(e) => {
                warn!("blkfront: {}: reconnecting: {e}: device unusable", self.device.path);
                self.fail_all(e);
                Err(e)
            }
        }
    }

    fn say_connected(&self, what: &str, order: u32) {
        let info = self.info;
        log::info!(
            "blkfront: {} {what}: {} sectors of 512 B, sector-size {}, ring of {} page(s), \
             {} segments per request, {:?}",
            self.device.path,
            info.sectors,
            info.sector_size,
            1u32 << order,
            self.max_segments(),
            info.features
        );
    }

    /// Closes the device: the Closing/Closed handshake with the backend (so that it unmaps
    /// our pages), then every outstanding request fails with [`BlkError::Device(DeviceError::NotConnected)`]
    /// (their completions are returned), the grants end, and the pages, ring and event
    /// channel go back to the guest. The local teardown happens even when the handshake
    /// fails; pages the backend still holds are then leaked, never reused.
    pub fn close<T: Transport>(
        self,
        xs: &mut Xenstore<T>,
        timeout_ns: u64,
    ) -> (Result<(), BlkError>, Vec<Completion>) {
        let result = self.device.close(xs, timeout_ns).map_err(BlkError::from);
        if let Err(e) = &result {
            warn!("blkfront: {}: close: {e}", self.device.path);
        }
        (result, self.shut_down())
    }
}

/// What one handshake established: the device and its backend, a ring and event channel
/// the backend connected to, and the disk it serves.
pub(crate) struct Link<P: Pages> {
    pub(crate) device: Device,
    pub(crate) backend: DomId,
    pub(crate) ring: BlkRing<P>,
    pub(crate) order: u32,
    pub(crate) port: u32,
    pub(crate) info: DiskInfo,
}

/// The handshake of `device/vbd/<id>`, up to both sides Connected (see the module's docs).
/// On failure the ring and port are handed back and, if anything was published, our state
/// is set to Closing.
fn handshake<T: Transport, P: Pages, E: EventChannel>(
    xs: &mut Xenstore<T>,
    id: u32,
    pages: &mut P,
    evtchn: &mut E,
    timeout_ns: u64,
) -> Result<Link<P>, BlkError> {
    let (device, backend) = frontend::attach(xs, "vbd", id, timeout_ns)?;
    let ring_order = read_ring_order(xs, &device.backend)?;

    let (ring, order) = alloc_ring(pages, backend, ring_order.min(RING_PAGE_ORDER))?;
    let port = match evtchn.alloc_unbound(backend) {
        Ok(port) => port,
        Err(e) => {
            pages.free_ring(ring);
            return Err(e.into());
        }
    };
    let connected = (|| {
        publish(xs, &device, order, ring.grant_refs(), port, timeout_ns)?;
        let info = read_disk_info(xs, &device.backend, ring_order)?;
        device.set_state(xs, XenbusState::Connected)?;
        Ok(info)
    })();
    match connected {
        Ok(info) => Ok(Link { device, backend, ring, order, port, info }),
        Err(e) => {
            device.abandon(xs, "blkfront", &e);
            evtchn.close(port);
            pages.free_ring(ring);
            Err(e)
        }
    }
}

/// A ring of `1 << order` pages from the guest, or of one page if it cannot give that many
/// (it may not support multi-page rings, or lack contiguous memory): every backend takes
/// a one-page ring. Returns the ring and its order.
fn alloc_ring<P: Pages>(
    pages: &mut P,
    backend: DomId,
    order: u32,
) -> Result<(BlkRing<P>, u32), BlkError> {
    match pages.alloc_ring(backend, 1 << order) {
        Ok(ring) => Ok((ring, order)),
        Err(e @ DeviceError::NoMemory) if order > 0 => {
            warn!("blkfront: no ring of {} pages ({e}): using one page", 1u32 << order);
            Ok((pages.alloc_ring(backend, 1)?, 0))
        }
        Err(e) => Err(e.into()),
    }
}

/// Publishes the ring and event channel in one transaction, then says Initialised and
/// waits for the backend to connect.
fn publish<T: Transport>(
    xs: &mut Xenstore<T>,
    device: &Device,
    order: u32,
    refs: &[GrantRef],
    port: u32,
    timeout_ns: u64,
) -> Result<(), BlkError> {
    let mut keys = ring_ref_keys(order, refs)?;
    keys.push(("event-channel".into(), format!("{port}")));
    keys.push(("protocol".into(), PROTOCOL.into()));
    // Used only if the backend offers it too, which it says once connected.
    keys.push(("feature-persistent".into(), "1".into()));
    match device.publish(xs, &keys, XenbusState::Initialised, timeout_ns)? {
        XenbusState::Connected => Ok(()),
        _ => Err(BlkError::Device(DeviceError::BackendClosed)),
    }
}

/// `ring-ref` for a one-page ring, as every backend understands (and as Linux's blkfront
/// writes it); `ring-page-order` and `ring-ref0..N` for a ring of `1 << order` pages. A
/// guest that granted a different number of pages than asked for is refused: the backend
/// would map the wrong ring.
fn ring_ref_keys(order: u32, refs: &[GrantRef]) -> Result<Vec<(String, String)>, xenbus::Error> {
    if refs.len() != 1 << order {
        return Err(xenbus::Error::InvalidArgument);
    }
    if let [r] = refs {
        return Ok(alloc::vec![("ring-ref".into(), format!("{}", r.0))]);
    }
    let mut keys = alloc::vec![("ring-page-order".into(), format!("{order}"))];
    keys.extend(refs.iter().enumerate().map(|(i, r)| (format!("ring-ref{i}"), format!("{}", r.0))));
    Ok(keys)
}
