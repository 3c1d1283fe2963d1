//! What the guest's own network code reads off the wire (smoltcp parses the rest): ARP
//! frames from the bridge, HTTP request heads and benchmark requests from TCP peers, and
//! the lease a DHCP server hands out. The first byte picks the parser, the rest is its input.

use core::net::Ipv4Addr;
use guest::net::wire::{
    arp_sender, check_lease, parse_http_request, parse_source_request, HttpRequest, SourceRequest,
    MAX_REQUEST_HEAD, MAX_SOURCE_BYTES, MAX_SOURCE_REQUEST,
};

pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Some((mac, ip)) = arp_sender(rest) {
                // What it returns was in the frame, at the ARP sender's place.
                assert!(rest.windows(6).any(|w| w == mac) && rest.windows(4).any(|w| w == ip));
            }
        }
        1 => match parse_http_request(rest) {
            HttpRequest::Get { path, .. } => assert!(path.len() < rest.len()),
            HttpRequest::Incomplete => assert!(rest.len() < MAX_REQUEST_HEAD),
            HttpRequest::Bad => {}
        },
        2 => match parse_source_request(rest) {
            SourceRequest::Bytes(n) => assert!((1..=MAX_SOURCE_BYTES).contains(&n)),
            SourceRequest::Incomplete => assert!(rest.len() < MAX_SOURCE_REQUEST),
            SourceRequest::Bad(_) => {}
        },
        _ => {
            let b = |i: usize| rest.get(i).copied().unwrap_or(0);
            let addr = Ipv4Addr::new(b(0), b(1), b(2), b(3));
            let router = (b(4) & 1 == 1).then(|| Ipv4Addr::new(b(5), b(6), b(7), b(8)));
            if check_lease(addr, b(9), router).is_ok() {
                assert!((1..=32).contains(&b(9)) && Some(addr) != router);
            }
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut arp = vec![0u8];
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&[0x00, 0x16, 0x3e, 1, 2, 3, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0x00, 0x16, 0x3e, 1, 2, 3, 169, 254, 0, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[169, 254, 0, 10]);
    [
        arp,
        b"\x01GET / HTTP/1.0\r\nHost: x\r\n\r\n".to_vec(),
        b"\x01HEAD /status HTTP/1.1\r\n\r\n".to_vec(),
        b"\x0233554432\n".to_vec(),
        b"\x021073741825\n".to_vec(),
        vec![3, 169, 254, 0, 10, 1, 169, 254, 0, 1, 16],
        vec![3, 10, 0, 0, 255, 0, 0, 0, 0, 0, 24],
    ]
    .to_vec()
}
