//! The xenbus handshake of a network frontend (`io/netif.h`, "Feature and Parameter
//! Negotiation"; `io/xenbus.h`), and closing.
//!
//! ```text
//! frontend                                  backend (netback)
//!                                            writes feature-*, InitWait
//! probe device/vif/<id>, wait for InitWait+
//! read our mac, the backend's features
//! tx and rx ring pages + grants, port(s)
//! one transaction: tx-ring-ref, rx-ring-ref,
//!   event-channel (or -tx and -rx),
//!   request-rx-copy, feature-*
//! Connected
//!                                            maps the rings, binds the port(s),
//!                                            Connected
//! wait for Connected, fill the rx ring
//! ```
//!
//! We go from Initialising straight to Connected, as Linux's netfront does: Linux's netback
//! connects when it sees the frontend Connected and ignores Initialised.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use grant::{DomId, GrantRef};
use log::warn;
use xenbus::frontend::{read_flag, read_optional, Device};
use xenbus::{Error, Store, Transport, XenbusState, Xenstore, XsError};

use crate::driver::Ports;
use crate::env::{EventChannel, Pages, RxRing, SharedRing, TxRing};
use crate::{DeviceError, NetError, Netfront};

/// The largest `multi-queue-max-queues` we believe (Linux's netback offers one per dom0
/// vcpu).
const MAX_QUEUES: u32 = 1024;

