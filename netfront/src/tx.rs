//! Transmit: a frame is copied into pages we grant read-only, one ring request per page
//! (`NETTXF_more_data` on all but the last; the first request's size is the whole frame's,
//! as netif.h says), and each page stays with its request until the backend answers it.
//!
//! A request's id names its slot in the transmit table and the use of that slot, in 16 bits
//! (`ring::slots`): a response naming a free slot, or a previous use of it, is recognised
//! as bogus and touches nothing.

use crate::DeviceError;
use alloc::vec::Vec;

use log::{debug, warn};
use ring::shared::RingError;

use crate::abi::{NetifTxRequest, NetifTxResponse, TxFlags, MAX_TX_SIZE, RSP_DROPPED, RSP_ERROR};
use crate::abi::{NR_SLOTS_MIN, RSP_OKAY};
use crate::env::{EventChannel, Page, Pages, PAGE_SIZE};
use crate::{NetError, Netfront};
use grant::Granted;

/// The shortest frame the backend takes: an Ethernet header (netback refuses less).
pub(crate) const ETH_HEADER: usize = 14;

// The longest frame spans 16 pages, within the slots every backend must accept.
const _: () = assert!(MAX_TX_SIZE.div_ceil(PAGE_SIZE) <= NR_SLOTS_MIN);

/// A transmit request awaiting its response, in its slot of the transmit table.
pub(crate) struct InFlight<P> {
    buf: Granted<P>,
    /// The frame's length, on the frame's first request only: that response accounts for
    /// the frame.
    frame_len: Option<usize>,
}

impl<P: Pages, E: EventChannel> Netfront<P, E> {
    /// Copies `frame` (a whole Ethernet frame without FCS) into pages and puts it on the
    /// transmit ring. [`NetError::Busy`] when the ring has no room even after taking in the
    /// backend's acknowledgements: poll, then try again. Nothing of the frame reaches the
    /// ring unless all of it does.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
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
        if !self.has_tx_room(slots) {
            if self.broken {
                return Err(NetError::Device(DeviceError::Broken));
            }
            self.stats.tx_busy += 1;
            return Err(NetError::Busy);
        }
        let mut bufs = Vec::with_capacity(slots);
        for chunk in frame.chunks(PAGE_SIZE) {
            let Some(mut page) = self.take_page() else {
                self.release_all(bufs);
                return Err(NetError::Device(DeviceError::NoMemory));
            };
            page.write(0, chunk);
            page.fill_from(chunk.len(), 0);
            match self.grant(page, true) {
                Ok(g) => bufs.push(g),
                Err(e) => {
                    self.release_all(bufs);
                    return Err(NetError::Device(DeviceError::Grant(e)));
                }
            }
        }
        let last = bufs.len() - 1;
        for (i, buf) in bufs.into_iter().enumerate() {
            // `has_tx_room` saw `slots` free table entries and ring slots, and nothing has
            // taken any since: neither the pop nor the push can fail.
            let Some(slot) = self.tx.reserve() else {
                self.release(buf);
                continue;
            };
            // Sizes fit u16: the frame is at most MAX_TX_SIZE (0xffff) bytes.
            let size = if i == 0 { len } else { (len - i * PAGE_SIZE).min(PAGE_SIZE) } as u16;
            let flags = if i < last { TxFlags::MORE_DATA } else { TxFlags::empty() };
            // The table makes 16-bit ids.
            let id = slot.id() as u16;
            let req = NetifTxRequest { gref: buf.gref, offset: 0, flags: flags.bits(), id, size };
            if self.tx_front().push_request(req).is_err() {
                self.tx.cancel(slot);
                self.release(buf);
                continue;
            }
            let frame_len = (i == 0).then_some(len);
            self.tx.fill(slot, InFlight { buf, frame_len });
        }
        if self.tx_front().commit_requests() {
            self.evtchn.notify(self.ports.tx);
        }
        Ok(())
    }

    /// Whether a frame of `slots` pages fits on the ring now, after taking in
    /// acknowledgements if it did not.
    pub(crate) fn has_tx_room(&mut self, slots: usize) -> bool {
        let fits =
            |n: &mut Self| n.tx.free() >= slots && n.tx_front().free_requests() as usize >= slots;
        if self.broken {
            return false;
        }
        if !fits(self) {
            self.reap_tx();
        }
        !self.broken && fits(self)
    }

    /// Takes in every transmit response: pages back to the pool, frames counted.
    pub(crate) fn drain_tx(&mut self) -> Result<(), RingError> {
        // Bounded: the ring refuses more responses than requests in flight, and nothing
        // is pushed meanwhile.
        loop {
            while let Some(rsp) = self.tx_front().take_response()? {
                self.complete_tx(rsp);
            }
            if !self.tx_front().final_check_for_responses()? {
                return Ok(());
            }
        }
    }

    /// Every transmit in flight, its slot freed: for teardown.
    pub(crate) fn take_all_tx(&mut self) -> Vec<Granted<P::Page>> {
        self.tx.take_all().into_iter().map(|f| f.buf).collect()
    }

    fn release_all(&mut self, bufs: Vec<Granted<P::Page>>) {
        for g in bufs {
            self.release(g);
        }
    }

    /// One response, copied out of the ring: matched to its slot through the id we gave
    /// the request, its page taken back, its frame counted.
    fn complete_tx(&mut self, rsp: NetifTxResponse) {
        // The id is the backend's claim: it must name a request in flight.
        let Some(InFlight { buf, frame_len }) = self.tx.take(u64::from(rsp.id)) else {
            self.stats.tx_bad_responses += 1;
            debug!("netfront: dropped tx response with unknown id {:#x}", rsp.id);
            return;
        };
        self.release(buf);
        match rsp.status {
            RSP_OKAY => {
                if let Some(len) = frame_len {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += len as u64;
                }
            }
            RSP_ERROR | RSP_DROPPED => {
                if frame_len.is_some() {
                    self.stats.tx_errors += 1;
                }
            }
            status => {
                self.stats.tx_bad_responses += 1;
                let n = self.stats.tx_bad_responses;
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
