//! Shared memory for the host tests' fakes of the other domain (feature `test-utils`): what
//! a fake xenstored, blkback or netback reads and writes where the real one would map our
//! pages. The fakes of every crate build on this one, so that none of them needs `unsafe`.
//!
//! Everything runs on one thread: a fake touches the memory only while the code under test
//! is not running (it plays the other domain between the driver's calls), which is what
//! makes the plain copies here sound.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};
use core::sync::atomic::AtomicU32;

use crate::byte::{Consumer, Layout as ByteLayout, Producer};
use crate::shared::{ring_size, slot_size, FrontRing, Pod, HEADER_SIZE, PAGE_SIZE};

/// Zeroed, page-aligned pages that both the code under test and a fake of the other side
/// reach: a guest page, a ring's run of pages, the xenstore page. Freed when the last
/// [`Rc`] to it goes.
pub struct SharedMem {
    base: NonNull<u8>,
    pages: usize,
}

fn layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("page layout")
}

/// Single pages given back, for the next ones: the fuzz targets allocate and free hundreds
/// of pages per input (a receive ring's buffers), and the allocator's own zeroing and
/// bookkeeping of page-aligned blocks was most of their time.
const RECYCLED_MAX: usize = 4096;

std::thread_local! {
    static RECYCLED: core::cell::RefCell<Vec<NonNull<u8>>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

impl SharedMem {
    /// `pages` zeroed pages.
    pub fn new(pages: usize) -> Rc<Self> {
        Self::filled(pages, 0)
    }

    /// `pages` pages holding `byte` everywhere (a guest page as a previous user left it).
    pub fn filled(pages: usize, byte: u8) -> Rc<Self> {
        assert!(pages > 0, "at least one page");
        let recycled = if pages == 1 { RECYCLED.with(|r| r.borrow_mut().pop()) } else { None };
        let base = match recycled {
            Some(base) => {
                // SAFETY: a live page-sized allocation of ours, no longer used by anyone
                // (its `SharedMem` was dropped).
                unsafe { ptr::write_bytes(base.as_ptr(), byte, PAGE_SIZE) };
                base
            }
            None => {
                // SAFETY: the layout has a non-zero size (checked above).
                let p = unsafe { alloc_zeroed(layout(pages)) };
                let base = NonNull::new(p).expect("out of memory");
                if byte != 0 {
                    // SAFETY: the allocation just made, `pages` pages long.
                    unsafe { ptr::write_bytes(base.as_ptr(), byte, pages * PAGE_SIZE) };
                }
                base
            }
        };
        Rc::new(SharedMem { base, pages })
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Where the pages start, for a fake's `grant::Page` implementation.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The frame number the fake backend sees of the first page: its address, shifted.
    pub fn frame(&self) -> u64 {
        self.base.as_ptr() as u64 >> 12
    }

    /// Every page's frame, in order.
    pub fn frames(&self) -> impl Iterator<Item = u64> {
        let first = self.frame();
        (0..self.pages as u64).map(move |i| first + i)
    }

    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len()), "read out of bounds");
        let mut v = vec![0; len];
        // SAFETY: in bounds of the live pages (checked above); single-threaded, so nothing
        // writes them during the copy (module docs).
        unsafe { ptr::copy_nonoverlapping(self.base.as_ptr().add(off), v.as_mut_ptr(), len) };
        v
    }

    /// `f` of bytes `off..off + len` in place, without the copy `read` makes: the fakes
    /// check whole pages for what they should not hold on every request, and copying each
    /// page out first was a large part of the fuzz targets' time. `f` is the fake's own code,
    /// which runs while the code under test does not (module docs).
    pub fn view<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len()), "view out of bounds");
        // SAFETY: in bounds of the live pages (checked above); nothing writes them while
        // `f` runs: one thread, and the code under test does not run inside the fake.
        f(unsafe { core::slice::from_raw_parts(self.base.as_ptr().add(off), len) })
    }

    pub fn write(&self, off: usize, data: &[u8]) {
        assert!(
            off.checked_add(data.len()).is_some_and(|end| end <= self.len()),
            "write out of bounds"
        );
        // SAFETY: as in `read`.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(off), data.len()) };
    }

    /// A ring index (or any aligned `u32`) in the pages, accessed atomically as the ring
    /// code under test accesses it.
    pub fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len(), "index out of bounds");
        // SAFETY: aligned and inside the live pages (checked above); every access to ring
        // indices, here and in the ring code, is atomic.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Copies out the `T` at `off`, once, as `RING_COPY_REQUEST` does.
    pub fn get<T: Pod>(&self, off: usize) -> T {
        self.check::<T>(off);
        // SAFETY: in bounds and aligned (checked); `T` is Pod, so any bytes are a value.
        unsafe { ptr::read_volatile(self.base.as_ptr().add(off).cast::<T>()) }
    }

    pub fn put<T: Pod>(&self, off: usize, value: T) {
        self.check::<T>(off);
        // SAFETY: as in `get`; `T` has no padding, so no uninitialised byte is written.
        unsafe { ptr::write_volatile(self.base.as_ptr().add(off).cast::<T>(), value) };
    }

    fn check<T>(&self, off: usize) {
        assert!(off + size_of::<T>() <= self.len(), "access out of bounds");
        assert!(off.is_multiple_of(align_of::<T>()), "misaligned access");
    }

    /// Where slot `idx` (free-running) of a request/response ring over all of these pages
    /// starts.
    pub fn slot<Req: Pod, Rsp: Pod>(&self, idx: u32) -> usize {
        let size = ring_size::<Req, Rsp>(self.pages);
        assert!(size > 0, "no slot fits");
        HEADER_SIZE + (idx % size) as usize * slot_size::<Req, Rsp>()
    }

    /// The front end of a request/response ring over all of these pages, as the guest
    /// builds it, holding the pages alive.
    pub fn front_ring<Req: Pod, Rsp: Pod>(self: &Rc<Self>) -> Held<FrontRing<Req, Rsp>> {
        // SAFETY: the pages are page-aligned and stay alive as long as the `Held` (it keeps
        // an `Rc`); within the code under test only this ring touches them, and the fake
        // playing the other domain touches them only between its calls (module docs).
        let front = unsafe { FrontRing::new(self.base, self.pages) };
        Held { value: front, mem: self.clone() }
    }

    /// The producing end of a byte ring laid out in the first page as `layout` says.
    pub fn byte_producer(self: &Rc<Self>, layout: ByteLayout) -> Held<Producer> {
        // SAFETY: the page stays alive as long as the `Held`; the caller makes this the
        // only producer of that direction in the process (each side of a fake takes one).
        let end = unsafe { Producer::new(self.base.as_ptr(), layout) };
        Held { value: end, mem: self.clone() }
    }

    /// The consuming end of a byte ring laid out in the first page as `layout` says.
    pub fn byte_consumer(self: &Rc<Self>, layout: ByteLayout) -> Held<Consumer> {
        // SAFETY: as in `byte_producer`, with the caller's only consumer.
        let end = unsafe { Consumer::new(self.base.as_ptr(), layout) };
        Held { value: end, mem: self.clone() }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        if self.pages == 1 {
            let kept = RECYCLED.with(|r| {
                let mut r = r.borrow_mut();
                (r.len() < RECYCLED_MAX).then(|| r.push(self.base)).is_some()
            });
            if kept {
                return;
            }
        }
        // SAFETY: allocated in `filled` with this layout, freed once.
        unsafe { dealloc(self.base.as_ptr(), layout(self.pages)) };
    }
}

