//! The driver as smoltcp's device: its tokens and capabilities, and round trips between a
//! smoltcp stack on the driver and another on the fake backend's side of the wire (ARP,
//! ping, a TCP echo), the peer leaving its TCP and UDP checksums blank as dom0's stack
//! does for local traffic, the guest's going out blank and its TCP segments joined (the
//! fake backend completes and cuts them as netback and a NIC would), or, offloads off,
//! neither.

use std::cell::RefCell;
use std::rc::Rc;

use netfront::abi::{RxFlags, MAX_TX_SIZE};
use netfront::{NetError, Netfront, Offloads, MTU};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr,
};

use crate::fake::{frame, Driver, Rig, RxFrame, World, MAC_BYTES, RING_SIZE, VIF};

const GUEST_IP: IpAddress = IpAddress::v4(169, 254, 0, 2);
const PEER_IP: IpAddress = IpAddress::v4(169, 254, 0, 1);
const PEER_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

#[test]
fn capabilities_say_ethernet_and_whose_checksums() {
    let (_rig, net) = Rig::connected(&[]);
    let caps = net.capabilities();
    assert_eq!(caps.medium, Medium::Ethernet);
    assert_eq!(caps.max_transmission_unit, MTU);
    assert_eq!(MTU, 1514);
    let c = caps.checksum;
    for each in [c.ipv4, c.icmpv4] {
        assert!(each.tx() && each.rx(), "smoltcp computes and checks IPv4's and ICMP's");
    }
    // TCP's and UDP's are the backend's to complete and the driver's to check.
    for each in [c.udp, c.tcp] {
        assert!(!each.tx() && !each.rx());
    }
    // Without offloads smoltcp computes them; the driver still checks.
    let mut rig = Rig::new(&[]);
    let env = rig.env();
    let second = 1_000_000_000;
    let net =
        Netfront::connect_with(&mut rig.xs, VIF, env.clone(), env, second, Offloads::NONE).unwrap();
    let c = net.capabilities().checksum;
    for each in [c.udp, c.tcp] {
        assert!(each.tx() && !each.rx());
    }
}

#[test]
fn tokens_move_frames() {
    use smoltcp::phy::{RxToken, TxToken};
    let (rig, mut net) = Rig::connected(&[]);
    let now = Instant::from_millis(0);
    assert!(net.receive(now).is_none());
    rig.w().deliver(RxFrame::new(frame(100, 1)));
    let (rx, tx) = net.receive(now).expect("a frame");
    assert_eq!(rx.consume(|f| f.to_vec()), frame(100, 1));
    // The transmit token that comes with it sends a reply.
    tx.consume(60, |buf| buf.copy_from_slice(&frame(60, 2)));
    let tx = net.transmit(now).expect("room");
    tx.consume(1514, |buf| buf.copy_from_slice(&frame(1514, 3)));
    // Nothing is published before the flush; then both at once, with one notification.
    rig.w().serve();
    assert!(rig.w().sent.is_empty());
    let before = rig.w().ports.notifies(crate::fake::PORT);
    net.flush();
    assert_eq!(rig.w().ports.notifies(crate::fake::PORT), before + 1);
    rig.w().serve();
    let w = rig.w();
    assert_eq!(w.sent.iter().cloned().collect::<Vec<_>>(), [frame(60, 2), frame(1514, 3)]);
    // Neither is TCP or UDP over IPv4: nothing for the backend to complete.
    assert_eq!((w.csum_blank, w.gso_frames), (0, 0));
}

#[test]
fn no_transmit_token_while_the_ring_is_full() {
    use smoltcp::phy::TxToken;
    let (rig, mut net) = Rig::connected(&[]);
    let now = Instant::from_millis(0);
    rig.w().hold_tx = true;
    // A token while the largest run (16 pages and its GSO slot) and a frame still fit.
    let mut tokens = 0;
    while let Some(tx) = net.transmit(now) {
        tx.consume(60, |b| b.copy_from_slice(&frame(60, tokens as u8)));
        tokens += 1;
    }
    assert_eq!(tokens, RING_SIZE - (MAX_TX_SIZE.div_ceil(4096) + 2) + 1);
    net.flush();
    while net.send(&frame(60, 0)).is_ok() {}
    assert_eq!(net.send(&frame(60, 0)), Err(NetError::Busy));
    // The token that comes with a received frame is offered regardless; with no room its
    // frame is dropped and counted.
    rig.w().deliver(RxFrame::new(frame(100, 1)));
    let (_, tx) = net.receive(now).unwrap();
    tx.consume(60, |b| b.copy_from_slice(&frame(60, 0)));
    assert_eq!(net.stats().tx_dropped, 1);
    rig.w().hold_tx = false;
    rig.w().serve();
    assert!(net.transmit(now).is_some(), "room again once answered");
}

