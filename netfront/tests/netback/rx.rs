//! Receiving from an honest backend: single and multi-slot frames, extra-info slots,
//! checksums vouched for or checked, keeping the ring full, and the queue bound.

use netfront::abi::{Extra, NetifExtraInfo, RxFlags, GSO_TYPE_TCPV4};
use smoltcp::wire::{
    checksum, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Address,
    Ipv4Packet, TcpPacket, UdpPacket,
};

use crate::fake::{frame, Rig, RxFrame, MAC_BYTES, PORT, RING_SIZE};

#[test]
fn a_single_slot_frame_arrives_intact() {
    let (rig, mut net) = Rig::connected(&[]);
    for (len, offset) in [(60, 0), (1514, 0), (1514, 2582), (4096, 0), (14, 100)] {
        let f = frame(len, len as u8);
        rig.w().deliver(RxFrame { offset, ..RxFrame::new(f.clone()) });
        assert_eq!(net.poll(), 1);
        assert_eq!(net.recv(), Some(f), "{len} at {offset}");
    }
    let s = net.stats();
    assert_eq!((s.rx_packets, s.rx_bytes), (5, 60 + 1514 + 1514 + 4096 + 14));
    assert_eq!((s.rx_dropped, s.rx_bad_responses), (0, 0));
    // Each buffer used was reposted.
    assert_eq!(net.rx_posted(), RING_SIZE);
    let w = rig.w();
    assert_eq!(w.rx_available() as usize, RING_SIZE);
    assert_eq!(w.exposed, 0, "every buffer posted zeroed");
    assert_eq!(w.table.grants.len(), 2 + RING_SIZE);
}

#[test]
fn a_receive_page_is_zeroed_when_new_and_reposted_as_it_is() {
    let (rig, mut net) = Rig::connected(&[]);
    let f = frame(3000, 9);
    rig.w().deliver(RxFrame::new(f.clone()));
    assert_eq!(net.recv(), Some(f.clone()));
    // The buffer went back to the pool and came straight back as the ring's next buffer,
    // holding the frame the backend wrote there: nothing it did not have, so not zeroed
    // again. Every other buffer, new, was zeroed.
    let mut w = rig.w();
    let reqs: Vec<_> = std::iter::from_fn(|| w.take_rx()).collect();
    assert_eq!(reqs.len(), RING_SIZE);
    let held = |gref: u32, w: &crate::fake::World| {
        w.table.grants[&gref].view(|page| page[..f.len()] == f[..])
    };
    let reposted = reqs.iter().filter(|r| held(r.gref.0, &w)).count();
    assert_eq!(reposted, 1);
    let zeroed =
        reqs.iter().filter(|r| w.table.grants[&r.gref.0].view(|p| p.iter().all(|&b| b == 0)));
    assert_eq!(zeroed.count(), RING_SIZE - 1);
    assert_eq!(w.exposed, 0);
}

#[test]
fn nothing_to_receive() {
    let (_rig, mut net) = Rig::connected(&[]);
    assert_eq!(net.poll(), 0);
    assert_eq!(net.recv(), None);
    assert!(!net.work_pending());
}

#[test]
fn a_frame_over_several_slots_is_joined() {
    let (rig, mut net) = Rig::connected(&[]);
    for (len, chunk, offset) in
        [(9000, 4096, 0), (9000, 1000, 64), (1514, 100, 4000), (65535, 4096, 0), (20, 2, 0)]
    {
        let f = frame(len, 3);
        rig.w().deliver(RxFrame { chunk, offset, ..RxFrame::new(f.clone()) });
        assert_eq!(net.poll(), 1, "{len}/{chunk}");
        assert_eq!(net.recv(), Some(f), "{len}/{chunk}");
    }
    assert_eq!(net.stats().rx_packets, 5);
    assert_eq!(net.rx_posted(), RING_SIZE);
}

#[test]
fn frames_beyond_the_slot_or_size_bound_are_dropped() {
    let (rig, mut net) = Rig::connected(&[]);
    // 19 data slots: more than any backend may use for one frame.
    rig.w().deliver(RxFrame { chunk: 100, ..RxFrame::new(frame(1900, 1)) });
    rig.w().deliver(RxFrame::new(frame(60, 2)));
    assert_eq!(net.poll(), 1);
    assert_eq!(net.recv(), Some(frame(60, 2)), "the next frame starts where it should");
    // Runts are no Ethernet frames.
    rig.w().deliver(RxFrame::new(frame(13, 3)));
    assert_eq!(net.poll(), 0);
    let s = net.stats();
    assert_eq!((s.rx_dropped, s.rx_packets, s.rx_bad_responses), (2, 1, 0));
    assert_eq!(net.rx_posted(), RING_SIZE);
}

