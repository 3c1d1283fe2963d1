//! A heap of several regions: one given at boot, more added as it runs out (from the frame
//! allocator), and the added ones given back once nothing in them is allocated, so memory
//! the heap once needed can go back to the frame allocator and from there to Xen (the
//! balloon). Each region is a first-fit list allocator of its own.

use core::alloc::Layout;
use core::ptr::NonNull;
use linked_list_allocator::Heap;

/// A region the heap gave back: `[start, start + len)`, which nothing uses any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    pub start: usize,
    pub len: usize,
}

pub struct Regions<const N: usize> {
    /// Region 0 is the boot region, never released; an empty `Heap` is an unused slot.
    heaps: [Heap; N],
}

impl<const N: usize> Default for Regions<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Regions<N> {
    pub const fn new() -> Self {
        Regions { heaps: [const { Heap::empty() }; N] }
    }

    /// Adds `[start, start + len)` as a region (the first one added is the boot region);
    /// `false` when every slot is taken, and the memory is not used.
    ///
    /// # Safety
    /// The memory is valid, writable and used by nothing else until [`Self::release_empty`]
    /// hands it back (for the boot region: for good).
    pub unsafe fn add(&mut self, start: *mut u8, len: usize) -> bool {
        let Some(slot) = self.heaps.iter_mut().find(|h| h.size() == 0) else { return false };
        // SAFETY: the caller's contract.
        unsafe { slot.init(start, len) };
        true
    }

    pub fn allocate(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heaps
            .iter_mut()
            .filter(|h| h.size() > 0)
            .find_map(|h| h.allocate_first_fit(layout).ok())
    }

    /// # Safety
    /// `ptr` came from [`Self::allocate`] with this layout and is not used after.
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let at = ptr.as_ptr() as usize;
        if let Some(h) = self
            .heaps
            .iter_mut()
            .find(|h| h.size() > 0 && (h.bottom() as usize..h.top() as usize).contains(&at))
        {
            // SAFETY: the caller's contract; the block lies in this region, which gave it.
            unsafe { h.deallocate(ptr, layout) }
        }
    }

    /// Takes out an added region in which nothing is allocated, for its memory to be used
    /// elsewhere; the boot region stays.
    pub fn release_empty(&mut self) -> Option<Released> {
        let h = self.heaps.iter_mut().skip(1).find(|h| h.size() > 0 && h.used() == 0)?;
        let released = Released { start: h.bottom() as usize, len: h.size() };
        *h = Heap::empty();
        Some(released)
    }

    /// (used, free) bytes over all regions.
    pub fn stats(&self) -> (usize, usize) {
        self.heaps.iter().fold((0, 0), |(u, f), h| (u + h.used(), f + h.free()))
    }

    /// Regions in use, the boot region included.
    pub fn count(&self) -> usize {
        self.heaps.iter().filter(|h| h.size() > 0).count()
    }
}

/// How much memory to add for an allocation the regions could not serve: at least
/// `min_bytes`, and room for the block at any alignment plus the allocator's own bookkeeping,
/// in whole pages of `page` bytes.
pub fn growth_for(layout: Layout, min_bytes: usize, page: usize) -> usize {
    let need = layout.size().saturating_add(layout.align()).saturating_add(2 * page);
    need.max(min_bytes).div_ceil(page).saturating_mul(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn memory(len: usize) -> *mut u8 {
        Vec::<u64>::with_capacity(len / 8).leak().as_mut_ptr() as *mut u8
    }

    #[test]
    fn an_added_region_serves_what_the_boot_one_cannot_and_goes_back_when_empty() {
        let mut r = Regions::<4>::new();
        // SAFETY: leaked memory of ours, used for nothing else.
        assert!(unsafe { r.add(memory(8192), 8192) });
        let big = Layout::from_size_align(6000, 8).unwrap();
        let a = r.allocate(big).expect("the boot region has room for one");
        assert!(r.allocate(big).is_none(), "the boot region is full");
        let extra = memory(16384);
        // SAFETY: as above.
        assert!(unsafe { r.add(extra, 16384) });
        let b = r.allocate(big).expect("the added region serves it");
        assert!((extra as usize..extra as usize + 16384).contains(&(b.as_ptr() as usize)));
        assert_eq!(r.count(), 2);
        assert_eq!(r.release_empty(), None, "the added region is in use");
        // SAFETY: both came from allocate with this layout.
        unsafe { r.deallocate(b, big) };
        assert_eq!(r.release_empty(), Some(Released { start: extra as usize, len: 16384 }));
        assert_eq!(r.count(), 1);
        // SAFETY: as above.
        unsafe { r.deallocate(a, big) };
        assert_eq!(r.release_empty(), None, "the boot region is never released");
        assert_eq!(r.stats().0, 0);
    }

    #[test]
    fn slots_run_out_without_using_the_memory() {
        let mut r = Regions::<2>::new();
        // SAFETY: leaked memory of ours.
        unsafe {
            assert!(r.add(memory(4096), 4096));
            assert!(r.add(memory(4096), 4096));
            assert!(!r.add(memory(4096), 4096));
        }
        assert_eq!(r.count(), 2);
    }

    #[test]
    fn growth_covers_the_block_and_is_whole_pages() {
        let l = Layout::from_size_align(10, 8).unwrap();
        assert_eq!(growth_for(l, 1 << 20, 4096), 1 << 20);
        let l = Layout::from_size_align(3 << 20, 4096).unwrap();
        let g = growth_for(l, 1 << 20, 4096);
        assert!(g >= (3 << 20) + 4096 && g.is_multiple_of(4096));
    }
}
