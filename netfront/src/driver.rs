//! The driver's state and what transmit and receive share: polling, the page pool, ending
//! grants and quarantine, teardown. Each direction is a queue of its own with private state
//! ([`crate::tx::TxQueue`], [`crate::rx::RxQueue`]), handed the shared pages ([`Core`]) and
//! the counters when it needs them.
//!
//! Every page the backend may touch is held, with its grant, by exactly one entry of one
//! table: a transmit slot (until its response) or a receive slot (until the response at
//! its ring position). A page comes back to the pool only after its grant has ended; a page
//! whose grant the backend will not give back is quarantined and never reused.

use alloc::vec::Vec;

use grant::{DomId, GrantError, Granted, PagePool, Settled, Spare};
use log::{debug, warn};
use xenbus::frontend::Device;

use crate::abi::MAX_TX_SIZE;
use crate::csum;
use crate::env::{EventChannel, Page, Pages, PAGE_SIZE};
use crate::gso::Coalescer;
use crate::handshake::{close_ports, Features, Link, Offloads};
use crate::rx::{RxQueue, Spares};
use crate::tx::{Offload, TxQueue, ETH_HEADER};
use crate::{DeviceError, NetError};

/// The largest frame smoltcp is told to send: an Ethernet header and a 1500-byte payload,
/// no frame check sequence (the backend's bridge adds none either).
pub const MTU: usize = 1514;

/// The event channel of each ring; the same port twice unless the backend offered split
/// event channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub tx: u32,
    pub rx: u32,
}

/// Traffic, and misbehaviour of the backend that the driver survived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed up (to [`Netfront::recv`] or smoltcp), and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Received frames not handed up, whatever the reason (the ones below included).
    pub rx_dropped: u64,
    /// Received frames the backend reported failed (`NETIF_RSP_ERROR`/`_DROPPED`).
    pub rx_errors: u64,
    /// Receive slots that cannot be right (wrong id, data beyond the page, unknown status
    /// or extra-info type): their frame is dropped.
    pub rx_bad_responses: u64,
    /// Extra-info slots consumed (GSO and others: read and ignored).
    pub rx_extra_info: u64,
    /// Received frames taken without checking their checksum: the backend marked them
    /// blank or validated ([`crate::csum`]).
    pub rx_csum_trusted: u64,
    /// Received frames dropped for a wrong TCP or UDP checksum.
    pub rx_csum_bad: u64,
    /// Frames sent and acknowledged by the backend, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Of those, large TCP segments ([`crate::gso`]), and the segments smoltcp made that
    /// they joined.
    pub tx_gso_frames: u64,
    pub tx_gso_segments: u64,
    /// Times the backend was told of new transmit requests.
    pub tx_notifies: u64,
    /// Sent frames the backend reported failed.
    pub tx_errors: u64,
    /// Frames smoltcp handed us that could not go on the ring (no room, no memory).
    pub tx_dropped: u64,
    /// [`Netfront::send`] calls refused with [`crate::NetError::Busy`].
    pub tx_busy: u64,
    /// Transmit responses naming no request in flight, or with an unknown status.
    pub tx_bad_responses: u64,
    /// Pages whose grant the backend held after answering: kept out of use.
    pub quarantined: u64,
}

/// Pages a backend may hold against the protocol (a netif backend holds nothing past its
/// response) before the device is marked broken: a backend that keeps everything cannot
/// make us pin ever more memory for it.
pub const MAX_QUARANTINED: usize = 32;

/// Transmit pages kept granted between frames at most (512 KiB): enough for a ring's worth
/// of full-size frames, or seven large segments in flight.
pub const TX_KEPT_PAGES: usize = 128;

/// Receive slots taken per [`Netfront::poll`] at most: a ring's worth, so that a backend
/// that keeps producing cannot keep one poll going forever.
const RX_BUDGET: usize = 256;

