//! The vif as smoltcp's device.

use super::arp::WatchedRx;
use crate::xen::frontend::{GuestEvents, GuestPages};
use alloc::vec::Vec;
use netfront::{NetTxToken, Netfront};
use smoltcp::phy::{Device, DeviceCapabilities};
use smoltcp::time::Instant;

/// The one vif, over the drivers' environment in this kernel ([`crate::xen::frontend`]).
pub type Vif = Netfront<GuestPages, GuestEvents>;

/// The vif as smoltcp's device, noting who made itself known through ARP on the way in.
pub struct Nic {
    pub vif: Vif,
    /// Senders of the ARP packets received (IPv4 address, MAC), latest first, a few.
    pub arp_seen: Vec<([u8; 4], [u8; 6])>,
}

impl Device for Nic {
    type RxToken<'a> = WatchedRx<'a>;
    type TxToken<'a> = NetTxToken<'a, GuestPages, GuestEvents>;

    fn receive(&mut self, now: Instant) -> Option<(WatchedRx<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.vif.receive(now)?;
        Some((WatchedRx { inner: rx, arp_seen: &mut self.arp_seen }, tx))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.vif.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.vif.capabilities()
    }
}