#[test]
fn extra_info_slots_are_consumed_and_ignored() {
    let (rig, mut net) = Rig::connected(&[]);
    let gso = NetifExtraInfo::new(Extra::Gso { size: 1448, ty: GSO_TYPE_TCPV4, features: 0 }, true);
    let hash = NetifExtraInfo::new(Extra::Hash { ty: 1, algorithm: 1, value: [1, 2, 3, 4] }, false);
    let f = frame(6000, 9);
    rig.w().deliver(RxFrame { extras: vec![gso, hash], ..RxFrame::new(f.clone()) });
    // One extra after a single-slot frame.
    let g = frame(100, 10);
    let mcast = NetifExtraInfo::new(Extra::McastAdd([1, 0, 0x5e, 0, 0, 1]), false);
    rig.w().deliver(RxFrame { extras: vec![mcast], ..RxFrame::new(g.clone()) });
    assert_eq!(net.poll(), 2);
    assert_eq!(net.recv(), Some(f));
    assert_eq!(net.recv(), Some(g));
    let s = net.stats();
    assert_eq!((s.rx_extra_info, s.rx_packets, s.rx_dropped), (3, 2, 0));
    // The buffers the extra slots used up were reposted too.
    assert_eq!(net.rx_posted(), RING_SIZE);
    assert_eq!(rig.w().table.grants.len(), 2 + RING_SIZE);
}

#[test]
fn a_frame_straddling_polls_is_joined() {
    let (rig, mut net) = Rig::connected(&[]);
    let f = frame(3000, 4);
    let mut w = rig.w();
    let (a, b) = (w.take_rx().unwrap(), w.take_rx().unwrap());
    w.write_rx(a.gref, 0, &f[..1000]);
    w.respond_rx(rsp(a.id, 0, RxFlags::MORE_DATA, 1000));
    w.publish_rx();
    drop(w);
    assert_eq!(net.poll(), 0);
    let mut w = rig.w();
    w.write_rx(b.gref, 0, &f[1000..]);
    w.respond_rx(rsp(b.id, 0, RxFlags::empty(), 2000));
    w.publish_rx();
    drop(w);
    assert_eq!(net.poll(), 1);
    assert_eq!(net.recv(), Some(f));
}

pub fn rsp(id: u16, offset: u16, flags: RxFlags, status: i16) -> netfront::abi::NetifRxResponse {
    netfront::abi::NetifRxResponse { id, offset, flags: flags.bits(), status }
}

#[test]
fn the_ring_stays_full_under_traffic() {
    let (rig, mut net) = Rig::connected(&[]);
    let mut got = 0;
    for round in 0..40u32 {
        // Bursts of up to a ring's worth, some over several slots.
        for i in 0..(round * 7 % 60 + 1) {
            let len = 60 + (i * 97 % 3000) as usize;
            rig.w()
                .to_guest
                .push_back(RxFrame { chunk: 2048, ..RxFrame::new(frame(len, i as u8)) });
        }
        while !rig.w().to_guest.is_empty() {
            rig.w().serve_rx();
            net.poll();
            while let Some(f) = net.recv() {
                assert_eq!(f[..6], MAC_BYTES);
                got += 1;
            }
            assert_eq!(net.rx_posted(), RING_SIZE);
        }
    }
    assert_eq!(net.stats().rx_packets, got);
    let w = rig.w();
    // Buffers are recycled, not hoarded: the ring's pages, a ring's worth of buffers, and
    // the few pages in the pool while buffers were out.
    assert!(w.pages_out() <= 2 + 2 * RING_SIZE, "{} pages out", w.pages_out());
    assert_eq!(w.table.grants.len(), 2 + RING_SIZE);
    assert_eq!(w.exposed, 0);
}

#[test]
fn a_starved_backend_is_notified_of_new_buffers() {
    let (rig, mut net) = Rig::connected(&[]);
    // No notification while the backend has buffers to spare: it did not ask for one.
    rig.w().deliver(RxFrame::new(frame(60, 0)));
    net.poll();
    assert_eq!(rig.w().ports.notifies(PORT + 1), 1, "only the initial fill");
    for i in 0..300 {
        rig.w().to_guest.push_back(RxFrame::new(frame(60, i as u8)));
    }
    rig.w().serve_rx();
    assert_eq!(rig.w().to_guest.len(), 300 - 256);
    net.poll();
    assert_eq!(rig.w().ports.notifies(PORT + 1), 2);
    assert_eq!(rig.w().serve_rx(), 44);
}

#[test]
fn received_frames_wait_in_a_bounded_queue() {
    let (rig, mut net) = Rig::connected(&[]);
    for i in 0..100 {
        rig.w().deliver(RxFrame::new(frame(60, i)));
    }
    // The queue fills; the rest waits on the ring.
    assert_eq!(net.poll(), 64);
    assert!(net.work_pending());
    for i in 0..100 {
        assert_eq!(net.recv(), Some(frame(60, i)), "frame {i} in order");
    }
    assert_eq!(net.recv(), None);
    assert!(!net.work_pending());
    assert_eq!(net.stats().rx_packets, 100);
}