/// A value over [`SharedMem`] (a ring end) that keeps the memory alive as long as itself.
pub struct Held<T> {
    // Dropped first: declaration order.
    value: T,
    mem: Rc<SharedMem>,
}

impl<T> Held<T> {
    pub fn mem(&self) -> &Rc<SharedMem> {
        &self.mem
    }
}

impl<T> Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// Appends `len` bytes of the endless repetition of `period`, from its byte `at`: how the
/// fakes make their test data (a disk's content, a frame's payload) by copies rather than
/// byte by byte, which the fuzz targets, making new data for every input, need fast.
pub fn extend_cycle(out: &mut Vec<u8>, period: &[u8], at: usize, len: usize) {
    assert!(!period.is_empty() || len == 0, "an empty period repeats to nothing");
    out.reserve(len);
    let end = out.len() + len;
    let mut at = at;
    while out.len() < end {
        let from = at % period.len();
        let n = (period.len() - from).min(end - out.len());
        out.extend_from_slice(&period[from..from + n]);
        at += n;
    }
}

/// Whether any of `bytes` is not zero: how a fake backend finds that a page we granted it
/// held more than the data of its request. A word at a time, since the fuzz targets run it
/// on every page a request touches and their coverage counters tick per loop iteration.
pub fn any_nonzero(bytes: &[u8]) -> bool {
    const BLOCK: usize = 32;
    let blocks = bytes.chunks_exact(BLOCK);
    let tail = blocks.remainder();
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
    blocks
        .map(|b| word(&b[..8]) | word(&b[8..16]) | word(&b[16..24]) | word(&b[24..]))
        .any(|w| w != 0)
        || tail.iter().any(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_repeats_its_period_from_anywhere() {
        let period = [1u8, 2, 3, 4, 5];
        let mut out = vec![9];
        extend_cycle(&mut out, &period, 3, 12);
        assert_eq!(out, [9, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]);
        extend_cycle(&mut out, &[], 0, 0);
        assert_eq!(out.len(), 13);
    }

    #[test]
    fn nonzero_bytes_are_found_wherever_they_are() {
        for len in [0, 1, 31, 32, 33, 100] {
            assert!(!any_nonzero(&vec![0; len]));
            for at in 0..len {
                let mut bytes = vec![0; len];
                bytes[at] = 0x80;
                assert!(any_nonzero(&bytes), "len {len} at {at}");
            }
        }
    }
}
