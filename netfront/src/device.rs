//! The driver as a smoltcp [`Device`]: smoltcp's `Interface::poll` pulls received frames
//! through [`NetRxToken`]s and pushes frames to send through [`NetTxToken`]s.

use alloc::vec::Vec;

use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::phy::{RxToken, TxToken};
use smoltcp::time::Instant;

use crate::driver::MTU;
use crate::env::{EventChannel, Pages};
use crate::rx::Spares;
use crate::Netfront;

/// A received frame, taken off the driver's queue: it no longer needs the driver. Its
/// buffer goes back to the driver's spares once smoltcp has read it.
pub struct NetRxToken {
    frame: Vec<u8>,
    spares: Spares,
}

impl RxToken for NetRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.frame);
        self.spares.give(self.frame);
        result
    }
}

/// Room to send one frame.
pub struct NetTxToken<'a, P: Pages, E: EventChannel>(&'a mut Netfront<P, E>);

impl<P: Pages, E: EventChannel> TxToken for NetTxToken<'_, P, E> {
    /// smoltcp writes the frame into a buffer the driver keeps for the purpose, which the
    /// driver then copies into granted pages (or into the TCP run it is joining), to go out
    /// at [`Netfront::flush`]. A frame that cannot go out (no memory, or no room left: the
    /// token that comes with a received frame is offered without checking) is counted in
    /// [`crate::Stats::tx_dropped`]; smoltcp's protocols recover from a lost frame as from
    /// one lost on the wire.
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
        let spares = self.rx_spares().clone();
        Some((NetRxToken { frame, spares }, NetTxToken(self)))
    }

    /// A token only while a full-size frame (and the TCP run it may end) fits on the
    /// transmit ring: otherwise smoltcp keeps its data and retries at a later poll.
    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.can_take_frame().then_some(NetTxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // TCP's and UDP's checksums: the driver checks those the backend did not vouch for
        // ([`crate::csum`]), and with checksum offload smoltcp leaves its own blank for the
        // backend. IPv4's and ICMP's are smoltcp's both ways.
        let transport = if self.offloads().csum { Checksum::None } else { Checksum::Tx };
        caps.checksum = ChecksumCapabilities::default();
        caps.checksum.tcp = transport;
        caps.checksum.udp = transport;
        caps
    }
}