/// An IPv4 frame to us carrying a TCP or UDP segment of `payload` bytes, its checksum
/// field holding what Linux leaves for the offload: the pseudo-header sum.
fn blank_checksum_frame(protocol: IpProtocol, payload: usize) -> Vec<u8> {
    let (src, dst) = (Ipv4Address::new(169, 254, 0, 1), Ipv4Address::new(169, 254, 0, 2));
    let l4 = match protocol {
        IpProtocol::Tcp => 20,
        _ => 8,
    } + payload;
    let mut buf = vec![0u8; 14 + 20 + l4];
    let mut eth = EthernetFrame::new_unchecked(&mut buf);
    eth.set_dst_addr(EthernetAddress(MAC_BYTES));
    eth.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((20 + l4) as u16);
    ip.set_hop_limit(64);
    ip.set_next_header(protocol);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.set_dont_frag(true);
    ip.fill_checksum();
    let seg = ip.payload_mut();
    for (i, b) in seg.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(1);
    }
    let pseudo = checksum::pseudo_header_v4(&src, &dst, protocol, l4 as u32);
    match protocol {
        IpProtocol::Tcp => {
            let mut tcp = TcpPacket::new_unchecked(seg);
            tcp.set_header_len(20);
            tcp.set_checksum(pseudo);
        }
        _ => {
            let mut udp = UdpPacket::new_unchecked(seg);
            udp.set_len(l4 as u16);
            udp.set_checksum(pseudo);
        }
    }
    buf
}

/// Whether smoltcp accepts the frame's transport checksum.
fn checksum_ok(f: &[u8]) -> bool {
    let eth = EthernetFrame::new_checked(f).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    match ip.next_header() {
        IpProtocol::Tcp => {
            TcpPacket::new_checked(ip.payload()).unwrap().verify_checksum(&src, &dst)
        }
        _ => UdpPacket::new_checked(ip.payload()).unwrap().verify_checksum(&src, &dst),
    }
}

/// The frame with its transport checksum completed, as the sender's NIC would have.
fn completed(mut f: Vec<u8>) -> Vec<u8> {
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
    let seg = &mut f[14 + 20..];
    match proto {
        IpProtocol::Tcp => TcpPacket::new_unchecked(seg)
            .fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)),
        _ => UdpPacket::new_unchecked(seg)
            .fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)),
    }
    f
}

#[test]
fn checksums_the_backend_vouches_for_are_taken_as_they_are() {
    let (rig, mut net) = Rig::connected(&[]);
    let mut n = 0;
    for protocol in [IpProtocol::Tcp, IpProtocol::Udp] {
        for payload in [0, 1, 100, 1459, 1460, 6000] {
            for flags in [RxFlags::CSUM_BLANK | RxFlags::DATA_VALIDATED, RxFlags::DATA_VALIDATED] {
                let f = blank_checksum_frame(protocol, payload);
                assert!(!checksum_ok(&f));
                rig.w().deliver(RxFrame { flags, chunk: 2000, ..RxFrame::new(f.clone()) });
                assert_eq!(net.poll(), 1);
                assert_eq!(net.recv(), Some(f), "{protocol} with {payload} bytes, {flags:?}");
                n += 1;
            }
        }
    }
    let s = net.stats();
    assert_eq!((s.rx_csum_trusted, s.rx_csum_bad, s.rx_dropped), (n, 0, 0));
}

#[test]
fn other_frames_are_checked_and_a_wrong_checksum_drops_the_frame() {
    let (rig, mut net) = Rig::connected(&[]);
    for protocol in [IpProtocol::Tcp, IpProtocol::Udp] {
        for payload in [0, 1, 1460, 6000] {
            let good = completed(blank_checksum_frame(protocol, payload));
            assert!(checksum_ok(&good));
            rig.w().deliver(RxFrame { chunk: 2000, ..RxFrame::new(good.clone()) });
            assert_eq!(net.recv(), Some(good.clone()), "{protocol} with {payload} bytes");
            let mut bad = good;
            let last = bad.len() - 1;
            bad[last] ^= 1;
            rig.w().deliver(RxFrame::new(bad));
            assert_eq!(net.poll(), 0, "{protocol} with {payload} bytes, one bit off");
        }
    }
    // What the check does not apply to goes up as it is: not IPv4 (the test pattern's
    // ethertype), an IPv4 fragment, a UDP datagram without a checksum.
    let mut frag = blank_checksum_frame(IpProtocol::Udp, 100);
    frag[20] |= 0x20;
    let mut unsummed = blank_checksum_frame(IpProtocol::Udp, 100);
    unsummed[14 + 20 + 6..14 + 20 + 8].fill(0);
    for f in [frame(100, 1), frag, unsummed] {
        rig.w().deliver(RxFrame::new(f.clone()));
        assert_eq!(net.recv(), Some(f));
    }
    let s = net.stats();
    assert_eq!((s.rx_dropped, s.rx_csum_bad, s.rx_csum_trusted, s.rx_bad_responses), (8, 8, 0, 0));
    assert_eq!(net.rx_posted(), RING_SIZE);
}
