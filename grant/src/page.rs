//! A page a split driver (blkfront, netfront) owns and grants to its backend, and the only
//! way its bytes are touched: volatile copies in and out, never a Rust reference. A backend
//! that keeps a grant mapped (persistent grants, a receive buffer it still holds) may write
//! the page at any moment, so a `&[u8]` over it would be a data race in Rust's model and a
//! double fetch in practice: each byte is read once, into memory the other side cannot see.

use core::ptr::NonNull;

use ring::volatile;

/// Bytes in a page.
pub const PAGE_SIZE: usize = ring::shared::PAGE_SIZE;

/// One 4 KiB page of guest memory a driver owns while it holds the value: a bounce buffer
/// for request data, a receive buffer, a transmit page.
///
/// A driver grants a page only after filling it completely (the data, zeros elsewhere), so
/// the backend never sees anything else of ours.
///
/// Dropping a `Page` must **not** return its memory to the allocator: a driver drops a page
/// only when it could not revoke the backend's access to it, and that memory must then
/// never be reused. Pages a driver is done with go back through its guest's `free_page`.
///
/// # Safety
/// [`Page::base`] points to [`PAGE_SIZE`] bytes, 8-byte aligned, readable and writable for
/// as long as the value lives, that this domain reaches through no Rust reference (only
/// through the methods here) and that no other value of this domain uses.
pub unsafe trait Page {
    /// The page's first byte, for the accessors below.
    fn base(&self) -> NonNull<u8>;

    /// The frame number the backend is granted: the machine frame under PV (p2m lookup),
    /// the guest frame otherwise.
    fn frame(&self) -> u64;

    /// Copies `dst.len()` bytes out of the page from `offset`, each read once.
    ///
    /// # Panics
    /// If the range leaves the page: the driver's arithmetic, not the backend's data.
    fn read(&self, offset: usize, dst: &mut [u8]) {
        let src = span(self.base(), offset, dst.len());
        // SAFETY: the trait's contract makes the page's bytes valid for reads; `span`
        // checked the range lies inside it; `dst` is our own memory, distinct from the page.
        unsafe { volatile::copy_out(src, dst) }
    }

    /// Copies `src` into the page at `offset`.
    ///
    /// # Panics
    /// If the range leaves the page.
    fn write(&mut self, offset: usize, src: &[u8]) {
        let dst = span(self.base(), offset, src.len());
        // SAFETY: as in `read`, for writes; `&mut self` makes this domain's access exclusive.
        unsafe { volatile::copy_in(src, dst) }
    }

    /// Sets every byte from `offset` to the end of the page to `byte`.
    ///
    /// # Panics
    /// If `offset` is beyond the page.
    fn fill_from(&mut self, offset: usize, byte: u8) {
        let dst = span(self.base(), offset, PAGE_SIZE - offset.min(PAGE_SIZE));
        // SAFETY: as in `write`.
        unsafe { volatile::fill(dst, PAGE_SIZE - offset, byte) }
    }
}

/// The address of `len` bytes at `offset` in the page at `base`, once they are known to fit.
fn span(base: NonNull<u8>, offset: usize, len: usize) -> *mut u8 {
    assert!(
        offset.checked_add(len).is_some_and(|end| end <= PAGE_SIZE),
        "page access of {len} bytes at {offset}"
    );
    // In bounds: checked just above.
    base.as_ptr().wrapping_add(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Mem([u8; PAGE_SIZE]);

    struct Boxed(Box<Mem>);

    // SAFETY: the box is the page's only owner and nothing borrows its bytes while the test
    // reaches them through the accessors.
    unsafe impl Page for Boxed {
        fn base(&self) -> NonNull<u8> {
            NonNull::from(&self.0 .0).cast()
        }
        fn frame(&self) -> u64 {
            0
        }
    }

    fn page() -> Boxed {
        Boxed(Box::new(Mem([0; PAGE_SIZE])))
    }

    #[test]
    fn copies_at_every_alignment_round_trip() {
        let mut p = page();
        let data: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 31 + i / 7) as u8).collect();
        for (offset, len) in
            [(0, PAGE_SIZE), (1, 7), (3, 20), (8, 16), (4090, 6), (5, 0), (5, 150), (64, 72)]
        {
            p.fill_from(0, 0xee);
            p.write(offset, &data[..len]);
            let mut back = vec![0u8; PAGE_SIZE];
            p.read(0, &mut back);
            assert_eq!(&back[offset..offset + len], &data[..len], "at {offset}+{len}");
            assert!(back[..offset].iter().all(|&b| b == 0xee), "before {offset}");
            assert!(back[offset + len..].iter().all(|&b| b == 0xee), "after {offset}+{len}");
            let mut part = vec![0u8; len];
            p.read(offset, &mut part);
            assert_eq!(part, &data[..len]);
        }
    }

    #[test]
    fn fill_from_an_offset_leaves_what_is_before() {
        let mut p = page();
        p.write(0, &[7; 13]);
        p.fill_from(13, 0);
        p.fill_from(PAGE_SIZE, 9);
        let mut back = vec![1u8; PAGE_SIZE];
        p.read(0, &mut back);
        assert!(back[..13].iter().all(|&b| b == 7) && back[13..].iter().all(|&b| b == 0));
    }

    #[test]
    #[should_panic(expected = "page access")]
    fn a_range_beyond_the_page_panics() {
        page().read(4000, &mut [0u8; 200]);
    }
}
