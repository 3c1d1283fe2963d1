//! Receive: the ring is kept full of zeroed pages granted writable; the backend copies each
//! frame into one or more of them and answers with where the data lies.
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

use alloc::vec::Vec;
use core::ops::Range;

use log::{debug, warn};
use ring::shared::RingError;

use crate::abi::{
    ExtraType, NetifExtraInfo, NetifRxRequest, NetifRxResponse, RxFlags, NR_SLOTS_MIN, RSP_DROPPED,
    RSP_ERROR,
};
use crate::csum::{self, CsumError};
use crate::driver::RX_QUEUE;
use crate::env::{EventChannel, Page, Pages, PAGE_SIZE};
use crate::tx::ETH_HEADER;
use crate::Netfront;
use grant::{Granted, Settled};

/// The largest frame we join: what an IPv4 or IPv6 packet's 16-bit length allows.
const MAX_RX_FRAME: usize = 0xffff;

/// Data slots one frame may take: the most every backend must be ready to use, enough
/// for [`MAX_RX_FRAME`] in whole pages.
const MAX_RX_SLOTS: usize = NR_SLOTS_MIN;

/// Extra-info slots one frame may carry: one of each type.
const MAX_EXTRAS: usize = ExtraType::MAX as usize - 1;

/// A frame whose slots are being taken.
pub(crate) struct Assembly {
    data: Vec<u8>,
    /// Data slots taken.
    slots: usize,
    /// Extra-info slots taken.
    extras: usize,
    /// The next slot is an extra-info slot.
    extra_next: bool,
    /// Data slots follow (after any extra-info slots).
    more_data: bool,
    /// `NETRXF_csum_blank` on the first slot: the checksum is ours to fill in.
    csum_blank: bool,
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
    /// A blank checksum we cannot fill in.
    Checksum(CsumError),
}