/// The backend's side of the wire as a smoltcp device: it receives what the guest sent
/// and sends by queueing frames for the guest, TCP and UDP ones with a blank checksum.
struct Peer(Rc<RefCell<World>>);

struct PeerRx(Vec<u8>);

impl phy::RxToken for PeerRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct PeerTx(Rc<RefCell<World>>);

impl phy::TxToken for PeerTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        // IPv4 carrying TCP or UDP: left for the "hardware" to sum, as Linux does.
        let partial = buf.len() > 23 && buf[12..14] == [0x08, 0x00] && matches!(buf[23], 6 | 17);
        let flags =
            if partial { RxFlags::CSUM_BLANK | RxFlags::DATA_VALIDATED } else { RxFlags::empty() };
        self.0.borrow_mut().to_guest.push_back(RxFrame { flags, ..RxFrame::new(buf) });
        r
    }
}

impl Device for Peer {
    type RxToken<'a> = PeerRx;
    type TxToken<'a> = PeerTx;

    fn receive(&mut self, _: Instant) -> Option<(PeerRx, PeerTx)> {
        let f = self.0.borrow_mut().sent.pop_front()?;
        Some((PeerRx(f), PeerTx(self.0.clone())))
    }

    fn transmit(&mut self, _: Instant) -> Option<PeerTx> {
        Some(PeerTx(self.0.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        let mut checksum = ChecksumCapabilities::default();
        checksum.tcp = Checksum::Rx;
        checksum.udp = Checksum::Rx;
        caps.checksum = checksum;
        caps
    }
}

/// Both stacks and their sockets.
struct Net {
    rig: Rig,
    net: Driver,
    iface: Interface,
    sockets: SocketSet<'static>,
    peer: Peer,
    peer_iface: Interface,
    peer_sockets: SocketSet<'static>,
    now: Instant,
}

fn iface(mac: [u8; 6], ip: IpAddress, device: &mut impl Device) -> Interface {
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(config, device, Instant::from_millis(0));
    iface.update_ip_addrs(|a| a.push(IpCidr::new(ip, 16)).unwrap());
    iface
}

impl Net {
    fn new() -> Self {
        Net::with(Offloads::default())
    }

    fn with(offloads: Offloads) -> Self {
        let mut rig = Rig::new(&[]);
        let env = rig.env();
        let mut net =
            Netfront::connect_with(&mut rig.xs, VIF, env.clone(), env, 1_000_000_000, offloads)
                .expect("handshake");
        let iface = iface(net.mac(), GUEST_IP, &mut net);
        let mut peer = Peer(rig.world.clone());
        let peer_iface = iface_peer(&mut peer);
        Net {
            rig,
            net,
            iface,
            sockets: SocketSet::new(vec![]),
            peer,
            peer_iface,
            peer_sockets: SocketSet::new(vec![]),
            now: Instant::from_millis(0),
        }
    }

    /// One round: each stack polls, the backend carries frames both ways.
    fn step(&mut self) {
        self.iface.poll(self.now, &mut self.net, &mut self.sockets);
        self.net.flush();
        self.rig.w().serve();
        self.peer_iface.poll(self.now, &mut self.peer, &mut self.peer_sockets);
        self.rig.w().serve();
        self.now += smoltcp::time::Duration::from_millis(1);
    }
}

fn iface_peer(peer: &mut Peer) -> Interface {
    iface(PEER_MAC, PEER_IP, peer)
}

#[test]
fn a_ping_round_trip() {
    let mut n = Net::new();
    assert_eq!(n.net.mac(), MAC_BYTES);
    let buf = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 2048]);
    let h = n.sockets.add(icmp::Socket::new(buf(), buf()));
    n.sockets.get_mut::<icmp::Socket>(h).bind(icmp::Endpoint::Ident(0x22)).unwrap();
    let caps = n.net.capabilities().checksum;
    let data = b"netfront ping";
    let repr = Icmpv4Repr::EchoRequest { ident: 0x22, seq_no: 1, data };
    let mut bytes = vec![0; repr.buffer_len()];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes), &caps);
    n.sockets.get_mut::<icmp::Socket>(h).send_slice(&bytes, PEER_IP).unwrap();
    let mut reply = None;
    for _ in 0..50 {
        n.step();
        let s = n.sockets.get_mut::<icmp::Socket>(h);
        if s.can_recv() {
            let mut got = vec![0; 2048];
            let (len, from) = s.recv_slice(&mut got).unwrap();
            reply = Some((got[..len].to_vec(), from));
            break;
        }
    }
    let (got, from) = reply.expect("an echo reply");
    assert_eq!(from, PEER_IP);
    let packet = Icmpv4Packet::new_checked(&got).unwrap();
    let repr = Icmpv4Repr::parse(&packet, &caps).unwrap();
    assert_eq!(repr, Icmpv4Repr::EchoReply { ident: 0x22, seq_no: 1, data });
    // ARP went both ways before the ping.
    let s = n.net.stats();
    assert!(s.rx_packets >= 2 && s.tx_packets >= 2, "{s:?}");
}

