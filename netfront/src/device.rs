//! The driver as a smoltcp [`Device`]: smoltcp's `Interface::poll` pulls received frames
//! through [`NetRxToken`]s and pushes frames to send through [`NetTxToken`]s.

use alloc::vec::Vec;

use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::driver::MTU;
use crate::env::{EventChannel, Pages, PAGE_SIZE};
use crate::Netfront;

/// A received frame, taken off the driver's queue: it no longer needs the driver.
pub struct NetRxToken(Vec<u8>);

impl RxToken for NetRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room to send one frame.
pub struct NetTxToken<'a, P: Pages, E: EventChannel>(&'a mut Netfront<P, E>);

impl<P: Pages, E: EventChannel> TxToken for NetTxToken<'_, P, E> {
    /// smoltcp writes the frame into a buffer the driver keeps for the purpose, which
    /// [`Netfront::send`] then copies into granted pages. A frame that cannot go out
    /// (no memory, or no room left: the token that comes with a received frame is offered
    /// without checking) is counted in [`crate::Stats::tx_dropped`]; smoltcp's protocols
    /// recover from a lost frame as from one lost on the wire.
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.send_with(len, f)
    }
}

impl<P: Pages, E: EventChannel> Device for Netfront<P, E> {
    type RxToken<'a>
        = NetRxToken
    where
        Self: 'a;
    type TxToken<'a>
        = NetTxToken<'a, P, E>
    where
        Self: 'a;

    /// The oldest received frame, polling the rings if none is waiting.
    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.recv()?;
        Some((NetRxToken(frame), NetTxToken(self)))
    }

    /// A token only while a full-size frame fits on the transmit ring: otherwise smoltcp
    /// keeps its data and retries at a later poll.
    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.has_tx_room(MTU.div_ceil(PAGE_SIZE)).then_some(NetTxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // smoltcp computes every checksum it sends (we offer the backend no offload) and
        // checks every one it receives (blank ones were filled in by the driver).
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}
