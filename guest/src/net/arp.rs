//! Who made itself known through ARP: the senders of the ARP packets the vif received,
//! noted on their way to smoltcp, so that a self-test can tell the gateway answered.

use super::wire;
use alloc::vec::Vec;
use netfront::NetRxToken;
use smoltcp::phy::RxToken;

const ARP_SEEN: usize = 8;

pub struct WatchedRx<'a> {
    pub(super) inner: NetRxToken,
    pub(super) arp_seen: &'a mut Vec<([u8; 4], [u8; 6])>,
}

impl RxToken for WatchedRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let arp_seen = self.arp_seen;
        self.inner.consume(|frame| {
            if let Some((mac, ip)) = wire::arp_sender(frame) {
                arp_seen.retain(|&(seen, _)| seen != ip);
                arp_seen.insert(0, (ip, mac));
                arp_seen.truncate(ARP_SEEN);
            }
            f(frame)
        })
    }
}
