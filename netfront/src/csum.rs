//! The TCP and UDP checksums of IPv4 frames, both ways.
//!
//! - Transmit: smoltcp leaves the field zero ([`Netfront`](crate::Netfront) asks it to) and
//!   [`seed_checksum`] writes the pseudo-header's sum there, as Linux's `CHECKSUM_PARTIAL`
//!   leaves it; the frame goes out `NETTXF_csum_blank`, and the backend (or the NIC, or dom0's
//!   stack, which trusts it) completes it over the segment.
//! - Receive: a frame the backend marked `NETRXF_csum_blank` (dom0's own and other guests'
//!   traffic, still `CHECKSUM_PARTIAL` in dom0) or `NETRXF_data_validated` (checked by dom0
//!   or its NIC) is taken as it is, as Linux's netfront takes it: the backend writes every
//!   byte of the frame anyway, so its word on the checksum is no weaker than its data. Any
//!   other frame is checked here ([`verify_checksum`]), since smoltcp is told not to check
//!   TCP's and UDP's.

/// Why a frame's checksum could not be seeded or checked: the frame is not one the offload
/// applies to, and goes its way untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsumError {
    /// Not IPv4 over Ethernet II: we do not negotiate IPv6 checksum offload.
    NotIpv4,
    /// The IPv4 header or its lengths do not fit the frame.
    Malformed,
    /// An IPv4 fragment: its transport checksum covers data in other fragments.
    Fragment,
    /// Neither TCP nor UDP (the only protocols checksum offload applies to), or a
    /// transport header cut short.
    NotTcpUdp,
}

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Where a frame's transport segment and checksum field are.
struct Transport {
    protocol: u8,
    /// The segment, from the transport header to the IPv4 total length (Ethernet padding
    /// after it excluded), as a range of the frame.
    segment: core::ops::Range<usize>,
    /// The checksum field's offset in the segment.
    field: usize,
    /// The pseudo-header's sum: addresses, protocol, segment length.
    pseudo: u64,
}

fn transport(frame: &[u8]) -> Result<Transport, CsumError> {
    let (eth, ip) = frame.split_at_checked(ETH_HEADER).ok_or(CsumError::NotIpv4)?;
    if be16(&eth[12..14]) != ETHERTYPE_IPV4 || ip.first().is_none_or(|b| b >> 4 != 4) {
        return Err(CsumError::NotIpv4);
    }
    let header_len = usize::from(ip[0] & 0xf) * 4;
    if header_len < 20 || ip.len() < header_len {
        return Err(CsumError::Malformed);
    }
    let total_len = usize::from(be16(&ip[2..4]));
    if total_len < header_len || total_len > ip.len() {
        return Err(CsumError::Malformed);
    }
    // More-fragments flag or a non-zero offset.
    if be16(&ip[6..8]) & 0x3fff != 0 {
        return Err(CsumError::Fragment);
    }
    let protocol = ip[9];
    let len = total_len - header_len;
    let field = match protocol {
        IPPROTO_TCP if len >= 20 => 16,
        IPPROTO_UDP if len >= 8 => 6,
        _ => return Err(CsumError::NotTcpUdp),
    };
    // The transport length fits 16 bits: at most the IPv4 total length.
    let pseudo = ones_sum(&ip[12..20]) + u64::from(protocol) + len as u64;
    let start = ETH_HEADER + header_len;
    Ok(Transport { protocol, segment: start..start + len, field, pseudo })
}

/// Writes the pseudo-header's sum (folded, not complemented) into the TCP or UDP checksum
/// field of the IPv4 packet in Ethernet `frame`, for the backend to complete: the sum over
/// the segment from its transport header on, field included, is then the checksum's.
pub fn seed_checksum(frame: &mut [u8]) -> Result<(), CsumError> {
    let t = transport(frame)?;
    let at = t.segment.start + t.field;
    frame[at..at + 2].copy_from_slice(&fold(t.pseudo).to_be_bytes());
    Ok(())
}

