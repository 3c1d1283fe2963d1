//! The few bytes of protocols the network services read themselves (smoltcp does the rest):
//! ARP packets, to see a neighbour make itself known, and HTTP request heads; and what a
//! DHCP lease must be for this stack to use it.

use core::net::Ipv4Addr;

/// Why a DHCP lease cannot be used: the server answered with nonsense (or with something
/// this stack cannot route, which the guest treats the same way: it says so and does not
/// configure itself from it).
pub fn check_lease(
    addr: Ipv4Addr,
    prefix_len: u8,
    router: Option<Ipv4Addr>,
) -> Result<(), &'static str> {
    let unicast = |a: Ipv4Addr| {
        !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
            && a.octets()[0] < 240
    };
    if !(1..=32).contains(&prefix_len) {
        return Err("a prefix length outside 1-32");
    }
    if !unicast(addr) {
        return Err("an address that is not a unicast address");
    }
    let mask = u32::MAX << (32 - u32::from(prefix_len));
    let host = u32::from(addr) & !mask;
    if prefix_len <= 30 && (host == 0 || host == !mask) {
        return Err("the subnet's network or broadcast address");
    }
    let Some(router) = router else { return Ok(()) };
    if !unicast(router) || router == addr {
        return Err("a router that is not another unicast address");
    }
    if (u32::from(router) ^ u32::from(addr)) & mask != 0 || prefix_len == 32 {
        return Err("a router outside the leased subnet");
    }
    Ok(())
}

/// The sender of an Ethernet ARP request or reply for IPv4: its MAC and IPv4 address,
/// which is what a neighbour cache learns from it.
pub fn arp_sender(frame: &[u8]) -> Option<([u8; 6], [u8; 4])> {
    const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
    // htype Ethernet, ptype IPv4, hlen 6, plen 4.
    const HEADER: [u8; 6] = [0, 1, 0x08, 0x00, 6, 4];
    const REQUEST: [u8; 2] = [0, 1];
    const REPLY: [u8; 2] = [0, 2];
    let arp = frame.get(14..42)?;
    if frame[12..14] != ETHERTYPE_ARP || arp[..6] != HEADER {
        return None;
    }
    if arp[6..8] != REQUEST && arp[6..8] != REPLY {
        return None;
    }
    Some((arp[8..14].try_into().ok()?, arp[14..18].try_into().ok()?))
}

/// A gratuitous ARP request (RFC 5227's announcement: sender and target are both `ip`),
/// broadcast by an interface that `mac` now reaches from elsewhere, as after a migration:
/// bridges learn the port, neighbours update their caches.
pub fn gratuitous_arp(mac: [u8; 6], ip: [u8; 4]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    // Target hardware address unknown (zero); target protocol address ours.
    f[38..42].copy_from_slice(&ip);
    f
}

/// What a client sent so far, as the start of an HTTP request.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpRequest<'a> {
    /// No end of the head (an empty line) yet.
    Incomplete,
    /// `GET <path>` (or `HEAD <path>`, `head` set): the head is complete.
    Get { path: &'a str, head: bool },
    /// Not a request line we serve: another method, no HTTP version, not text.
    Bad,
}

/// The largest request head we read; anything longer is [`HttpRequest::Bad`].
pub const MAX_REQUEST_HEAD: usize = 2048;

pub fn parse_http_request(buf: &[u8]) -> HttpRequest<'_> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST_HEAD {
            HttpRequest::Bad
        } else {
            HttpRequest::Incomplete
        };
    };
    let Ok(head) = core::str::from_utf8(&buf[..end]) else { return HttpRequest::Bad };
    let line = head.split("\r\n").next().unwrap_or("");
    let mut words = line.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(method @ ("GET" | "HEAD")), Some(path), Some(v), None)
            if v.starts_with("HTTP/1.") =>
        {
            HttpRequest::Get { path, head: method == "HEAD" }
        }
        _ => HttpRequest::Bad,
    }
}

/// The largest transfer the benchmark source (port 5002) sends on one request: a client
/// cannot keep it busy for longer than a benchmark needs.
pub const MAX_SOURCE_BYTES: u64 = 1 << 30;
/// The longest request line the source reads: 20 digits and the newline, with room to spare.
pub const MAX_SOURCE_REQUEST: usize = 32;

