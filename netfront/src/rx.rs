//! Receive: the ring is kept full of pages granted writable, holding nothing the backend did
//! not have (zeros, or frames it sent or was sent); the backend copies each frame into one or
//! more of them and answers with where the data lies.
//!
//! The backend answers the request at ring position `p` with the response at position
//! `p` (netback consumes requests in order, one per response slot, extra-info slots
//! included), so the buffer a response refers to is found by its position, never by the id
//! it carries: we post position `p` with id `p mod ring size` and a response whose id is
//! anything else is bad. An extra-info slot carries no id at all; its position says which
//! buffer it used up. Either way the backend's values are only ever compared with ours.
//!
//! A frame is the first data slot, the extra-info slots it announces (`NETRXF_extra_info`,
//! chained by `XEN_NETIF_EXTRA_FLAG_MORE`), then data slots while `NETRXF_more_data` says
//! more follow. Its slots may straddle polls. Any bad slot drops the whole frame, but its
//! remaining slots are still taken so the next frame starts where it should.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;

use log::{debug, warn};
use ring::shared::{FrontRing, RingError};

use crate::abi::{
    ExtraType, NetifExtraInfo, NetifRxRequest, NetifRxResponse, RxFlags, NR_SLOTS_MIN, RSP_DROPPED,
    RSP_ERROR,
};
use crate::csum;
use crate::driver::{Core, Stats, RX_QUEUE, RX_QUEUE_BYTES};
use crate::env::{Page, Pages, RxRing, SharedRing, PAGE_SIZE};
use crate::tx::ETH_HEADER;
use grant::{Granted, Settled};

/// The largest frame we join: what an IPv4 or IPv6 packet's 16-bit length allows.
const MAX_RX_FRAME: usize = 0xffff;

/// Data slots one frame may take: the most every backend must be ready to use, enough
/// for [`MAX_RX_FRAME`] in whole pages.
const MAX_RX_SLOTS: usize = NR_SLOTS_MIN;

/// Extra-info slots one frame may carry: one of each type.
const MAX_EXTRAS: usize = ExtraType::MAX as usize - 1;

/// Buffers kept for received frames at most, and their capacity in bytes: a burst's worth
/// of full-size frames, or four large segments.
const SPARE_BUFFERS: usize = 64;
const SPARE_BYTES: usize = 256 * 1024;

/// The buffers of frames smoltcp has done with, for the next frames to be joined in: in a
/// steady flow a received frame costs no allocation. Shared with the tokens that carry
/// frames to smoltcp ([`crate::device`]), which give their buffer back when consumed.
#[derive(Clone, Default)]
pub(crate) struct Spares(Arc<spin::Mutex<SpareList>>);

#[derive(Default)]
struct SpareList {
    bufs: Vec<Vec<u8>>,
    /// The capacity of `bufs`' buffers.
    bytes: usize,
}

impl Spares {
    /// An empty buffer: a kept one, else a new one.
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut list = self.0.lock();
        match list.bufs.pop() {
            Some(buf) => {
                list.bytes -= buf.capacity();
                buf
            }
            None => Vec::new(),
        }
    }

    /// Keeps `buf` for a later frame, unless as many buffers or bytes are kept as may be.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        let mut list = self.0.lock();
        let bytes = list.bytes + buf.capacity();
        if buf.capacity() > 0 && list.bufs.len() < SPARE_BUFFERS && bytes <= SPARE_BYTES {
            buf.clear();
            list.bytes = bytes;
            list.bufs.push(buf);
        }
    }

    /// Buffers kept, and their capacity.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let list = self.0.lock();
        (list.bufs.len(), list.bytes)
    }
}

/// A frame whose slots are being taken.
struct Assembly {
    data: Vec<u8>,
    /// Data slots taken.
    slots: usize,
    /// Extra-info slots taken.
    extras: usize,
    /// The next slot is an extra-info slot.
    extra_next: bool,
    /// Data slots follow (after any extra-info slots).
    more_data: bool,
    /// `NETRXF_csum_blank` or `NETRXF_data_validated` on the first slot: the backend vouches
    /// for the checksum (see [`crate::csum`]).
    csum_trusted: bool,
    /// The frame is dropped once its last slot is in.
    drop: Option<Discard>,
}