/// Received frames kept waiting for [`Netfront::recv`] or smoltcp at most, and their bytes
/// (a large segment is up to 64 KiB). Beyond that the driver leaves responses on the ring,
/// and the backend, finding no buffers, drops.
pub(crate) const RX_QUEUE: usize = 64;
pub(crate) const RX_QUEUE_BYTES: usize = 512 * 1024;

/// The guest's pages and the pool of those the driver holds: what both directions take
/// pages from and give them back to.
pub(crate) struct Core<P: Pages> {
    pages: P,
    /// Pages ready for reuse (no grant, ours alone), and those quarantined.
    pool: PagePool<P::Page>,
}

impl<P: Pages> Core<P> {
    /// A page that shows the backend nothing it did not have: one from the pool as it is,
    /// else a new one from the guest, zeroed. A page in the pool holds only bytes of frames
    /// to or from the backend, or zeros (what a transmit request or a receive buffer left
    /// in it), while a page new from the guest may hold anything. The backend may read all
    /// of a page we grant, a receive buffer as well as a transmit page.
    pub(crate) fn take_clean_page(&mut self) -> Option<P::Page> {
        if let Some(page) = self.pool.take_recycled() {
            return Some(page);
        }
        let mut page = self.pages.alloc_page()?;
        page.fill_from(0, 0);
        Some(page)
    }

    /// Grants a receive buffer writable, or puts it back in the pool. Its grant ends when
    /// the backend has answered: only then is what we copy out of it settled.
    pub(crate) fn grant_rx(&mut self, page: P::Page) -> Result<Granted<P::Page>, GrantError> {
        self.pool.grant(&mut self.pages, Spare::Bare(page), false)
    }

    /// A page for a transmit request: one still granted from an earlier frame, else a
    /// clean one ([`take_clean_page`](Self::take_clean_page)). Either way the bytes past the
    /// frame written into it are ones the backend had.
    pub(crate) fn take_tx_page(&mut self) -> Option<Spare<P::Page>> {
        if let Some(g) = self.pool.take_persistent() {
            return Some(Spare::Granted(g));
        }
        self.take_clean_page().map(Spare::Bare)
    }

    /// Grants a filled transmit page read-only (unless it still is), or puts it back in the
    /// pool. Up to [`TX_KEPT_PAGES`] transmit pages stay granted after their response, to
    /// be reused with no grant to make or end: the backend can only read them, and what
    /// they hold is frames it was sent.
    pub(crate) fn grant_tx(
        &mut self,
        spare: Spare<P::Page>,
    ) -> Result<Granted<P::Page>, GrantError> {
        self.pool.grant_kept(&mut self.pages, spare, true)
    }

    /// Ends `g`'s grant and takes its page back into the pool.
    pub(crate) fn release(&mut self, g: Granted<P::Page>) {
        self.pool.release(&mut self.pages, g, false);
    }

    pub(crate) fn release_all(&mut self, bufs: impl IntoIterator<Item = Granted<P::Page>>) {
        for g in bufs {
            self.release(g);
        }
    }

    /// Ends `g`'s grant: the page is ours again, unless the backend still holds the grant
    /// and it is quarantined. (A netif backend keeps nothing mapped across requests.)
    pub(crate) fn settle(&mut self, g: Granted<P::Page>) -> Settled<P::Page> {
        self.pool.settle(&mut self.pages, g, false)
    }

    /// A settled page back into the pool (a quarantined one stays out).
    pub(crate) fn recycle(&mut self, settled: Settled<P::Page>) {
        self.pool.recycle(settled);
    }
}

/// A connected network device.
pub struct Netfront<P: Pages, E: EventChannel> {
    core: Core<P>,
    evtchn: E,
    tx: TxQueue<P>,
    rx: RxQueue<P>,
    ports: Ports,
    device: Device,
    mac: [u8; 6],
    features: Features,
    /// The offloads asked for, and those in use on transmit (what the backend allows).
    wanted: Offloads,
    offloads: Offloads,
    /// Transmit requests pushed and not yet published ([`flush`](Netfront::flush)).
    unpublished: bool,
    /// The TCP segments from smoltcp being joined into one.
    run: Coalescer,
    /// A ring is corrupt: nothing more goes on either.
    broken: bool,
    /// The last poll stopped with responses left on a ring.
    more: bool,
    stats: Stats,
}

