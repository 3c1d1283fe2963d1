//! The driver's state and what transmit and receive share: polling, the page pool, ending
//! grants and quarantine, teardown. The two directions live in [`crate::tx`] and
//! [`crate::rx`].
//!
//! Every page the backend may touch is held, with its grant, by exactly one entry of one
//! table: a transmit slot (until its response) or a receive slot (until the response at
//! its ring position). A page comes back to the pool only after its grant has ended; a page
//! whose grant the backend will not give back is quarantined and never reused.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use grant::{DomId, GrantError, Granted, PagePool, Settled, Spare};
use log::warn;
use ring::shared::FrontRing;
use xenbus::frontend::Device;

use crate::abi::{NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse};
use crate::env::{EventChannel, Pages, SharedRing};
use crate::handshake::Features;
use crate::rx::Assembly;
use crate::tx::InFlight;
use ring::slots::SlotTable;

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
    /// Received frames whose blank checksum we computed ([`crate::csum`]).
    pub rx_csum_filled: u64,
    /// Frames sent and acknowledged by the backend, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
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

/// Receive slots taken per [`Netfront::poll`] at most: a ring's worth, so that a backend
/// that keeps producing cannot keep one poll going forever.
const RX_BUDGET: usize = 256;

/// Received frames kept waiting for [`Netfront::recv`] or smoltcp at most. Beyond that the
/// driver leaves responses on the ring, and the backend, finding no buffers, drops.
pub(crate) const RX_QUEUE: usize = 64;

/// A connected network device.
pub struct Netfront<P: Pages, E: EventChannel> {
    pub(crate) pages: P,
    pub(crate) evtchn: E,
    pub(crate) tx_ring: P::Ring<NetifTxRequest, NetifTxResponse>,
    pub(crate) rx_ring: P::Ring<NetifRxRequest, NetifRxResponse>,
    pub(crate) ports: Ports,
    pub(crate) device: Device,
    pub(crate) mac: [u8; 6],
    pub(crate) features: Features,
    /// A ring is corrupt: nothing more goes on either.
    pub(crate) broken: bool,
    /// Transmit requests in flight, by their id.
    pub(crate) tx: SlotTable<InFlight<P::Page>>,
    /// Receive buffers posted, by ring position modulo the ring size.
    pub(crate) rx: Vec<Option<Granted<P::Page>>>,
    /// Receive requests pushed and responses taken, as free-running ring positions: they
    /// track the ring's own indices, which it keeps private.
    pub(crate) rx_prod: u32,
    pub(crate) rx_cons: u32,
    /// The frame whose slots are being taken, across polls.
    pub(crate) rx_partial: Option<Assembly>,
    pub(crate) ready: VecDeque<Vec<u8>>,
    /// The last poll stopped with responses left on a ring.
    pub(crate) more: bool,
    /// Pages ready for reuse (no grant, ours alone), and those quarantined.
    pub(crate) pool: PagePool<P::Page>,
    /// Where smoltcp writes a frame before it is copied into granted pages.
    pub(crate) tx_scratch: Vec<u8>,
    pub(crate) stats: Stats,
}