/// Why a frame is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discard {
    /// A slot that cannot be right.
    BadSlot,
    /// The backend reported an error.
    Backend,
    /// The backend kept a buffer's grant: its content is not settled.
    Held,
    /// Beyond [`MAX_RX_FRAME`] or [`MAX_RX_SLOTS`].
    TooLong,
    /// Shorter than an Ethernet header.
    Runt,
    /// A TCP or UDP checksum that does not add up.
    Checksum,
}

impl Assembly {
    fn new(first: RxFlags, data: Vec<u8>) -> Self {
        Assembly {
            data,
            slots: 0,
            extras: 0,
            extra_next: first.contains(RxFlags::EXTRA_INFO),
            more_data: false,
            csum_trusted: first.intersects(RxFlags::CSUM_BLANK | RxFlags::DATA_VALIDATED),
            drop: None,
        }
    }

    fn complete(&self) -> bool {
        !self.extra_next && !self.more_data
    }
}

/// A response slot, in the layout the frame being taken says it has.
enum Slot {
    Data(NetifRxResponse),
    Extra(NetifExtraInfo),
}

/// The receive ring, the buffers posted on it, the frame being taken and the frames
/// waiting to be handed up.
pub(crate) struct RxQueue<P: Pages> {
    ring: RxRing<P>,
    /// Buffers posted, by ring position modulo the ring size.
    posted: Vec<Option<Granted<P::Page>>>,
    /// Requests pushed and responses taken, as free-running ring positions: they track the
    /// ring's own indices, which it keeps private.
    prod: u32,
    cons: u32,
    /// The frame whose slots are being taken, across polls.
    partial: Option<Assembly>,
    ready: VecDeque<Vec<u8>>,
    /// The bytes of the frames in `ready`.
    ready_bytes: usize,
    spares: Spares,
}

/// What [`RxQueue::drain`] left.
pub(crate) struct Drained {
    /// Responses are left on the ring (the budget or the queue of waiting frames is full).
    pub(crate) more: bool,
    /// Buffers were posted and the backend asked to be told.
    pub(crate) notify: bool,
}

impl<P: Pages> RxQueue<P> {
    pub(crate) fn new(mut ring: RxRing<P>) -> Self {
        let size = ring.front().size() as usize;
        RxQueue {
            ring,
            posted: (0..size).map(|_| None).collect(),
            prod: 0,
            cons: 0,
            partial: None,
            ready: VecDeque::new(),
            ready_bytes: 0,
            spares: Spares::default(),
        }
    }

    /// Where frames' buffers go back once handed up and done with.
    pub(crate) fn spares(&self) -> &Spares {
        &self.spares
    }

    fn front(&mut self) -> &mut FrontRing<NetifRxRequest, NetifRxResponse> {
        self.ring.front()
    }

    /// Buffers posted to the backend.
    pub(crate) fn posted(&self) -> usize {
        self.posted.iter().filter(|b| b.is_some()).count()
    }

