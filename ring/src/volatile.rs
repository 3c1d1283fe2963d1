//! Copies between our own memory and memory another domain may write at any moment (a
//! granted page it keeps mapped, a byte ring's data): volatile accesses, each byte read or
//! written once, and no Rust reference to the shared side.
//!
//! They go 8 bytes at a time where the shared address allows, eight words per loop
//! iteration: a page is 512 words, and bytes one by one would cost blkfront's 1 MiB requests
//! several times more; a branch per word cost the fuzz targets (whose every compare is
//! traced) more than half their time in zeroing receive buffers.

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
    let blocks = middle.chunks_exact_mut(WORD * BLOCK);
    let done = blocks.len() * BLOCK;
    for (b, block) in blocks.enumerate() {
        let out = block.as_mut_ptr();
        for k in 0..BLOCK {
            // SAFETY: word `k` of block `b` of the aligned middle part of the caller's
            // range; `out` has room for its 8 bytes (the block is WORD * BLOCK long).
            unsafe {
                let w = words_at.add(b * BLOCK + k).read_volatile();
                out.add(k * WORD).cast::<u64>().write_unaligned(w);
            }
        }
    }
    let rest = &mut middle[done * WORD..];
    for (i, chunk) in rest.chunks_exact_mut(WORD).enumerate() {
        // SAFETY: a word of the aligned middle part, after the whole blocks.
        chunk.copy_from_slice(&unsafe { words_at.add(done + i).read_volatile() }.to_ne_bytes());
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
    let blocks = middle.chunks_exact(WORD * BLOCK);
    let done = blocks.len() * BLOCK;
    for (b, block) in blocks.enumerate() {
        let from = block.as_ptr();
        for k in 0..BLOCK {
            // SAFETY: `from` holds the block's WORD * BLOCK bytes; word `k` of block `b`
            // of the aligned middle part of the caller's range.
            unsafe {
                let w = from.add(k * WORD).cast::<u64>().read_unaligned();
                words_at.add(b * BLOCK + k).write_volatile(w);
            }
        }
    }
    for (i, chunk) in middle[done * WORD..].chunks_exact(WORD).enumerate() {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks_exact gives 8 bytes"));
        // SAFETY: a word of the aligned middle part, after the whole blocks.
        unsafe { words_at.add(done + i).write_volatile(word) };
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
