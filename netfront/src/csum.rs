//! Completing the checksum of a received frame the backend marked `NETRXF_csum_blank`.
//!
//! We tell the backend `feature-no-csum-offload=1`, yet Linux's netback still hands us
//! frames whose TCP or UDP checksum was never computed: traffic from dom0 itself and from
//! other guests on the same host is `CHECKSUM_PARTIAL` in dom0's stack, and netback passes
//! that state on as `NETRXF_csum_blank` instead of computing the sum. Linux's netfront
//! accepts such frames as already verified; smoltcp checks every checksum and would drop
//! them. So the driver computes the checksum itself before handing the frame up.
//!
//! The field is recomputed from scratch (zeroed, then summed), not completed from the
//! partial pseudo-header sum Linux leaves in it, so the result does not depend on what the
//! backend put there.

/// Why a frame's checksum could not be filled in. The driver drops such a frame, as Linux's
/// netfront drops one whose checksum it cannot set up.
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
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Computes and stores the TCP or UDP checksum of the IPv4 packet in Ethernet `frame`.
/// Bytes after the IPv4 total length (Ethernet padding) are ignored.
pub fn fill_checksum(frame: &mut [u8]) -> Result<(), CsumError> {
    let (eth, ip) = frame.split_at_mut_checked(ETH_HEADER).ok_or(CsumError::NotIpv4)?;
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
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let segment = &mut ip[header_len..total_len];
    let field = match protocol {
        IPPROTO_TCP if segment.len() >= 20 => 16,
        IPPROTO_UDP if segment.len() >= 8 => 6,
        _ => return Err(CsumError::NotTcpUdp),
    };
    segment[field..field + 2].fill(0);
    // The pseudo-header: addresses, protocol, transport length (fits 16 bits: at most the
    // IPv4 total length).
    let mut sum = ones_sum(&src) + ones_sum(&dst);
    sum += u64::from(protocol) + segment.len() as u64;
    sum += ones_sum(segment);
    let mut checksum = !fold(sum);
    // UDP sends "no checksum" as 0, so a computed 0 goes out as its other form.
    if protocol == IPPROTO_UDP && checksum == 0 {
        checksum = 0xffff;
    }
    segment[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
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
    /// step, complemented. No UDP special case.
    fn raw_reference(
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        segment: &[u8],
        field: usize,
    ) -> u16 {
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
        !(sum as u16)
    }

    fn reference(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8], field: usize) -> u16 {
        match raw_reference(src, dst, protocol, segment, field) {
            0 if protocol == IPPROTO_UDP => 0xffff,
            c => c,
        }
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
    fn tcp_and_udp_match_the_reference() {
        let (src, dst) = ([10, 0, 0, 1], [192, 168, 7, 200]);
        for (protocol, field, min) in [(IPPROTO_TCP, 16, 20), (IPPROTO_UDP, 6, 8)] {
            for len in [min, min + 1, 33, 512, 1460, 1461, 8000] {
                for options in [0, 1, 10] {
                    for seed in [0, 7, 0xff] {
                        let seg = segment(len, seed);
                        let mut f = frame(protocol, options, &seg, 5);
                        // Whatever the backend left in the field does not matter.
                        let before = f.clone();
                        fill_checksum(&mut f).unwrap();
                        let want = reference(src, dst, protocol, &seg, field);
                        assert_eq!(stored(&f, options, field), want, "{protocol} {len} {options}");
                        let at = 14 + 20 + 4 * options + field;
                        assert_eq!(f[..at], before[..at]);
                        assert_eq!(f[at + 2..], before[at + 2..], "only the field changes");
                    }
                }
            }
        }
    }

    #[test]
    fn a_udp_sum_of_zero_is_sent_as_ffff() {
        let (src, dst) = ([10, 0, 0, 1], [192, 168, 7, 200]);
        let mut seg = segment(12, 3);
        // Two payload bytes chosen so that the checksum computes to 0.
        let v = (0..=u16::MAX)
            .find(|v| {
                seg[10..12].copy_from_slice(&v.to_be_bytes());
                raw_reference(src, dst, IPPROTO_UDP, &seg, 6) == 0
            })
            .unwrap();
        seg[10..12].copy_from_slice(&v.to_be_bytes());
        let mut f = frame(IPPROTO_UDP, 0, &seg, 0);
        fill_checksum(&mut f).unwrap();
        assert_eq!(stored(&f, 0, 6), 0xffff);
    }

    #[test]
    fn frames_it_cannot_fill_are_refused_untouched() {
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
            assert_eq!(fill_checksum(&mut g), Err(want), "case {i}");
            assert_eq!(g, f, "case {i} changed the frame");
        }
    }
}