impl<P: Pages, E: EventChannel> Netfront<P, E> {
    /// The driver over connected rings; the handshake ([`Netfront::connect`]) builds it,
    /// then fills the receive ring.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pages: P,
        evtchn: E,
        mut tx_ring: P::Ring<NetifTxRequest, NetifTxResponse>,
        mut rx_ring: P::Ring<NetifRxRequest, NetifRxResponse>,
        ports: Ports,
        backend: DomId,
        device: Device,
        mac: [u8; 6],
        features: Features,
    ) -> Self {
        let tx_size = tx_ring.front().size() as usize;
        let rx_size = rx_ring.front().size() as usize;
        Netfront {
            pages,
            evtchn,
            tx_ring,
            rx_ring,
            ports,
            device,
            mac,
            features,
            broken: false,
            tx: SlotTable::new(tx_size, 16),
            rx: (0..rx_size).map(|_| None).collect(),
            rx_prod: 0,
            rx_cons: 0,
            rx_partial: None,
            ready: VecDeque::new(),
            more: false,
            pool: PagePool::new("netfront", backend, 0, MAX_QUARANTINED),
            tx_scratch: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// The MAC address the toolstack assigned to this interface.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// What the backend offered.
    pub fn features(&self) -> Features {
        self.features
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
        Stats { quarantined: self.pool.stats().quarantined, ..self.stats }
    }

    /// Whether a ring broke (see [`poll`](Self::poll)).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Transmit requests in flight (one per page of each frame sent and not acknowledged).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_use()
    }

    /// Receive buffers posted to the backend.
    pub fn rx_posted(&self) -> usize {
        self.rx.iter().filter(|b| b.is_some()).count()
    }

    /// Received frames waiting for [`recv`](Self::recv) or smoltcp.
    pub fn rx_waiting(&self) -> usize {
        self.ready.len()
    }

    /// Pages kept out of use because the backend held their grant.
    pub fn quarantined(&self) -> usize {
        self.pool.quarantined()
    }

    /// Whether there is work without waiting for an event: frames to receive, or responses
    /// the last [`poll`](Self::poll) left on a ring because it reached its budget.
    pub fn work_pending(&self) -> bool {
        self.more || !self.ready.is_empty()
    }

    /// Takes in the backend's responses: frees the pages of acknowledged frames, queues
    /// received frames (at most a ring's worth of slots per call, and while fewer than 64
    /// frames wait), posts fresh receive buffers and re-arms both rings' events. Never
    /// blocks. Returns how many received frames wait.
    ///
    /// A corrupt ring (the backend's index running ahead of our requests) stops the device:
    /// every grant that can end is ended, nothing more is sent or received (frames already
    /// queued can still be taken), and [`send`](Self::send) fails with
    /// [`crate::NetError::Device(DeviceError::Broken)`].
    pub fn poll(&mut self) -> usize {
        if !self.broken {
            self.pool.retry_quarantine(&mut self.pages);
            let polled = self.drain_tx().and_then(|()| self.drain_rx(RX_BUDGET));
            match polled {
                Ok(more) => self.more = more,
                Err(e) => {
                    warn!("netfront: {}: {e}: device unusable", self.device.path);
                    self.fail_all();
                }
            }
        }
        if !self.broken && self.pool.check_cap(&self.device.path) {
            self.fail_all();
        }
        self.ready.len()
    }

    /// The oldest received frame, polling first if none is waiting.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        if self.ready.is_empty() {
            self.poll();
        }
        self.ready.pop_front()
    }

    pub(crate) fn tx_front(&mut self) -> &mut FrontRing<NetifTxRequest, NetifTxResponse> {
        self.tx_ring.front()
    }

    pub(crate) fn rx_front(&mut self) -> &mut FrontRing<NetifRxRequest, NetifRxResponse> {
        self.rx_ring.front()
    }

    /// A page for the driver to fill: from the pool, else from the guest.
    pub(crate) fn take_page(&mut self) -> Option<P::Page> {
        self.pool.take_bare(&mut self.pages)
    }

    /// Grants `page` to the backend, or puts it back in the pool.
    pub(crate) fn grant(
        &mut self,
        page: P::Page,
        readonly: bool,
    ) -> Result<Granted<P::Page>, GrantError> {
        self.pool.grant(&mut self.pages, Spare::Bare(page), readonly)
    }

    /// Ends `g`'s grant and takes its page back into the pool.
    pub(crate) fn release(&mut self, g: Granted<P::Page>) {
        self.pool.release(&mut self.pages, g, false);
    }

    /// Ends `g`'s grant: the page is ours again, unless the backend still holds the grant
    /// and it is quarantined. (A netif backend keeps nothing mapped across requests.)
    pub(crate) fn settle(&mut self, g: Granted<P::Page>) -> Settled<P::Page> {
        self.pool.settle(&mut self.pages, g, false)
    }

    /// Takes in transmit acknowledgements outside [`poll`](Self::poll), when the ring
    /// looks full; a corrupt ring stops the device as it would there.
    pub(crate) fn reap_tx(&mut self) {
        if let Err(e) = self.drain_tx() {
            warn!("netfront: {}: {e}: device unusable", self.device.path);
            self.fail_all();
        }
    }

    /// Stops the device: every transmit in flight is forgotten, every receive buffer taken
    /// back, every grant we can end ended; pages the backend holds stay in quarantine.
    fn fail_all(&mut self) {
        self.broken = true;
        self.more = false;
        self.rx_partial = None;
        for g in self.take_all_tx() {
            self.release(g);
        }
        for i in 0..self.rx.len() {
            if let Some(g) = self.rx[i].take() {
                self.release(g);
            }
        }
    }

    /// After the backend disconnected: gives every page, both rings and the ports back to
    /// the guest. Quarantined pages the backend still holds are dropped, i.e. leaked (see
    /// [`Page`]).
    pub(crate) fn shut_down(mut self) {
        self.fail_all();
        self.pool.shut_down(&mut self.pages);
        self.pages.free_ring(self.tx_ring);
        self.pages.free_ring(self.rx_ring);
        self.evtchn.close(self.ports.tx);
        if self.ports.rx != self.ports.tx {
            self.evtchn.close(self.ports.rx);
        }
    }
}
