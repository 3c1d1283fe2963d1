//! The driver as smoltcp's device: its tokens and capabilities, and round trips between a
//! smoltcp stack on the driver and another on the fake backend's side of the wire (ARP,
//! ping, a TCP echo), the peer leaving its TCP and UDP checksums blank as dom0's stack
//! does for local traffic.

use std::cell::RefCell;
use std::rc::Rc;

use netfront::abi::RxFlags;
use netfront::MTU;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr,
};

use crate::fake::{frame, Driver, Rig, RxFrame, World, MAC_BYTES, RING_SIZE};

const GUEST_IP: IpAddress = IpAddress::v4(169, 254, 0, 2);
const PEER_IP: IpAddress = IpAddress::v4(169, 254, 0, 1);
const PEER_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

#[test]
fn capabilities_say_ethernet_and_software_checksums() {
    let (_rig, net) = Rig::connected(&[]);
    let caps = net.capabilities();
    assert_eq!(caps.medium, Medium::Ethernet);
    assert_eq!(caps.max_transmission_unit, MTU);
    assert_eq!(MTU, 1514);
    let c = caps.checksum;
    for each in [c.ipv4, c.udp, c.tcp, c.icmpv4] {
        assert!(each.tx() && each.rx(), "smoltcp computes and checks every checksum");
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
    rig.w().serve();
    let w = rig.w();
    assert_eq!(w.sent.iter().cloned().collect::<Vec<_>>(), [frame(60, 2), frame(1514, 3)]);
}

#[test]
fn no_transmit_token_while_the_ring_is_full() {
    use smoltcp::phy::TxToken;
    let (rig, mut net) = Rig::connected(&[]);
    let now = Instant::from_millis(0);
    rig.w().hold_tx = true;
    for i in 0..RING_SIZE {
        net.transmit(now).expect("room").consume(60, |b| b.copy_from_slice(&frame(60, i as u8)));
    }
    assert!(net.transmit(now).is_none());
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
        let (rig, mut net) = Rig::connected(&[]);
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

#[test]
fn a_tcp_echo_of_half_a_megabyte() {
    const LEN: usize = 512 * 1024;
    let mut n = Net::new();
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
    // Every TCP segment from the peer came with a blank checksum we filled in, and smoltcp
    // accepted them all (nothing was resent: no frame was lost).
    assert!(s.rx_csum_filled > (LEN / 1460) as u64, "{s:?}");
    assert_eq!(s.rx_csum_filled + 1, s.rx_packets, "all but the ARP reply");
    assert_eq!((s.rx_dropped, s.rx_bad_responses, s.tx_dropped, s.tx_errors), (0, 0, 0, 0));
    assert_eq!(n.net.rx_posted(), RING_SIZE);
    assert_eq!(n.rig.w().exposed, 0);
}