impl<P: Pages, E: EventChannel> Netfront<P, E> {
    /// The driver over connected rings; the handshake ([`Netfront::connect`]) builds it,
    /// then fills the receive ring.
    pub(crate) fn new(pages: P, evtchn: E, link: Link<P>, wanted: Offloads) -> Self {
        Netfront {
            core: Core { pages, pool: new_pool(link.backend) },
            evtchn,
            tx: TxQueue::new(link.tx_ring),
            rx: RxQueue::new(link.rx_ring),
            ports: link.ports,
            device: link.device,
            mac: link.mac,
            features: link.features,
            wanted,
            offloads: wanted.transmit(link.features),
            unpublished: false,
            run: Coalescer::default(),
            broken: false,
            more: false,
            stats: Stats::default(),
        }
    }

    /// The guest's pages, for a handshake on the driver's behalf.
    pub(crate) fn pages(&mut self) -> &mut P {
        &mut self.core.pages
    }

    /// The second half of a reconnect: the new connection replaces the old, whose rings and
    /// pages go back to the guest and whose ports are closed through the old domain's
    /// `evtchn`; then the receive ring is filled.
    pub(crate) fn resume_on(&mut self, link: Link<P>, evtchn: E) {
        let mut old_evtchn = core::mem::replace(&mut self.evtchn, evtchn);
        let old_tx = core::mem::replace(&mut self.tx, TxQueue::new(link.tx_ring));
        let old_rx = core::mem::replace(&mut self.rx, RxQueue::new(link.rx_ring));
        let old_ports = core::mem::replace(&mut self.ports, link.ports);
        let core = &mut self.core;
        core::mem::replace(&mut core.pool, new_pool(link.backend)).shut_down(&mut core.pages);
        core.pages.free_ring(old_tx.into_ring());
        core.pages.free_ring(old_rx.into_ring());
        close_ports(&mut old_evtchn, old_ports);
        self.device = link.device;
        self.mac = link.mac;
        self.features = link.features;
        self.offloads = self.wanted.transmit(link.features);
        self.broken = false;
        self.more = false;
        self.refill_rx();
    }

    /// The MAC address the toolstack assigned to this interface.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// What the backend offered.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The offloads in use on transmit: those asked for, as far as the backend offers
    /// them. (Receive takes what it asked for.)
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    pub(crate) fn wanted_offloads(&self) -> Offloads {
        self.wanted
    }

    /// The event channels the backend signals; the guest routes them to
    /// [`poll`](Self::poll).
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The xenbus device: our and the backend's directories, the backend's domain.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn stats(&self) -> Stats {
        Stats { quarantined: self.core.pool.stats().quarantined, ..self.stats }
    }

    /// Whether a ring broke (see [`poll`](Self::poll)).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Transmit requests in flight (one per page of each frame sent and not acknowledged).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Receive buffers posted to the backend.
    pub fn rx_posted(&self) -> usize {
        self.rx.posted()
    }

    /// Received frames waiting for [`recv`](Self::recv) or smoltcp.
    pub fn rx_waiting(&self) -> usize {
        self.rx.waiting()
    }

    /// Pages kept out of use because the backend held their grant.
    pub fn quarantined(&self) -> usize {
        self.core.pool.quarantined()
    }

    /// Whether there is work without waiting for an event: frames to receive, or responses
    /// the last [`poll`](Self::poll) left on a ring because it reached its budget.
    pub fn work_pending(&self) -> bool {
        self.more || self.rx.waiting() > 0
    }

