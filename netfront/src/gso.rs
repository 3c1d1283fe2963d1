//! Transmit segmentation offload by coalescing: smoltcp cuts a TCP stream into segments of
//! at most the peer's MSS; consecutive segments of one connection that smoltcp hands over
//! in one poll are joined back into one large segment here, sent as one multi-slot frame
//! with a GSO extra-info slot (`XEN_NETIF_GSO_TYPE_TCPV4`, the first segment's payload as
//! the size), and the backend's side (netback, then dom0's stack or NIC) cuts it up again,
//! or never needs to: dom0 delivers it to a local socket whole.
//!
//! Why here and not in smoltcp: smoltcp has no segmentation offload, and teaching its TCP
//! socket to emit segments beyond the MSS would be a patch to carry on every upgrade. The
//! segments it emits are already what netback's segmentation would make of a large one, so
//! joining them is exact: the same bytes reach the wire.
//!
//! A segment joins the run only if it is the run's continuation: the same Ethernet and IPv4
//! header but for the length, identification and checksum, IPv4 without options and not a
//! fragment, the same ports, acknowledgement, window and TCP options, only ACK (and PSH,
//! which ends the run) set, its sequence number where the run ends, and a payload no larger
//! than the first's, the run ending at the first shorter one. Anything else goes out as it
//! came.

use alloc::vec::Vec;

use crate::abi::MAX_TX_SIZE;
use crate::csum::IPPROTO_TCP;

const ETH: usize = 14;
const IP: usize = 20;
/// TCP flags: PSH and ACK.
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Where a segment's TCP header and payload are, if it can be part of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// Ethernet + IPv4 + TCP header length: where the payload starts.
    headers: usize,
    /// The payload's length (the frame may carry Ethernet padding after it).
    payload: usize,
    seq: u32,
    flags: u8,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The frame as a segment that may start or join a run: IPv4 without options, not a
/// fragment, TCP with a payload, only ACK or ACK|PSH set.
fn parse(frame: &[u8]) -> Option<Segment> {
    if frame.len() < ETH + IP + 20 || be16(&frame[12..14]) != 0x0800 || frame[ETH] != 0x45 {
        return None;
    }
    let ip = &frame[ETH..];
    let total = usize::from(be16(&ip[2..4]));
    if ip[9] != IPPROTO_TCP || be16(&ip[6..8]) & 0x3fff != 0 || total > ip.len() {
        return None;
    }
    let tcp = &ip[IP..];
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    if tcp_len < 20 || IP + tcp_len >= total || flags & !PSH != ACK || tcp[12] & 0x0f != 0 {
        return None;
    }
    let (headers, payload) = (ETH + IP + tcp_len, total - IP - tcp_len);
    Some(Segment { headers, payload, seq: be32(&tcp[4..8]), flags })
}

/// The run being built: the first segment's headers, then every joined payload.
#[derive(Default)]
pub(crate) struct Coalescer {
    frame: Vec<u8>,
    /// The first segment's header length and payload (the run's segment size).
    headers: usize,
    mss: usize,
    segments: usize,
    next_seq: u32,
    /// No segment may join any more (a shorter one, or PSH, ended the run).
    ended: bool,
}