    /// Received frames waiting to be handed up.
    pub(crate) fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// The oldest received frame.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        let frame = self.ready.pop_front()?;
        self.ready_bytes -= frame.len();
        Some(frame)
    }

    /// Whether as many frames or bytes wait as we keep.
    fn full(&self) -> bool {
        self.ready.len() >= RX_QUEUE || self.ready_bytes >= RX_QUEUE_BYTES
    }

    /// Takes in up to `budget` slots (fewer if [`RX_QUEUE`] frames or [`RX_QUEUE_BYTES`] are
    /// waiting), reposting a buffer for each.
    pub(crate) fn drain(
        &mut self,
        core: &mut Core<P>,
        stats: &mut Stats,
        mut budget: usize,
    ) -> Result<Drained, RingError> {
        let mut notify = false;
        loop {
            while budget > 0 && !self.full() {
                let Some(slot) = self.take_slot()? else { break };
                budget -= 1;
                self.handle_slot(core, stats, slot);
            }
            notify |= self.refill(core);
            if !self.front().final_check_for_responses()? {
                return Ok(Drained { more: false, notify });
            }
            if budget == 0 || self.full() {
                return Ok(Drained { more: true, notify });
            }
        }
    }

    /// Posts a zeroed, granted page at every free ring position, as far as the guest gives
    /// pages. Returns whether the backend must be told.
    pub(crate) fn refill(&mut self, core: &mut Core<P>) -> bool {
        let mask = self.posted.len() - 1;
        let mut pushed = false;
        while self.front().free_requests() > 0 {
            let index = self.prod as usize & mask;
            // A free ring slot means position `prod - size` was taken, and its buffer
            // with it.
            debug_assert!(self.posted[index].is_none());
            // Nothing of ours for the backend to read in a page it may read (see
            // `take_clean_page`): zeroed when new, not at every refill.
            let Some(page) = core.take_clean_page() else {
                debug!("netfront: out of pages for receive buffers");
                break;
            };
            let g = match core.grant_rx(page) {
                Ok(g) => g,
                Err(e) => {
                    warn!("netfront: cannot grant a receive buffer: {e}");
                    break;
                }
            };
            // Index < ring size (256 for one page): fits u16.
            let req = NetifRxRequest { id: index as u16, _pad: 0, gref: g.gref };
            if self.front().push_request(req).is_err() {
                // Cannot happen: the loop checked for room.
                core.release(g);
                break;
            }
            self.posted[index] = Some(g);
            self.prod = self.prod.wrapping_add(1);
            pushed = true;
        }
        pushed && self.front().commit_requests()
    }

    /// Every buffer posted, taken back, and the frame being taken forgotten: for teardown.
    pub(crate) fn take_all(&mut self) -> Vec<Granted<P::Page>> {
        self.partial = None;
        self.posted.iter_mut().filter_map(Option::take).collect()
    }

    /// The ring, for the guest to take back once the backend disconnected.
    pub(crate) fn into_ring(self) -> RxRing<P> {
        self.ring
    }

    fn take_slot(&mut self) -> Result<Option<Slot>, RingError> {
        let extra = self.partial.as_ref().is_some_and(|a| a.extra_next);
        let front = self.front();
        Ok(if extra {
            front.take_response_as::<NetifExtraInfo>()?.map(Slot::Extra)
        } else {
            front.take_response()?.map(Slot::Data)
        })
    }

    fn handle_slot(&mut self, core: &mut Core<P>, stats: &mut Stats, slot: Slot) {
        let index = self.cons as usize & (self.posted.len() - 1);
        self.cons = self.cons.wrapping_add(1);
        let buf = self.posted[index].take();
        match slot {
            Slot::Data(rsp) => self.data(core, stats, index, buf, rsp),
            Slot::Extra(extra) => self.extra(core, stats, buf, extra),
        }
        if self.partial.as_ref().is_some_and(Assembly::complete) {
            self.finish_frame(stats);
        }
    }

    fn data(
        &mut self,
        core: &mut Core<P>,
        stats: &mut Stats,
        index: usize,
        buf: Option<Granted<P::Page>>,
        rsp: NetifRxResponse,
    ) {
        let flags = RxFlags::from_bits_retain(rsp.flags);
        let claim = check_rx(index, buf.is_some(), &rsp);
        if claim == Err(Discard::BadSlot) {
            stats.rx_bad_responses += 1;
            debug!("netfront: bad rx response {rsp:?} at slot {index}");
        }
        // End the grant before reading the page: afterwards the backend can no longer
        // change what we copy.
        let settled = buf.map(|b| core.settle(b));
        let spares = &self.spares;
        let asm = self.partial.get_or_insert_with(|| Assembly::new(flags, spares.take()));
        asm.slots += 1;
        asm.more_data = flags.contains(RxFlags::MORE_DATA);
        let page = settled.as_ref().and_then(Settled::page);
        let outcome = match (claim, page) {
            (Ok(range), Some(page)) => {
                if asm.slots > MAX_RX_SLOTS || asm.data.len() + range.len() > MAX_RX_FRAME {
                    Err(Discard::TooLong)
                } else {
                    let at = asm.data.len();
                    asm.data.resize(at + range.len(), 0);
                    page.read(range.start, &mut asm.data[at..]);
                    Ok(())
                }
            }
            (Ok(_), None) => Err(Discard::Held),
            (Err(why), _) => Err(why),
        };
        if let Err(why) = outcome {
            asm.drop.get_or_insert(why);
            // Nothing more of a dropped frame is kept.
            asm.data.clear();
        }
        if let Some(settled) = settled {
            core.recycle(settled);
        }
    }

    fn extra(
        &mut self,
        core: &mut Core<P>,
        stats: &mut Stats,
        buf: Option<Granted<P::Page>>,
        extra: NetifExtraInfo,
    ) {
        // The backend used this position for metadata: its buffer holds nothing for us.
        if let Some(b) = buf {
            core.release(b);
        }
        stats.rx_extra_info += 1;
        // Only taken while a frame expects extra-info slots: there is an assembly.
        let Some(asm) = self.partial.as_mut() else { return };
        asm.extras += 1;
        asm.extra_next = extra.more();
        // The content is ignored (GSO: the frame as joined is one large TCP segment, which
        // smoltcp takes whole), but an unknown type or an endless chain is not a valid slot.
        if extra.decode().is_err() || asm.extras > MAX_EXTRAS {
            stats.rx_bad_responses += 1;
            debug!("netfront: bad rx extra-info slot {extra:?}");
            asm.drop.get_or_insert(Discard::BadSlot);
            asm.data.clear();
        }
    }

    /// The frame's last slot is in: queue it to be handed up, or count why not.
    fn finish_frame(&mut self, stats: &mut Stats) {
        let Some(asm) = self.partial.take() else { return };
        let data = asm.data;
        let mut drop = asm.drop;
        if drop.is_none() && data.len() < ETH_HEADER {
            drop = Some(Discard::Runt);
        }
        if drop.is_none() {
            if asm.csum_trusted {
                stats.rx_csum_trusted += 1;
            } else if csum::verify_checksum(&data) == Ok(false) {
                stats.rx_csum_bad += 1;
                drop = Some(Discard::Checksum);
            }
        }
        match drop {
            None => {
                stats.rx_packets += 1;
                stats.rx_bytes += data.len() as u64;
                self.ready_bytes += data.len();
                self.ready.push_back(data);
            }
            Some(why) => {
                stats.rx_dropped += 1;
                if why == Discard::Backend {
                    stats.rx_errors += 1;
                }
                debug!("netfront: rx frame dropped: {why:?}");
                self.spares.give(data);
            }
        }
    }
}