/// Whether the TCP or UDP checksum of the IPv4 packet in Ethernet `frame` is right (a UDP
/// checksum of zero says the sender computed none). Bytes after the IPv4 total length
/// (Ethernet padding) are ignored.
pub fn verify_checksum(frame: &[u8]) -> Result<bool, CsumError> {
    let t = transport(frame)?;
    let segment = &frame[t.segment.clone()];
    if t.protocol == IPPROTO_UDP && segment[6..8] == [0, 0] {
        return Ok(true);
    }
    Ok(fold(t.pseudo + ones_sum(segment)) == 0xffff)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The sum of `data` as big-endian 16-bit words, an odd last byte padded with zero,
/// unfolded (a 64-bit sum of 16-bit words cannot overflow for any frame).
fn ones_sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    let mut sum: u64 = words.by_ref().map(|w| u64::from(be16(w))).sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum into 16 bits with end-around carry.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 the long way: the pseudo-header and segment (checksum field zeroed) laid
    /// out in one buffer, summed a 16-bit word at a time with the carry folded back each
    /// step, complemented; a UDP 0 sent as 0xffff.
    fn reference(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8], field: usize) -> u16 {
        let mut buf = Vec::new();
        buf.extend_from_slice(&src);
        buf.extend_from_slice(&dst);
        buf.extend_from_slice(&[0, protocol]);
        buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        let mut seg = segment.to_vec();
        seg[field..field + 2].fill(0);
        buf.extend_from_slice(&seg);
        if buf.len() % 2 == 1 {
            buf.push(0);
        }
        let mut sum: u32 = 0;
        for w in buf.chunks(2) {
            sum += u32::from(w[0]) << 8 | u32::from(w[1]);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        match !(sum as u16) {
            0 if protocol == IPPROTO_UDP => 0xffff,
            c => c,
        }
    }

    /// What the backend does with a `csum_blank` frame: sums the segment from its transport
    /// header, seed in the field, and stores the complement.
    fn complete(f: &mut [u8], options: usize, field: usize) {
        let start = 14 + 20 + 4 * options;
        let total = usize::from(be16(&f[16..18]));
        let sum = !fold(ones_sum(&f[start..14 + total]));
        f[start + field..start + field + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// An Ethernet frame holding IPv4 with `options` words of options, then `segment`,
    /// then `pad` bytes of Ethernet padding.
    fn frame(protocol: u8, options: usize, segment: &[u8], pad: usize) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let header_len = 20 + 4 * options;
        let total = (header_len + segment.len()) as u16;
        f.push(0x40 | (header_len / 4) as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, protocol, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 192, 168, 7, 200]);
        f.extend(std::iter::repeat_n(1, 4 * options));
        f.extend_from_slice(segment);
        f.extend(std::iter::repeat_n(0xaa, pad));
        f
    }

    fn segment(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn stored(f: &[u8], options: usize, field: usize) -> u16 {
        let at = 14 + 20 + 4 * options + field;
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    #[test]
    fn a_seeded_checksum_completes_to_the_reference_and_verifies() {
        let (src, dst) = ([10, 0, 0, 1], [192, 168, 7, 200]);
        for (protocol, field, min) in [(IPPROTO_TCP, 16, 20), (IPPROTO_UDP, 6, 8)] {
            for len in [min, min + 1, 33, 512, 1460, 1461, 8000] {
                for options in [0, 1, 10] {
                    for seed in [0, 7, 0xff] {
                        let seg = segment(len, seed);
                        let mut f = frame(protocol, options, &seg, 5);
                        let at = 14 + 20 + 4 * options + field;
                        f[at..at + 2].fill(0);
                        let before = f.clone();
                        seed_checksum(&mut f).unwrap();
                        assert_eq!(f[..at], before[..at]);
                        assert_eq!(f[at + 2..], before[at + 2..], "only the field changes");
                        complete(&mut f, options, field);
                        let want = reference(src, dst, protocol, &seg, field);
                        let got = stored(&f, options, field);
                        // A completion to 0 is the same sum as 0xffff (UDP sends that).
                        assert!(got == want || (got, want) == (0, 0xffff), "{protocol} {len}");
                        assert_eq!(verify_checksum(&f), Ok(true), "{protocol} {len} {options}");
                        // Any one bit of the segment flipped is caught.
                        let mut bad = f.clone();
                        bad[at - field + len / 2] ^= 0x10;
                        assert_eq!(verify_checksum(&bad), Ok(false), "{protocol} {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_udp_checksum_of_zero_is_none_and_verifies() {
        let mut f = frame(IPPROTO_UDP, 0, &segment(12, 3), 0);
        f[14 + 20 + 6..14 + 20 + 8].fill(0);
        assert_eq!(verify_checksum(&f), Ok(true));
    }

    #[test]
    fn frames_it_cannot_seed_are_refused_untouched() {
        let seg = segment(40, 1);
        let cases: Vec<(Vec<u8>, CsumError)> = vec![
            (vec![0; 10], CsumError::NotIpv4),
            (
                {
                    let mut f = frame(IPPROTO_TCP, 0, &seg, 0);
                    f[12..14].copy_from_slice(&[0x86, 0xdd]);
                    f
                },
                CsumError::NotIpv4,
            ),
            (
                {
                    let mut f = frame(IPPROTO_TCP, 0, &seg, 0);
                    f[14] = 0x65;
                    f
                },
                CsumError::NotIpv4,
            ),
            (
                {
                    let mut f = frame(IPPROTO_TCP, 0, &seg, 0);
                    f[14] = 0x44;
                    f
                },
                CsumError::Malformed,
            ),
            (
                {
                    let mut f = frame(IPPROTO_TCP, 0, &seg, 0);
                    f[16..18].copy_from_slice(&2000u16.to_be_bytes());
                    f
                },
                CsumError::Malformed,
            ),
            (frame(IPPROTO_TCP, 0, &seg, 0)[..30].to_vec(), CsumError::Malformed),
            (
                {
                    let mut f = frame(IPPROTO_UDP, 0, &seg, 0);
                    f[20] = 0x20; // more fragments
                    f
                },
                CsumError::Fragment,
            ),
            (
                {
                    let mut f = frame(IPPROTO_UDP, 0, &seg, 0);
                    f[20..22].copy_from_slice(&[0x40, 0x08]); // DF, offset 64
                    f
                },
                CsumError::Fragment,
            ),
            (frame(1, 0, &seg, 0), CsumError::NotTcpUdp),
            (frame(IPPROTO_TCP, 0, &seg[..19], 0), CsumError::NotTcpUdp),
            (frame(IPPROTO_UDP, 0, &seg[..7], 0), CsumError::NotTcpUdp),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            let mut g = f.clone();
            assert_eq!(seed_checksum(&mut g), Err(want), "case {i}");
            assert_eq!(g, f, "case {i} changed the frame");
            assert_eq!(verify_checksum(&f), Err(want), "case {i}");
        }
    }
}
