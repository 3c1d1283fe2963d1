//! Transmit: a frame is copied into pages we grant read-only, one ring request per page
//! (`NETTXF_more_data` on all but the last; the first request's size is the whole frame's,
//! as netif.h says), and each page stays with its request until the backend answers it.
//! Most pages then stay granted for the next frames ([`crate::TX_KEPT_PAGES`]).
//! A large TCP segment ([`crate::gso`]) has a GSO extra-info slot after its first request,
//! which netback answers with a `NETIF_RSP_NULL` response of no id: such a response is
//! passed over. Requests are pushed frame by frame and published once per batch
//! ([`TxQueue::commit`]).
//!
//! A request's id names its slot in the transmit table and the use of that slot, in 16 bits
//! (`ring::slots`): a response naming a free slot, or a previous use of it, is recognised
//! as bogus and touches nothing.

use alloc::vec::Vec;

use grant::Granted;
use log::{debug, warn};
use ring::shared::{FrontRing, RingError};
use ring::slots::SlotTable;

use crate::abi::{Extra, NetifExtraInfo, NetifTxRequest, NetifTxResponse, TxFlags, MAX_TX_SIZE};
use crate::abi::{GSO_TYPE_TCPV4, NR_SLOTS_MIN, RSP_DROPPED, RSP_ERROR, RSP_NULL, RSP_OKAY};
use crate::driver::{Core, Stats};
use crate::env::{Page, Pages, SharedRing, TxRing, PAGE_SIZE};
use crate::{DeviceError, NetError};

/// The shortest frame the backend takes: an Ethernet header (netback refuses less).
pub(crate) const ETH_HEADER: usize = 14;

// The longest frame spans 16 pages and a GSO slot, within the slots every backend must
// accept.
const _: () = assert!(MAX_TX_SIZE.div_ceil(PAGE_SIZE) < NR_SLOTS_MIN);

/// What the backend is asked to do for a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Offload {
    /// The TCP or UDP checksum holds only the pseudo-header's sum: the backend completes it
    /// (`NETTXF_csum_blank | NETTXF_data_validated`).
    pub(crate) csum: bool,
    /// A TCP segment to cut into payloads of this size (`XEN_NETIF_GSO_TYPE_TCPV4`).
    pub(crate) gso_size: Option<u16>,
}

impl Offload {
    /// Ring slots beside the data's: the GSO extra-info slot.
    pub(crate) fn extra_slots(self) -> usize {
        usize::from(self.gso_size.is_some())
    }
}

/// A transmit request awaiting its response, in its slot of the transmit table.
struct InFlight<P> {
    buf: Granted<P>,
    /// The frame's length, on the frame's first request only: that response accounts for
    /// the frame.
    frame_len: Option<usize>,
}

/// The transmit ring and the requests in flight on it.
pub(crate) struct TxQueue<P: Pages> {
    ring: TxRing<P>,
    /// Requests in flight, by their id.
    slots: SlotTable<InFlight<P::Page>>,
    /// Where smoltcp writes a frame before it is copied into granted pages.
    scratch: Vec<u8>,
    /// A frame's pages between their grant and their requests, kept empty between frames
    /// so that a frame costs no allocation.
    staged: Vec<Granted<P::Page>>,
}

impl<P: Pages> TxQueue<P> {
    pub(crate) fn new(mut ring: TxRing<P>) -> Self {
        let size = ring.front().size() as usize;
        let staged = Vec::with_capacity(MAX_TX_SIZE.div_ceil(PAGE_SIZE));
        TxQueue { ring, slots: SlotTable::new(size, 16), scratch: Vec::new(), staged }
    }

    fn front(&mut self) -> &mut FrontRing<NetifTxRequest, NetifTxResponse> {
        self.ring.front()
    }