impl Coalescer {
    /// Whether a run is being built.
    pub(crate) fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Takes `frame` into the run (joining it, or starting a run with it if there is
    /// none); false if it cannot be: then the caller sends the run ([`take`](Self::take))
    /// and offers the frame again, or sends it as it is.
    pub(crate) fn offer(&mut self, frame: &[u8]) -> bool {
        let Some(seg) = parse(frame) else { return false };
        if self.frame.is_empty() {
            self.frame.extend_from_slice(&frame[..seg.headers + seg.payload]);
            self.headers = seg.headers;
            self.mss = seg.payload;
            self.segments = 1;
            self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
            self.ended = seg.flags & PSH != 0;
            return true;
        }
        if !self.joins(frame, seg) {
            return false;
        }
        self.frame.extend_from_slice(&frame[seg.headers..seg.headers + seg.payload]);
        self.segments += 1;
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        self.ended = seg.payload < self.mss || seg.flags & PSH != 0;
        if seg.flags & PSH != 0 {
            self.frame[ETH + IP + 13] |= PSH;
        }
        true
    }

    fn joins(&self, frame: &[u8], seg: Segment) -> bool {
        let first = &self.frame;
        let (ip, ip0) = (&frame[ETH..], &first[ETH..]);
        let (tcp, tcp0) = (&ip[IP..], &ip0[IP..]);
        !self.ended
            && seg.headers == self.headers
            && seg.payload <= self.mss
            && seg.seq == self.next_seq
            && self.frame.len() + seg.payload <= MAX_TX_SIZE
            // Ethernet header; IPv4 version..TOS; flags and fragment offset..protocol;
            // addresses.
            && frame[..ETH] == first[..ETH]
            && ip[..2] == ip0[..2]
            && ip[6..10] == ip0[6..10]
            && ip[12..20] == ip0[12..20]
            // Ports; acknowledgement, data offset (the flags may differ in PSH), window;
            // urgent pointer and options.
            && tcp[..4] == tcp0[..4]
            && tcp[8..13] == tcp0[8..13]
            && tcp[14..16] == tcp0[14..16]
            && tcp[18..seg.headers - ETH - IP] == tcp0[18..self.headers - ETH - IP]
    }

    /// Ends the run: its IPv4 length and header checksum are fixed for its whole length
    /// (the TCP checksum is the caller's to seed), and the segment size to cut it back
    /// into is returned if it joined more than one segment. [`frame`](Self::frame) is
    /// then the run until [`clear`](Self::clear).
    pub(crate) fn finish(&mut self) -> Option<u16> {
        let total = (self.frame.len() - ETH) as u16;
        let ip = &mut self.frame[ETH..ETH + IP];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[10..12].fill(0);
        let sum = !fold(ip.chunks(2).map(|w| u32::from(be16(w))).sum());
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        self.ended = true;
        // The MSS fits u16: the payload of a frame of at most MAX_TX_SIZE bytes.
        (self.segments > 1).then_some(self.mss as u16)
    }

    /// The segments the run joined.
    pub(crate) fn segments(&self) -> usize {
        self.segments
    }

    /// The run's frame.
    pub(crate) fn frame(&mut self) -> &mut [u8] {
        &mut self.frame
    }

    /// Empties the coalescer after its run went out (or was dropped).
    pub(crate) fn clear(&mut self) {
        self.frame.clear();
        self.segments = 0;
        self.ended = false;
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Ipv4Packet, TcpPacket};

    const MSS: usize = 1448;

    /// A segment as smoltcp makes it: Ethernet, IPv4 without options, TCP with a 12-byte
    /// options block (timestamps' size), ACK set, `len` payload bytes from the stream at
    /// `seq`.
    fn seg(seq: u32, len: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (20 + 32 + len) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, seq as u8, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
        f.extend_from_slice(&[0xc0, 0x00, 0x00, 0x07]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0x10, 0x00, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        f.extend((0..len).map(|i| (seq as usize + i) as u8));
        Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    }

    fn joined(c: &mut Coalescer) -> (Vec<u8>, Option<u16>) {
        let gso = c.finish();
        let f = c.frame().to_vec();
        c.clear();
        (f, gso)
    }

    #[test]
    fn consecutive_segments_join_into_one_with_fixed_headers() {
        let mut c = Coalescer::default();
        let n = 40;
        for k in 0..n {
            let flags = if k == n - 1 { ACK | PSH } else { ACK };
            let len = if k == n - 1 { 100 } else { MSS };
            assert!(c.offer(&seg(1000 + (k * MSS) as u32, len, flags)), "segment {k}");
        }
        assert_eq!(c.segments(), n);
        let (f, gso) = joined(&mut c);
        assert_eq!(gso, Some(MSS as u16));
        let payload = (n - 1) * MSS + 100;
        assert_eq!(f.len(), 14 + 20 + 32 + payload);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(usize::from(ip.total_len()), 20 + 32 + payload);
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.seq_number().0, tcp.psh(), tcp.ack()), (1000, true, true));
        // The payload is the stream, in order.
        let want: Vec<u8> = (0..payload).map(|i| (1000 + i) as u8).collect();
        assert_eq!(tcp.payload(), &want[..]);
        assert!(c.is_empty());
    }

