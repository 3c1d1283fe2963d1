//! The deterministic content `app=blkfill` writes, which a host regenerates to check the
//! disk (rig/blkfill-pattern.py implements the same): sector `s` (512 bytes) holds 64
//! little-endian words of an xorshift64 stream seeded with `seed ^ s * 0x9E3779B97F4A7C15`
//! (1 if that is 0), each word the state after one step (<<13, >>7, <<17).
pub fn fill_sector(seed: u64, sector: u64, out: &mut [u8; 512]) {
    let mut state = seed ^ sector.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if state == 0 {
        state = 1;
    }
    for word in out.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_words() {
        let mut s = [0u8; 512];
        fill_sector(0, 0, &mut s);
        // state 1 after one step: 1 ^ 1<<13 = 0x2001; ^ >>7 = 0x2001 ^ 0x40 = 0x2041;
        // ^ <<17 = 0x2041 ^ 0x40820000 = 0x40822041.
        assert_eq!(u64::from_le_bytes(s[..8].try_into().unwrap()), 0x4082_2041);
        let mut t = [0u8; 512];
        fill_sector(42, 7, &mut t);
        assert_ne!(s, t);
        let mut again = [0u8; 512];
        fill_sector(42, 7, &mut again);
        assert_eq!(t, again);
    }
}