/// What the backend offers. We need `feature-rx-copy` (connecting fails without it) and use
/// `sg` and `split_event_channels`; the rest is read for the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `feature-sg`: it takes frames spanning several transmit slots.
    pub sg: bool,
    /// `feature-gso-tcpv4`, `feature-gso-tcpv6`: it takes large TCP segments to cut up.
    pub gso_tcpv4: bool,
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`.
    pub ipv6_csum_offload: bool,
    /// `feature-split-event-channels`: a port per ring.
    pub split_event_channels: bool,
    /// `multi-queue-max-queues` (1 if absent). We use one queue.
    pub max_queues: u32,
}

/// The offloads we ask for (both by default): what the backend may do for us, and we for
/// it. Off, the driver and smoltcp compute and check every checksum and send segments of
/// the MSS, as before there were offloads (the command line's `netoffload=off`, for a
/// benchmark's other column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offloads {
    /// Checksums: ours go out `NETTXF_csum_blank` for the backend to complete, and we take
    /// frames with blank checksums (`feature-no-csum-offload=0`).
    pub csum: bool,
    /// Large TCP segments: we send them (if the backend has `feature-gso-tcpv4` and
    /// `feature-sg`; see [`crate::gso`]) and take them (`feature-gso-tcpv4=1`). Needs
    /// `csum`.
    pub gso: bool,
}

impl Default for Offloads {
    fn default() -> Self {
        Offloads { csum: true, gso: true }
    }
}

impl Offloads {
    /// None at all.
    pub const NONE: Offloads = Offloads { csum: false, gso: false };

    /// What we send: checksum offload always (every netback completes blank checksums:
    /// Linux's netfront relies on it too), GSO as the backend offers it.
    pub(crate) fn transmit(self, backend: Features) -> Offloads {
        let gso = self.csum && self.gso && backend.sg && backend.gso_tcpv4;
        Offloads { csum: self.csum, gso }
    }

    /// The keys we write besides the rings and ports: copy mode, we notify when we post
    /// receive buffers, we join fragmented receives, and what we take.
    fn keys(self) -> [(&'static str, &'static str); 5] {
        let flag = |on: bool| if on { "1" } else { "0" };
        [
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", flag(self.csum && self.gso)),
            ("feature-no-csum-offload", flag(!self.csum)),
        ]
    }
}

impl<P: Pages, E: EventChannel> Netfront<P, E> {
    /// Connects to the backend of `device/vif/<id>`: probes the device, reads its MAC and
    /// the backend's features, sets up both rings (through `pages`) and the event
    /// channel(s) (through `evtchn`), publishes them in one transaction, walks the
    /// XenbusState handshake to Connected and fills the receive ring. Each wait (for the
    /// toolstack's keys, for each backend state) gets `timeout_ns`.
    ///
    /// On failure everything allocated is handed back to the guest (rings, ports), our state
    /// is set to Closing if we had published anything, and `pages` and `evtchn` are dropped.
    pub fn connect<T: Transport>(
        xs: &mut Xenstore<T>,
        id: u32,
        pages: P,
        evtchn: E,
        timeout_ns: u64,
    ) -> Result<Self, NetError> {
        Self::connect_with(xs, id, pages, evtchn, timeout_ns, Offloads::default())
    }

    /// [`connect`](Self::connect), asking for `offloads` (kept for a
    /// [`reconnect`](Self::reconnect)).
    pub fn connect_with<T: Transport>(
        xs: &mut Xenstore<T>,
        id: u32,
        mut pages: P,
        mut evtchn: E,
        timeout_ns: u64,
        offloads: Offloads,
    ) -> Result<Self, NetError> {
        let link = handshake(xs, id, &mut pages, &mut evtchn, timeout_ns, offloads)?;
        let mut net = Netfront::new(pages, evtchn, link, offloads);
        net.refill_rx();
        net.say_connected("connected");
        Ok(net)
    }

    /// Connects again after the guest was restored or migrated into a new domain, where
    /// the backend, the rings' grants and the event channels are new: the handshake of
    /// [`connect`](Self::connect) over `evtchn` (the new domain's), then the receive ring is
    /// filled again. Frames in flight are lost, as on a wire (TCP sends them again); the
    /// MAC address is the toolstack's of the new domain (it may have changed: see
    /// [`mac`](Self::mac)), and so are the backend's features.
    ///
    /// If the handshake fails the device stays stopped ([`is_broken`](Self::is_broken)) and
    /// the error is returned.
    pub fn reconnect<T: Transport>(
        &mut self,
        xs: &mut Xenstore<T>,
        mut evtchn: E,
        timeout_ns: u64,
    ) -> Result<(), NetError> {
        let id = self.device().id;
        // Nothing more goes on the old rings; their pages come back (the backend is gone).
        self.fail_all();
        let offloads = self.wanted_offloads();
        match handshake(xs, id, self.pages(), &mut evtchn, timeout_ns, offloads) {
            Ok(link) => {
                self.resume_on(link, evtchn);
                self.say_connected("reconnected");
                Ok(())
            }
            Err(e) => {
                warn!("netfront: {}: reconnecting: {e}: device unusable", self.device().path);
                Err(e)
            }
        }
    }

    fn say_connected(&self, what: &str) {
        log::info!(
            "netfront: {} {what}: mac {}, {} receive buffers, {:?}, sending with {:?}, ports {:?}",
            self.device().path,
            format_mac(self.mac()),
            self.rx_posted(),
            self.features(),
            self.offloads(),
            self.ports()
        );
    }

    /// Closes the device: the Closing/Closed handshake with the backend (so that it unmaps
    /// our pages), then every grant ends and the pages, rings and ports go back to the
    /// guest. Frames in flight are lost. The local teardown happens even when the handshake
    /// fails; pages the backend still holds are then leaked, never reused.
    pub fn close<T: Transport>(
        self,
        xs: &mut Xenstore<T>,
        timeout_ns: u64,
    ) -> Result<(), NetError> {
        let result = self.device().close(xs, timeout_ns).map_err(NetError::from);
        if let Err(e) = &result {
            warn!("netfront: {}: close: {e}", self.device().path);
        }
        self.shut_down();
        result
    }
}

/// What one handshake established: the device and its backend, our MAC and the backend's
/// features, rings and event channels the backend connected to.
pub(crate) struct Link<P: Pages> {
    pub(crate) device: Device,
    pub(crate) backend: DomId,
    pub(crate) mac: [u8; 6],
    pub(crate) features: Features,
    pub(crate) tx_ring: TxRing<P>,
    pub(crate) rx_ring: RxRing<P>,
    pub(crate) ports: Ports,
}

/// The handshake of `device/vif/<id>`, up to both sides Connected (see the module's docs).
/// On failure the rings and ports are handed back and, if anything was published, our
/// state is set to Closing.
fn handshake<T: Transport, P: Pages, E: EventChannel>(
    xs: &mut Xenstore<T>,
    id: u32,
    pages: &mut P,
    evtchn: &mut E,
    timeout_ns: u64,
    offloads: Offloads,
) -> Result<Link<P>, NetError> {
    let (device, backend) = frontend::attach(xs, "vif", id, timeout_ns)?;
    let mac = read_mac(xs, &device.path)?;
    let features = read_features(xs, &device.backend)?;

    let tx_ring: TxRing<P> = pages.alloc_ring(backend, 1)?;
    let rx_ring: RxRing<P> = match pages.alloc_ring(backend, 1) {
        Ok(ring) => ring,
        Err(e) => {
            pages.free_ring(tx_ring);
            return Err(e.into());
        }
    };
    let ports = match alloc_ports(evtchn, backend, features.split_event_channels) {
        Ok(ports) => ports,
        Err(e) => {
            pages.free_ring(tx_ring);
            pages.free_ring(rx_ring);
            return Err(e);
        }
    };
    let refs = (tx_ring.grant_refs(), rx_ring.grant_refs());
    if let Err(e) = publish(xs, &device, refs, ports, timeout_ns, offloads) {
        device.abandon(xs, "netfront", &e);
        close_ports(evtchn, ports);
        pages.free_ring(tx_ring);
        pages.free_ring(rx_ring);
        return Err(e);
    }
    Ok(Link { device, backend, mac, features, tx_ring, rx_ring, ports })
}

/// One port for both rings, or one each when the backend offers split event channels and
/// the guest can give us two.
fn alloc_ports<E: EventChannel>(
    evtchn: &mut E,
    backend: DomId,
    split: bool,
) -> Result<Ports, NetError> {
    let tx = evtchn.alloc_unbound(backend)?;
    if !split {
        return Ok(Ports { tx, rx: tx });
    }
    match evtchn.alloc_unbound(backend) {
        Ok(rx) => Ok(Ports { tx, rx }),
        Err(e) => {
            warn!("netfront: no second event channel ({e}): using one for both rings");
            Ok(Ports { tx, rx: tx })
        }
    }
}

pub(crate) fn close_ports<E: EventChannel>(evtchn: &mut E, ports: Ports) {
    evtchn.close(ports.tx);
    if ports.rx != ports.tx {
        evtchn.close(ports.rx);
    }
}

/// Publishes the rings, ports and our features in one transaction, then says Connected
/// and waits for the backend to connect.
fn publish<T: Transport>(
    xs: &mut Xenstore<T>,
    device: &Device,
    refs: (&[GrantRef], &[GrantRef]),
    ports: Ports,
    timeout_ns: u64,
    offloads: Offloads,
) -> Result<(), NetError> {
    // One page each: a guest that granted another number would have the backend map the
    // wrong ring.
    let ([tx_ref], [rx_ref]) = refs else { return Err(Error::InvalidArgument.into()) };
    let (tx_ref, rx_ref) = (tx_ref.0, rx_ref.0);
    let mut keys: Vec<(String, String)> = alloc::vec![
        ("tx-ring-ref".into(), format!("{tx_ref}")),
        ("rx-ring-ref".into(), format!("{rx_ref}")),
    ];
    if ports.tx == ports.rx {
        keys.push(("event-channel".into(), format!("{}", ports.tx)));
    } else {
        keys.push(("event-channel-tx".into(), format!("{}", ports.tx)));
        keys.push(("event-channel-rx".into(), format!("{}", ports.rx)));
    }
    keys.extend(offloads.keys().iter().map(|&(k, v)| (k.into(), v.into())));
    match device.publish(xs, &keys, XenbusState::Connected, timeout_ns)? {
        XenbusState::Connected => Ok(()),
        _ => Err(NetError::Device(DeviceError::BackendClosed)),
    }
}

/// The MAC address the toolstack wrote in our directory.
fn read_mac<T: Transport>(xs: &mut Xenstore<T>, path: &str) -> Result<[u8; 6], NetError> {
    match xs.read(&format!("{path}/mac")) {
        Ok(v) => parse_mac(&v).ok_or(NetError::BadMac),
        Err(Error::Xs(XsError::NoEnt)) => Err(NetError::BadMac),
        Err(e) => Err(e.into()),
    }
}

/// `aa:bb:cc:dd:ee:ff`, hex digits in either case; a unicast address, not all zeros (an
/// interface cannot have a group address).
pub(crate) fn parse_mac(text: &[u8]) -> Option<[u8; 6]> {
    if text.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        let at = i * 3;
        if i < 5 && text[at + 2] != b':' {
            return None;
        }
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = (digit(text[at])? * 16 + digit(text[at + 1])?) as u8;
    }
    let group = mac[0] & 1 != 0;
    (!group && mac != [0; 6]).then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`, for the log.
fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Reads and checks the features the backend writes before InitWait.
fn read_features(xs: &mut impl Store, backend: &str) -> Result<Features, NetError> {
    if !read_flag(xs, backend, "feature-rx-copy")? {
        return Err(NetError::Device(DeviceError::MissingFeature("feature-rx-copy")));
    }
    const QUEUES: &str = "multi-queue-max-queues";
    let max_queues = match read_optional(xs, backend, QUEUES)? {
        None => 1,
        Some(n) if (1..=u64::from(MAX_QUEUES)).contains(&n) => n as u32,
        Some(_) => {
            return Err(NetError::Device(DeviceError::BadBackendValue {
                key: QUEUES,
                why: "not in 1..=1024",
            }))
        }
    };
    Ok(Features {
        sg: read_flag(xs, backend, "feature-sg")?,
        gso_tcpv4: read_flag(xs, backend, "feature-gso-tcpv4")?,
        gso_tcpv6: read_flag(xs, backend, "feature-gso-tcpv6")?,
        ipv6_csum_offload: read_flag(xs, backend, "feature-ipv6-csum-offload")?,
        split_event_channels: read_flag(xs, backend, "feature-split-event-channels")?,
        max_queues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac(b"00:16:3e:0a:Bc:fF"), Some([0, 0x16, 0x3e, 0x0a, 0xbc, 0xff]));
        for bad in [
            &b""[..],
            b"00:16:3e:0a:bc",
            b"00:16:3e:0a:bc:ff:",
            b"00-16-3e-0a-bc-ff",
            b"00:16:3e:0a:bc:fg",
            b"0:016:3e:0a:bc:ff",
            b"+0:16:3e:0a:bc:ff",
            b"01:00:5e:00:00:01",
            b"ff:ff:ff:ff:ff:ff",
            b"00:00:00:00:00:00",
        ] {
            assert_eq!(parse_mac(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(format_mac([0, 0x16, 0x3e, 0x0a, 0xbc, 0xff]), "00:16:3e:0a:bc:ff");
    }
}