    #[test]
    fn a_lone_segment_goes_as_it_came() {
        let mut c = Coalescer::default();
        let s = seg(5, 300, ACK);
        assert!(c.offer(&s));
        assert_eq!(joined(&mut c), (s, None));
    }

    #[test]
    fn what_does_not_continue_the_run_is_refused() {
        let first = seg(0, MSS, ACK);
        let next = MSS as u32;
        let mut other_port = seg(next, MSS, ACK);
        other_port[14 + 20 + 1] = 8;
        let mut other_ack = seg(next, MSS, ACK);
        other_ack[14 + 20 + 11] ^= 1;
        let mut other_window = seg(next, MSS, ACK);
        other_window[14 + 20 + 15] = 1;
        let mut other_options = seg(next, MSS, ACK);
        other_options[14 + 20 + 31] = 4;
        let mut other_mac = seg(next, MSS, ACK);
        other_mac[0] = 0x04;
        let mut other_ttl = seg(next, MSS, ACK);
        other_ttl[14 + 8] = 63;
        let refused = [
            ("a gap", seg(next + 1, MSS, ACK)),
            ("a resend", seg(0, MSS, ACK)),
            ("longer than the first", seg(next, MSS + 1, ACK)),
            ("FIN", seg(next, MSS, ACK | 0x01)),
            ("no payload", seg(next, 0, ACK)),
            ("another port", other_port),
            ("another ack", other_ack),
            ("another window", other_window),
            ("other options", other_options),
            ("another MAC", other_mac),
            ("another TTL", other_ttl),
        ];
        for (why, s) in refused {
            let mut c = Coalescer::default();
            assert!(c.offer(&first));
            assert!(!c.offer(&s), "{why}");
            assert_eq!(joined(&mut c), (first.clone(), None), "{why}: the run is untouched");
        }
        // Not even a start: not TCP, SYN, IPv4 options, a fragment, no payload.
        let mut udp = seg(0, MSS, ACK);
        udp[14 + 9] = 17;
        let mut options = seg(0, MSS, ACK);
        options[14] = 0x46;
        let mut fragment = seg(0, MSS, ACK);
        fragment[14 + 6] = 0x20;
        for s in [udp, seg(0, MSS, 0x02 | ACK), options, fragment, seg(0, 0, ACK), vec![0; 20]] {
            assert!(!Coalescer::default().offer(&s));
        }
    }

    #[test]
    fn a_shorter_segment_or_psh_ends_the_run() {
        for (len, flags) in [(MSS - 1, ACK), (MSS, ACK | PSH)] {
            let mut c = Coalescer::default();
            assert!(c.offer(&seg(0, MSS, ACK)));
            assert!(c.offer(&seg(MSS as u32, len, flags)));
            assert!(!c.offer(&seg((MSS + len) as u32, MSS, ACK)), "{len} {flags:#x}");
            assert_eq!(c.segments(), 2);
        }
        // A first segment with PSH ends its run at once.
        let mut c = Coalescer::default();
        assert!(c.offer(&seg(0, MSS, ACK | PSH)));
        assert!(!c.offer(&seg(MSS as u32, MSS, ACK)));
    }

    #[test]
    fn a_run_stops_short_of_the_largest_frame() {
        let mut c = Coalescer::default();
        let mut k = 0;
        while c.offer(&seg((k * MSS) as u32, MSS, ACK)) {
            k += 1;
        }
        assert_eq!(k, (MAX_TX_SIZE - 66) / MSS);
        let (f, gso) = joined(&mut c);
        assert!(f.len() <= MAX_TX_SIZE && f.len() + MSS > MAX_TX_SIZE);
        assert_eq!(gso, Some(MSS as u16));
    }
}