/// Half a megabyte through a TCP echo server on the peer: the guest's side's counters.
fn tcp_echo(n: &mut Net) -> netfront::Stats {
    const LEN: usize = 512 * 1024;
    let buf = || tcp::SocketBuffer::new(vec![0; 64 * 1024]);
    let client = n.sockets.add(tcp::Socket::new(buf(), buf()));
    let server = n.peer_sockets.add(tcp::Socket::new(buf(), buf()));
    n.peer_sockets.get_mut::<tcp::Socket>(server).listen(7).unwrap();
    let cx = n.iface.context();
    n.sockets.get_mut::<tcp::Socket>(client).connect(cx, (PEER_IP, 7), 49152).unwrap();
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 1000) as u8).collect();
    let (mut sent, mut back) = (0, Vec::with_capacity(LEN));
    let mut chunk = vec![0; 64 * 1024];
    for _ in 0..20_000 {
        n.step();
        let c = n.sockets.get_mut::<tcp::Socket>(client);
        if c.may_send() && sent < LEN {
            sent += c.send_slice(&data[sent..]).unwrap();
        }
        if c.can_recv() {
            let k = c.recv_slice(&mut chunk).unwrap();
            back.extend_from_slice(&chunk[..k]);
        }
        // The server echoes what it can.
        let s = n.peer_sockets.get_mut::<tcp::Socket>(server);
        if s.can_recv() && s.can_send() {
            let room = s.send_capacity() - s.send_queue();
            let k = s.recv_slice(&mut chunk[..room]).unwrap();
            assert_eq!(s.send_slice(&chunk[..k]).unwrap(), k);
        }
        if back.len() == LEN {
            break;
        }
    }
    assert_eq!(back.len(), LEN, "echoed in time");
    assert!(back == data, "echoed intact");
    let s = n.net.stats();
    // Every TCP segment from the peer came with a blank checksum the driver took as it is,
    // and smoltcp accepted them all (nothing was resent: no frame was lost).
    assert!(s.rx_csum_trusted > (LEN / 1460) as u64, "{s:?}");
    assert_eq!(s.rx_csum_trusted + 1, s.rx_packets, "all but the ARP reply");
    assert_eq!((s.rx_dropped, s.rx_bad_responses, s.tx_dropped, s.tx_errors), (0, 0, 0, 0));
    assert_eq!(s.tx_bad_responses, 0, "no NULL response taken for a request's");
    assert_eq!(n.net.rx_posted(), RING_SIZE);
    let w = n.rig.w();
    assert_eq!(w.exposed, 0);
    assert!(w.sent.iter().all(|f| f.len() <= MTU), "the wire sees no frame over the MTU");
    s
}

#[test]
fn a_tcp_echo_of_half_a_megabyte_with_offloads() {
    let mut n = Net::new();
    let s = tcp_echo(&mut n);
    let w = n.rig.w();
    // The guest's data went out in large segments, every TCP frame with a blank checksum.
    assert!(s.tx_gso_frames > 0 && s.tx_gso_segments > 4 * s.tx_gso_frames, "{s:?}");
    assert_eq!(w.gso_frames as u64, s.tx_gso_frames);
    let blank = w.csum_blank as u64;
    assert!(blank <= s.tx_packets && blank + 1 >= s.tx_packets, "all but ARP: {s:?}");
}

#[test]
fn a_tcp_echo_of_half_a_megabyte_without_offloads() {
    let mut n = Net::with(Offloads::NONE);
    let s = tcp_echo(&mut n);
    let w = n.rig.w();
    assert_eq!((s.tx_gso_frames, w.gso_frames, w.csum_blank), (0, 0, 0));
    // The frames of each poll were published together: far fewer notifications.
    assert!(s.tx_notifies * 2 < s.tx_packets, "{s:?}");
}