/// Where a data response says its data lies in the buffer posted at `index`, if it can be
/// right: the id we gave that buffer, a known status, data within the page.
fn check_rx(index: usize, posted: bool, rsp: &NetifRxResponse) -> Result<Range<usize>, Discard> {
    if !posted || usize::from(rsp.id) != index {
        return Err(Discard::BadSlot);
    }
    match rsp.status {
        RSP_ERROR | RSP_DROPPED => Err(Discard::Backend),
        len if len >= 0 => {
            let start = usize::from(rsp.offset);
            // Non-negative i16: fits usize.
            let end = start + len as usize;
            if end <= PAGE_SIZE {
                Ok(start..end)
            } else {
                Err(Discard::BadSlot)
            }
        }
        _ => Err(Discard::BadSlot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_are_reused_up_to_their_count_and_bytes() {
        let spares = Spares::default();
        assert_eq!(spares.take().capacity(), 0, "none kept yet: a new one");
        spares.give(Vec::new());
        assert_eq!(spares.kept(), (0, 0), "an empty buffer is not worth keeping");
        let mut buf = Vec::with_capacity(2048);
        buf.extend_from_slice(&[7; 100]);
        spares.give(buf);
        let again = spares.take();
        assert_eq!((again.len(), again.capacity()), (0, 2048));
        for _ in 0..SPARE_BUFFERS + 8 {
            spares.give(Vec::with_capacity(1024));
        }
        assert_eq!(spares.kept(), (SPARE_BUFFERS, SPARE_BUFFERS * 1024));
        while spares.kept().0 > 0 {
            spares.take();
        }
        for _ in 0..8 {
            spares.give(Vec::with_capacity(0x10000));
        }
        assert_eq!(spares.kept(), (4, SPARE_BYTES), "bounded by bytes too");
    }
}
