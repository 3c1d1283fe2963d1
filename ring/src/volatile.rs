//! Copies between our own memory and memory another domain may write at any moment (a
//! granted page it keeps mapped, a byte ring's data): volatile accesses, each byte read or
//! written once, and no Rust reference to the shared side.
//!
//! They go 8 bytes at a time where the shared address allows, eight words per loop
//! iteration: a page is 512 words, and bytes one by one would cost blkfront's 1 MiB requests
//! several times more; a branch per word cost the fuzz targets (whose every compare is
//! traced) more than half their time in zeroing receive buffers. Our side of a copy is taken
//! as arrays of words, not through pointers, so builds with debug assertions (the fuzz
//! targets', the tests') check no pointer arithmetic per word: that was a quarter of the
//! blkfront target's instructions.

const WORD: usize = core::mem::size_of::<u64>();
/// Words per unrolled block.
const BLOCK: usize = 8;

/// # Safety
/// `src` is valid for reads of `dst.len()` bytes and does not overlap `dst`.
pub unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let head = src.align_offset(WORD).min(dst.len());
    let words = (dst.len() - head) / WORD;
    let (first, rest) = dst.split_at_mut(head);
    let (middle, tail) = rest.split_at_mut(words * WORD);
    for (i, b) in first.iter_mut().enumerate() {
        // SAFETY: within the first `head` bytes of the caller's range.
        *b = unsafe { src.add(i).read_volatile() };
    }
    // SAFETY: `head` is within the range, and from there `src` is 8-byte aligned.
    let words_at = unsafe { src.add(head) }.cast::<u64>();
    let (blocks, rest) = middle.as_chunks_mut::<{ WORD * BLOCK }>();
    for (b, block) in blocks.iter_mut().enumerate() {
        for (k, out) in block.as_chunks_mut::<WORD>().0.iter_mut().enumerate() {
            // SAFETY: word `k` of block `b` of the aligned middle part of the caller's range.
            *out = unsafe { words_at.add(b * BLOCK + k).read_volatile() }.to_ne_bytes();
        }
    }
    let done = blocks.len() * BLOCK;
    for (i, out) in rest.as_chunks_mut::<WORD>().0.iter_mut().enumerate() {
        // SAFETY: a word of the aligned middle part, after the whole blocks.
        *out = unsafe { words_at.add(done + i).read_volatile() }.to_ne_bytes();
    }
    let tail_at = head + words * WORD;
    for (i, b) in tail.iter_mut().enumerate() {
        // SAFETY: within the last bytes of the caller's range.
        *b = unsafe { src.add(tail_at + i).read_volatile() };
    }
}

/// # Safety
/// `dst` is valid for writes of `src.len()` bytes and does not overlap `src`.
pub unsafe fn copy_in(src: &[u8], dst: *mut u8) {
    let head = dst.align_offset(WORD).min(src.len());
    let words = (src.len() - head) / WORD;
    let (first, rest) = src.split_at(head);
    let (middle, tail) = rest.split_at(words * WORD);
    for (i, &b) in first.iter().enumerate() {
        // SAFETY: within the first `head` bytes of the caller's range.
        unsafe { dst.add(i).write_volatile(b) };
    }
    // SAFETY: `head` is within the range, and from there `dst` is 8-byte aligned.
    let words_at = unsafe { dst.add(head) }.cast::<u64>();
    let (blocks, rest) = middle.as_chunks::<{ WORD * BLOCK }>();
    for (b, block) in blocks.iter().enumerate() {
        for (k, word) in block.as_chunks::<WORD>().0.iter().enumerate() {
            // SAFETY: word `k` of block `b` of the aligned middle part of the caller's range.
            unsafe { words_at.add(b * BLOCK + k).write_volatile(u64::from_ne_bytes(*word)) };
        }
    }
    let done = blocks.len() * BLOCK;
    for (i, word) in rest.as_chunks::<WORD>().0.iter().enumerate() {
        // SAFETY: a word of the aligned middle part, after the whole blocks.
        unsafe { words_at.add(done + i).write_volatile(u64::from_ne_bytes(*word)) };
    }
    let tail_at = head + words * WORD;
    for (i, &b) in tail.iter().enumerate() {
        // SAFETY: within the last bytes of the caller's range.
        unsafe { dst.add(tail_at + i).write_volatile(b) };
    }
}

/// # Safety
/// `dst` is valid for writes of `len` bytes.
pub unsafe fn fill(dst: *mut u8, len: usize, byte: u8) {
    let head = dst.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    let word = u64::from_ne_bytes([byte; WORD]);
    for i in 0..head {
        // SAFETY: within the first `head` bytes of the caller's range.
        unsafe { dst.add(i).write_volatile(byte) };
    }
    // SAFETY: `head` is within the range, and from there `dst` is 8-byte aligned.
    let words_at = unsafe { dst.add(head) }.cast::<u64>();
    let blocks = words / BLOCK;
    for b in 0..blocks {
        // SAFETY: the 8 words of block `b` of the aligned middle part of the caller's
        // range, written one by one (no loop, so no branch per word).
        unsafe {
            let at = words_at.add(b * BLOCK);
            at.write_volatile(word);
            at.add(1).write_volatile(word);
            at.add(2).write_volatile(word);
            at.add(3).write_volatile(word);
            at.add(4).write_volatile(word);
            at.add(5).write_volatile(word);
            at.add(6).write_volatile(word);
            at.add(7).write_volatile(word);
        }
    }
    for i in blocks * BLOCK..words {
        // SAFETY: word `i` of the aligned middle part of the caller's range.
        unsafe { words_at.add(i).write_volatile(word) };
    }
    for i in head + words * WORD..len {
        // SAFETY: within the caller's range.
        unsafe { dst.add(i).write_volatile(byte) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alignment of the shared side and every length around the word and block sizes:
    /// the head, the whole blocks, the words after them and the tail each get exercised.
    fn cases() -> impl Iterator<Item = (usize, usize)> {
        (0..WORD).flat_map(|at| (0..3 * WORD * BLOCK + WORD + 3).map(move |len| (at, len)))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn copies_match_a_plain_copy_at_any_alignment() {
        for (at, len) in cases() {
            let src = pattern(len, 7);
            let mut shared = vec![0xa5u8; len + 2 * WORD];
            // SAFETY: `at + len` is within `shared`, which `src` does not overlap.
            unsafe { copy_in(&src, shared.as_mut_ptr().add(at)) };
            assert_eq!(&shared[at..at + len], &src[..], "copy_in at {at}, {len} bytes");
            assert!(shared[..at].iter().chain(&shared[at + len..]).all(|&b| b == 0xa5));

            let mut back = vec![0u8; len];
            // SAFETY: as above, for reads.
            unsafe { copy_out(shared.as_ptr().add(at), &mut back) };
            assert_eq!(back, src, "copy_out at {at}, {len} bytes");
        }
    }

    #[test]
    fn fill_writes_exactly_its_range() {
        for (at, len) in cases() {
            let mut shared = vec![0xa5u8; len + 2 * WORD];
            // SAFETY: `at + len` is within `shared`.
            unsafe { fill(shared.as_mut_ptr().add(at), len, 0x3c) };
            assert!(shared[at..at + len].iter().all(|&b| b == 0x3c), "fill at {at}, {len}");
            assert!(shared[..at].iter().chain(&shared[at + len..]).all(|&b| b == 0xa5));
        }
    }
}