    /// Takes in the backend's responses: frees the pages of acknowledged frames, queues
    /// received frames (at most a ring's worth of slots per call, and while fewer than 64
    /// frames wait), posts fresh receive buffers and re-arms both rings' events. Never
    /// blocks. Returns how many received frames wait.
    ///
    /// A corrupt ring (the backend's index running ahead of our requests) stops the device:
    /// every grant that can end is ended, nothing more is sent or received (frames already
    /// queued can still be taken), and [`send`](Self::send) fails with
    /// [`DeviceError::Broken`](crate::DeviceError::Broken).
    pub fn poll(&mut self) -> usize {
        if !self.broken {
            self.core.pool.retry_quarantine(&mut self.core.pages);
            let polled = self
                .tx
                .drain(&mut self.core, &mut self.stats)
                .and_then(|()| self.rx.drain(&mut self.core, &mut self.stats, RX_BUDGET));
            match polled {
                Ok(drained) => {
                    self.more = drained.more;
                    if drained.notify {
                        self.evtchn.notify(self.ports.rx);
                    }
                }
                Err(e) => {
                    warn!("netfront: {}: {e}: device unusable", self.device.path);
                    self.fail_all();
                }
            }
        }
        if !self.broken && self.core.pool.check_cap(&self.device.path) {
            self.fail_all();
        }
        self.rx.waiting()
    }