/// What a client of the benchmark source asked for so far: `<decimal byte count>\n`
/// (`rig/netbench.c` speaks the same protocol, as client and as the Linux peer's far end).
#[derive(Debug, PartialEq, Eq)]
pub enum SourceRequest {
    /// No newline yet.
    Incomplete,
    /// Send this many bytes, then close.
    Bytes(u64),
    /// Not a count, zero, above [`MAX_SOURCE_BYTES`], or no newline within
    /// [`MAX_SOURCE_REQUEST`] bytes: close without sending.
    Bad(&'static str),
}

pub fn parse_source_request(buf: &[u8]) -> SourceRequest {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_SOURCE_REQUEST {
            SourceRequest::Bad("no newline within 32 bytes")
        } else {
            SourceRequest::Incomplete
        };
    };
    let digits = &buf[..end];
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return SourceRequest::Bad("not a decimal count");
    }
    let n =
        digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')));
    match n {
        0 => SourceRequest::Bad("zero bytes"),
        n if n > MAX_SOURCE_BYTES => SourceRequest::Bad("more than 1 GiB"),
        n => SourceRequest::Bytes(n),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub struct Mac(pub [u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_us_as_sender_and_target() {
        let mac = [0, 0x16, 0x3e, 1, 2, 3];
        let f = gratuitous_arp(mac, [10, 0, 0, 7]);
        assert_eq!(arp_sender(&f), Some((mac, [10, 0, 0, 7])));
        assert_eq!(f[..6], [0xff; 6], "broadcast");
        assert_eq!(f[32..38], [0; 6]);
        assert_eq!(f[38..42], [10, 0, 0, 7]);
    }

    #[test]
    fn leases_that_make_sense_are_taken() {
        let ip = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
        assert_eq!(check_lease(ip(169, 254, 0, 10), 16, Some(ip(169, 254, 0, 1))), Ok(()));
        assert_eq!(check_lease(ip(10, 0, 0, 2), 24, None), Ok(()));
        assert_eq!(check_lease(ip(10, 0, 0, 2), 32, None), Ok(()));
        assert_eq!(check_lease(ip(10, 0, 0, 1), 31, Some(ip(10, 0, 0, 0))), Ok(()));
    }

    #[test]
    fn nonsense_leases_are_refused() {
        let ip = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
        let gw = Some(ip(10, 0, 0, 1));
        for (addr, len, router) in [
            (ip(10, 0, 0, 2), 0, gw),
            (ip(10, 0, 0, 2), 33, gw),
            (ip(0, 0, 0, 0), 24, gw),
            (ip(255, 255, 255, 255), 24, gw),
            (ip(224, 0, 0, 5), 24, gw),
            (ip(127, 0, 0, 2), 8, None),
            (ip(250, 0, 0, 2), 8, None),
            (ip(10, 0, 0, 0), 24, gw),
            (ip(10, 0, 0, 255), 24, gw),
            (ip(10, 0, 0, 2), 24, Some(ip(10, 0, 1, 1))),
            (ip(10, 0, 0, 2), 24, Some(ip(10, 0, 0, 2))),
            (ip(10, 0, 0, 2), 24, Some(ip(0, 0, 0, 0))),
            (ip(10, 0, 0, 2), 32, gw),
        ] {
            assert!(check_lease(addr, len, router).is_err(), "{addr}/{len} via {router:?}");
        }
    }

    fn arp(op: u8, sender_mac: [u8; 6], sender_ip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x00, 0x16, 0x3e, 1, 2, 3]);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, op]);
        f.extend(sender_mac);
        f.extend(sender_ip);
        f.extend([0; 6]);
        f.extend([169, 254, 0, 10]);
        f
    }

    #[test]
    fn arp_senders_are_recognised() {
        let mac = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
        let gw = [169, 254, 0, 1];
        assert_eq!(arp_sender(&arp(2, mac, gw)), Some((mac, gw)), "a reply");
        assert_eq!(arp_sender(&arp(1, mac, gw)), Some((mac, gw)), "a request");
        assert_eq!(arp_sender(&arp(3, mac, gw)), None, "a RARP request");
        let mut ip = arp(2, mac, gw);
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(arp_sender(&ip), None, "an IPv4 frame");
        assert_eq!(arp_sender(&arp(2, mac, gw)[..41]), None, "truncated");
        assert_eq!(arp_sender(&[]), None);
    }

    #[test]
    fn http_request_heads() {
        use HttpRequest::*;
        assert_eq!(
            parse_http_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Get { path: "/", head: false }
        );
        assert_eq!(parse_http_request(b"HEAD /x HTTP/1.0\r\n\r\n"), Get { path: "/x", head: true });
        assert_eq!(parse_http_request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Incomplete);
        assert_eq!(parse_http_request(b""), Incomplete);
        assert_eq!(parse_http_request(b"POST / HTTP/1.1\r\n\r\n"), Bad);
        assert_eq!(parse_http_request(b"GET /\r\n\r\n"), Bad);
        assert_eq!(parse_http_request(b"GET / HTTP/1.1 x\r\n\r\n"), Bad);
        assert_eq!(parse_http_request(b"GET \xff HTTP/1.1\r\n\r\n"), Bad);
        assert_eq!(parse_http_request(&[b'a'; MAX_REQUEST_HEAD]), Bad);
    }

    #[test]
    fn macs_print_as_usual() {
        assert_eq!(Mac([0, 0x16, 0x3e, 0xa, 0xbc, 0xff]).to_string(), "00:16:3e:0a:bc:ff");
    }

    #[test]
    fn source_requests_are_counts_up_to_a_gib() {
        use SourceRequest::*;
        assert_eq!(parse_source_request(b""), Incomplete);
        assert_eq!(parse_source_request(b"3355"), Incomplete);
        assert_eq!(parse_source_request(b"33554432\n"), Bytes(33554432));
        assert_eq!(parse_source_request(b"1\nextra"), Bytes(1));
        assert_eq!(parse_source_request(b"1073741824\n"), Bytes(1 << 30));
        for bad in [
            &b"1073741825\n"[..],
            b"0\n",
            b"\n",
            b"-5\n",
            b"12a\n",
            b" 12\n",
            b"99999999999999999999999\n",
            b"18446744073709551616\n",
            &[b'1'; 32],
        ] {
            assert!(matches!(parse_source_request(bad), Bad(_)), "{bad:?}");
        }
    }
}