    /// Requests in flight (one per page of each frame sent and not acknowledged).
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.in_use()
    }

    /// Whether a frame of `slots` pages and `extra` extra-info slots fits on the ring and in
    /// the table now.
    pub(crate) fn fits(&mut self, slots: usize, extra: usize) -> bool {
        self.slots.free() >= slots && self.front().free_requests() as usize >= slots + extra
    }

    /// Copies `frame` into pages from `core`, granted read-only, and puts them on the ring
    /// (unpublished: see [`commit`](Self::commit)), which the caller checked has room
    /// ([`fits`](Self::fits)). Nothing of the frame reaches the ring unless all of it does.
    pub(crate) fn push(
        &mut self,
        core: &mut Core<P>,
        frame: &[u8],
        offload: Offload,
    ) -> Result<(), NetError> {
        let len = frame.len();
        let mut bufs = core::mem::take(&mut self.staged);
        for chunk in frame.chunks(PAGE_SIZE) {
            let Some(mut spare) = core.take_tx_page() else {
                core.release_all(bufs.drain(..));
                self.staged = bufs;
                return Err(NetError::Device(DeviceError::NoMemory));
            };
            // The rest of the page stays as it was: zeros, or an earlier frame's bytes.
            spare.page().write(0, chunk);
            match core.grant_tx(spare) {
                Ok(g) => bufs.push(g),
                Err(e) => {
                    core.release_all(bufs.drain(..));
                    self.staged = bufs;
                    return Err(NetError::Device(DeviceError::Grant(e)));
                }
            }
        }
        let last = bufs.len() - 1;
        for (i, buf) in bufs.drain(..).enumerate() {
            // The caller saw room for every page, and nothing has taken any since: neither
            // the reservation nor the push can fail.
            let Some(slot) = self.slots.reserve() else {
                core.release(buf);
                continue;
            };
            // Sizes fit u16: the frame is at most MAX_TX_SIZE (0xffff) bytes.
            let size = if i == 0 { len } else { (len - i * PAGE_SIZE).min(PAGE_SIZE) } as u16;
            let mut flags = if i < last { TxFlags::MORE_DATA } else { TxFlags::empty() };
            if i == 0 {
                flags.set(TxFlags::CSUM_BLANK | TxFlags::DATA_VALIDATED, offload.csum);
                flags.set(TxFlags::EXTRA_INFO, offload.gso_size.is_some());
            }
            // The table makes 16-bit ids.
            let id = slot.id() as u16;
            let req = NetifTxRequest { gref: buf.gref, offset: 0, flags: flags.bits(), id, size };
            if self.front().push_request(req).is_err() {
                self.slots.cancel(slot);
                core.release(buf);
                continue;
            }
            let frame_len = (i == 0).then_some(len);
            self.slots.fill(slot, InFlight { buf, frame_len });
            if let (0, Some(size)) = (i, offload.gso_size) {
                let gso = Extra::Gso { size, ty: GSO_TYPE_TCPV4, features: 0 };
                // Room was checked for it too.
                let _ = self.front().push_request_as(NetifExtraInfo::new(gso, false));
            }
        }
        self.staged = bufs;
        Ok(())
    }

    /// Publishes the requests pushed since the last call; whether the backend must be
    /// told.
    pub(crate) fn commit(&mut self) -> bool {
        self.front().commit_requests()
    }

    /// Takes in every response: pages back to the pool, frames counted.
    pub(crate) fn drain(&mut self, core: &mut Core<P>, stats: &mut Stats) -> Result<(), RingError> {
        // Bounded: the ring refuses more responses than requests in flight, and nothing
        // is pushed meanwhile.
        loop {
            while let Some(rsp) = self.front().take_response()? {
                self.complete(core, stats, rsp);
            }
            if !self.front().final_check_for_responses()? {
                return Ok(());
            }
        }
    }

    /// Every request in flight, its slot freed: for teardown.
    pub(crate) fn take_all(&mut self) -> Vec<Granted<P::Page>> {
        self.slots.take_all().into_iter().map(|f| f.buf).collect()
    }

    /// The buffer a frame is written into before [`push`](Self::push), kept between
    /// frames; hand it back with [`put_scratch`](Self::put_scratch).
    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.scratch)
    }

    pub(crate) fn put_scratch(&mut self, buf: Vec<u8>) {
        self.scratch = buf;
    }

    /// The ring, for the guest to take back once the backend disconnected.
    pub(crate) fn into_ring(self) -> TxRing<P> {
        self.ring
    }

    /// One response, copied out of the ring: matched to its slot through the id we gave
    /// the request, its page taken back, its frame counted.
    fn complete(&mut self, core: &mut Core<P>, stats: &mut Stats, rsp: NetifTxResponse) {
        // An extra-info slot's answer: its id is whatever the slot held, not ours.
        if rsp.status == RSP_NULL {
            return;
        }
        // The id is the backend's claim: it must name a request in flight.
        let Some(InFlight { buf, frame_len }) = self.slots.take(u64::from(rsp.id)) else {
            stats.tx_bad_responses += 1;
            debug!("netfront: dropped tx response with unknown id {:#x}", rsp.id);
            return;
        };
        core.release(buf);
        match rsp.status {
            RSP_OKAY => {
                if let Some(len) = frame_len {
                    stats.tx_packets += 1;
                    stats.tx_bytes += len as u64;
                }
            }
            RSP_ERROR | RSP_DROPPED => {
                if frame_len.is_some() {
                    stats.tx_errors += 1;
                }
            }
            status => {
                stats.tx_bad_responses += 1;
                let n = stats.tx_bad_responses;
                if n.is_power_of_two() {
                    warn!(
                        "netfront: tx response {:#x} with status {status} ({n} bad so far)",
                        rsp.id
                    );
                }
            }
        }
    }
}