    /// The oldest received frame, polling first if none is waiting.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        if self.rx.waiting() == 0 {
            self.poll();
        }
        self.rx.pop()
    }

    /// Where the buffers of frames handed up go back to.
    pub(crate) fn rx_spares(&self) -> &Spares {
        self.rx.spares()
    }

    /// Posts receive buffers at every free ring position, and tells the backend if it
    /// asked to be.
    pub(crate) fn refill_rx(&mut self) {
        if self.rx.refill(&mut self.core) {
            self.evtchn.notify(self.ports.rx);
        }
    }

    /// Copies `frame` (a whole Ethernet frame without FCS, its checksums computed) into
    /// pages and puts it on the transmit ring, after what smoltcp handed over before it.
    /// [`NetError::Busy`] when the ring has no room even after taking in the backend's
    /// acknowledgements: poll, then try again. Nothing of the frame reaches the ring unless
    /// all of it does.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        self.push_run();
        let result = self.push(frame, Offload::default());
        if result == Err(NetError::Busy) {
            self.stats.tx_busy += 1;
        }
        self.flush();
        result
    }

    /// Publishes the frames smoltcp handed over since the last call (the TCP run being
    /// joined included) and tells the backend, once for them all. The caller of smoltcp's
    /// `Interface::poll` calls this after it: frames wait for it.
    pub fn flush(&mut self) {
        self.push_run();
        if core::mem::take(&mut self.unpublished) && !self.broken && self.tx.commit() {
            self.stats.tx_notifies += 1;
            self.evtchn.notify(self.ports.tx);
        }
    }

    /// Puts a frame on the transmit ring, unpublished.
    fn push(&mut self, frame: &[u8], offload: Offload) -> Result<(), NetError> {
        if self.broken {
            return Err(NetError::Device(DeviceError::Broken));
        }
        let len = frame.len();
        if !(ETH_HEADER..=MAX_TX_SIZE).contains(&len) {
            return Err(NetError::BadLength);
        }
        let slots = len.div_ceil(PAGE_SIZE);
        if slots > 1 && !self.features.sg {
            return Err(NetError::BadLength);
        }
        if !self.has_tx_room(slots, offload.extra_slots()) {
            if self.broken {
                return Err(NetError::Device(DeviceError::Broken));
            }
            return Err(NetError::Busy);
        }
        self.tx.push(&mut self.core, frame, offload)?;
        self.unpublished = true;
        Ok(())
    }

    /// Sends the TCP run being joined, if there is one.
    fn push_run(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let gso_size = self.run.finish();
        // A run is TCP over IPv4, which the seed always applies to.
        let _ = csum::seed_checksum(self.run.frame());
        let offload = Offload { csum: true, gso_size };
        let mut run = core::mem::take(&mut self.run);
        match self.push(run.frame(), offload) {
            Ok(()) if gso_size.is_some() => {
                self.stats.tx_gso_frames += 1;
                self.stats.tx_gso_segments += run.segments() as u64;
            }
            Ok(()) => {}
            Err(e) => {
                self.stats.tx_dropped += 1;
                debug!("netfront: TCP run from smoltcp dropped: {e}");
            }
        }
        run.clear();
        self.run = run;
    }

    /// A frame smoltcp wrote: its TCP and UDP checksums are left for the backend if
    /// checksum offload is on (smoltcp was told so), and a TCP segment may join the run.
    fn queue(&mut self, frame: &mut [u8]) -> Result<(), NetError> {
        if self.offloads.gso {
            if self.run.offer(frame) {
                return Ok(());
            }
            if !self.run.is_empty() {
                self.push_run();
                if self.run.offer(frame) {
                    return Ok(());
                }
            }
        }
        let csum = self.offloads.csum && csum::seed_checksum(frame).is_ok();
        self.push(frame, Offload { csum, gso_size: None })
    }

    /// Lets `fill` write a frame of `len` bytes into the transmit buffer, then queues it
    /// (see [`flush`](Self::flush)); a frame that cannot go out is counted in
    /// [`Stats::tx_dropped`]. For smoltcp's transmit token.
    pub(crate) fn send_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.tx.take_scratch();
        buf.clear();
        buf.resize(len, 0);
        let result = fill(&mut buf);
        if let Err(e) = self.queue(&mut buf) {
            self.stats.tx_dropped += 1;
            debug!("netfront: frame of {len} bytes from smoltcp dropped: {e}");
        }
        self.tx.put_scratch(buf);
        result
    }

    /// Whether smoltcp may hand over a frame: room for a full-size one and for the run it
    /// may end.
    pub(crate) fn can_take_frame(&mut self) -> bool {
        let frame = MTU.div_ceil(PAGE_SIZE);
        if self.offloads.gso {
            self.has_tx_room(MAX_TX_SIZE.div_ceil(PAGE_SIZE) + frame, 1)
        } else {
            self.has_tx_room(frame, 0)
        }
    }

    /// Whether a frame of `slots` pages and `extra` extra-info slots fits on the ring now,
    /// after taking in acknowledgements if it did not.
    pub(crate) fn has_tx_room(&mut self, slots: usize, extra: usize) -> bool {
        if self.broken {
            return false;
        }
        if !self.tx.fits(slots, extra) {
            self.reap_tx();
        }
        !self.broken && self.tx.fits(slots, extra)
    }

    /// Takes in transmit acknowledgements outside [`poll`](Self::poll), when the ring
    /// looks full; a corrupt ring stops the device as it would there.
    fn reap_tx(&mut self) {
        if let Err(e) = self.tx.drain(&mut self.core, &mut self.stats) {
            warn!("netfront: {}: {e}: device unusable", self.device.path);
            self.fail_all();
        }
    }

    /// Stops the device (also the first half of a reconnect): every transmit in flight is forgotten, every receive buffer taken
    /// back, every grant we can end ended; pages the backend holds stay in quarantine.
    pub(crate) fn fail_all(&mut self) {
        self.broken = true;
        self.more = false;
        self.unpublished = false;
        self.run.clear();
        let tx = self.tx.take_all();
        self.core.release_all(tx);
        let rx = self.rx.take_all();
        self.core.release_all(rx);
        // The transmit pages kept granted too: a stopped device's backend reaches nothing.
        self.core.pool.end_persistent(&mut self.core.pages);
    }

    /// After the backend disconnected: gives every page, both rings and the ports back to
    /// the guest. Quarantined pages the backend still holds are dropped, i.e. leaked (see
    /// [`Page`](crate::Page)).
    pub(crate) fn shut_down(mut self) {
        self.fail_all();
        let Netfront { mut core, mut evtchn, tx, rx, ports, .. } = self;
        core.pool.shut_down(&mut core.pages);
        core.pages.free_ring(tx.into_ring());
        core.pages.free_ring(rx.into_ring());
        close_ports(&mut evtchn, ports);
    }
}

fn new_pool<P: grant::Page>(backend: DomId) -> PagePool<P> {
    PagePool::new("netfront", backend, TX_KEPT_PAGES, MAX_QUARANTINED)
}