impl Assembly {
    fn new(first: RxFlags) -> Self {
        Assembly {
            data: Vec::new(),
            slots: 0,
            extras: 0,
            extra_next: first.contains(RxFlags::EXTRA_INFO),
            more_data: false,
            csum_blank: first.contains(RxFlags::CSUM_BLANK),
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

impl<P: Pages, E: EventChannel> Netfront<P, E> {
    /// Takes in up to `budget` receive slots (fewer if [`RX_QUEUE`] frames are waiting),
    /// reposting a buffer for each. Returns whether responses are left on the ring.
    pub(crate) fn drain_rx(&mut self, mut budget: usize) -> Result<bool, RingError> {
        loop {
            while budget > 0 && self.ready.len() < RX_QUEUE {
                let Some(slot) = self.take_rx_slot()? else { break };
                budget -= 1;
                self.handle_rx_slot(slot);
            }
            self.refill_rx();
            if !self.rx_front().final_check_for_responses()? {
                return Ok(false);
            }
            if budget == 0 || self.ready.len() >= RX_QUEUE {
                return Ok(true);
            }
        }
    }

    /// Posts a zeroed, granted page at every free ring position, as far as the guest gives
    /// pages, and notifies the backend if it asked to be.
    pub(crate) fn refill_rx(&mut self) {
        let mask = self.rx.len() - 1;
        let mut pushed = false;
        while self.rx_front().free_requests() > 0 {
            let index = self.rx_prod as usize & mask;
            // A free ring slot means position `rx_prod - size` was taken, and its buffer
            // with it.
            debug_assert!(self.rx[index].is_none());
            let Some(mut page) = self.take_page() else {
                debug!("netfront: out of pages for receive buffers");
                break;
            };
            // Nothing of ours for the backend to read in a page it may read.
            page.fill_from(0, 0);
            let g = match self.grant(page, false) {
                Ok(g) => g,
                Err(e) => {
                    warn!("netfront: cannot grant a receive buffer: {e}");
                    break;
                }
            };
            // Index < ring size (256 for one page): fits u16.
            let req = NetifRxRequest { id: index as u16, _pad: 0, gref: g.gref };
            if self.rx_front().push_request(req).is_err() {
                // Cannot happen: the loop checked for room.
                self.release(g);
                break;
            }
            self.rx[index] = Some(g);
            self.rx_prod = self.rx_prod.wrapping_add(1);
            pushed = true;
        }
        if pushed && self.rx_front().commit_requests() {
            self.evtchn.notify(self.ports.rx);
        }
    }

    fn take_rx_slot(&mut self) -> Result<Option<Slot>, RingError> {
        let extra = self.rx_partial.as_ref().is_some_and(|a| a.extra_next);
        let front = self.rx_front();
        Ok(if extra {
            front.take_response_as::<NetifExtraInfo>()?.map(Slot::Extra)
        } else {
            front.take_response()?.map(Slot::Data)
        })
    }

    fn handle_rx_slot(&mut self, slot: Slot) {
        let index = self.rx_cons as usize & (self.rx.len() - 1);
        self.rx_cons = self.rx_cons.wrapping_add(1);
        let buf = self.rx[index].take();
        match slot {
            Slot::Data(rsp) => self.rx_data(index, buf, rsp),
            Slot::Extra(extra) => self.rx_extra(buf, extra),
        }
        if self.rx_partial.as_ref().is_some_and(Assembly::complete) {
            self.finish_frame();
        }
    }

    fn rx_data(&mut self, index: usize, buf: Option<Granted<P::Page>>, rsp: NetifRxResponse) {
        let flags = RxFlags::from_bits_retain(rsp.flags);
        let claim = check_rx(index, buf.is_some(), &rsp);
        if claim == Err(Discard::BadSlot) {
            self.stats.rx_bad_responses += 1;
            debug!("netfront: bad rx response {rsp:?} at slot {index}");
        }
        // End the grant before reading the page: afterwards the backend can no longer
        // change what we copy.
        let settled = buf.map(|b| self.settle(b));
        let asm = self.rx_partial.get_or_insert_with(|| Assembly::new(flags));
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
            asm.data = Vec::new();
        }
        if let Some(settled) = settled {
            self.pool.recycle(settled);
        }
    }

    fn rx_extra(&mut self, buf: Option<Granted<P::Page>>, extra: NetifExtraInfo) {
        // The backend used this position for metadata: its buffer holds nothing for us.
        if let Some(b) = buf {
            self.release(b);
        }
        self.stats.rx_extra_info += 1;
        // Only taken while a frame expects extra-info slots: there is an assembly.
        let Some(asm) = self.rx_partial.as_mut() else { return };
        asm.extras += 1;
        asm.extra_next = extra.more();
        // The content is ignored (GSO: we asked for none; the frame as joined is still
        // a valid packet), but an unknown type or an endless chain is not a valid slot.
        if extra.decode().is_err() || asm.extras > MAX_EXTRAS {
            self.stats.rx_bad_responses += 1;
            debug!("netfront: bad rx extra-info slot {extra:?}");
            asm.drop.get_or_insert(Discard::BadSlot);
            asm.data = Vec::new();
        }
    }

    /// The frame's last slot is in: hand it up, or count why not.
    fn finish_frame(&mut self) {
        let Some(asm) = self.rx_partial.take() else { return };
        let mut data = asm.data;
        let mut drop = asm.drop;
        if drop.is_none() && data.len() < ETH_HEADER {
            drop = Some(Discard::Runt);
        }
        if drop.is_none() && asm.csum_blank {
            match csum::fill_checksum(&mut data) {
                Ok(()) => self.stats.rx_csum_filled += 1,
                Err(e) => drop = Some(Discard::Checksum(e)),
            }
        }
        match drop {
            None => {
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += data.len() as u64;
                self.ready.push_back(data);
            }
            Some(why) => {
                self.stats.rx_dropped += 1;
                if why == Discard::Backend {
                    self.stats.rx_errors += 1;
                }
                debug!("netfront: rx frame dropped: {why:?}");
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
