//! Memory: the page-frame allocator, page-table manipulation through pv_ops, and the heap.

pub mod balloon;
pub mod frames;
pub mod heap;
pub mod p2m;
#[cfg(target_os = "none")]
pub mod paging;

#[cfg(target_os = "none")]
pub use kernel::*;

#[cfg(target_os = "none")]
mod kernel {
    use super::frames::{FrameBitmap, FrameError};
    use super::heap::{growth_for, Regions};
    use crate::arch::{pfn_to_virt, DIRECT_MAP_PAGES, PAGE_SIZE};
    use crate::sync::IrqMutex;
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;

    /// One bit per page of the direct map (2 GiB of memory at most).
    static mut BITMAP: [u64; (DIRECT_MAP_PAGES / 64) as usize] =
        [0; (DIRECT_MAP_PAGES / 64) as usize];

    static FRAMES: IrqMutex<Option<FrameBitmap<'static>>> = IrqMutex::new(None);

    /// Starts frame bookkeeping for pfns `[0, frames)`, all in use until added.
    pub fn init_frames(frames: u64) {
        let frames = frames.min(DIRECT_MAP_PAGES);
        // SAFETY: called once at boot; from then on the bitmap is only reached through FRAMES.
        let words = unsafe { &mut *core::ptr::addr_of_mut!(BITMAP) };
        *FRAMES.lock() = Some(FrameBitmap::new(words, frames));
    }

    fn with_frames<T>(f: impl FnOnce(&mut FrameBitmap<'static>) -> T) -> T {
        f(FRAMES.lock().as_mut().expect("frame allocator used before init_frames"))
    }

    /// Hands `[start, end)` to the allocator: the pages must be mapped in the direct map and
    /// used by nothing.
    pub fn add_free_frames(start: u64, end: u64) {
        with_frames(|b| b.add_free_range(start, end))
    }

    /// Covers pfns up to `frames` (within the direct map), the new ones in use: room for
    /// memory the balloon populates past the boot size, handed over with [`free_frame`].
    pub fn grow_frames(frames: u64) {
        with_frames(|b| b.grow(frames.min(DIRECT_MAP_PAGES)))
    }

    pub fn alloc_frame() -> Result<u64, FrameError> {
        with_frames(|b| b.alloc())
    }

    pub fn alloc_frames(count: u64) -> Result<u64, FrameError> {
        with_frames(|b| b.alloc_run(count))
    }

    /// `count` contiguous frames, zeroed; returns the first.
    pub fn alloc_zeroed_frames(count: u64) -> Result<u64, FrameError> {
        let first = alloc_frames(count)?;
        // SAFETY: the frames were just allocated to the caller alone and are direct-mapped
        // and writable.
        unsafe {
            core::ptr::write_bytes(pfn_to_virt(first) as *mut u8, 0, (count * PAGE_SIZE) as usize)
        };
        Ok(first)
    }

    pub fn free_frame(pfn: u64) -> Result<(), FrameError> {
        with_frames(|b| b.free(pfn))
    }

    /// (free, total) frames.
    pub fn frame_stats() -> (u64, u64) {
        with_frames(|b| (b.free_frames(), b.frames()))
    }

    /// The kernel heap: regions of first-fit list allocators (see [`super::heap`]) under one
    /// lock that also masks interrupts, so that an event handler may allocate while the
    /// interrupted code holds no heap lock. It grows from the frame allocator when it runs out
    /// (the heap's lock is taken before the frame allocator's, never after).
    pub struct KernelHeap(IrqMutex<Regions<HEAP_REGIONS>>);

    /// The most regions the heap has at once, the boot one included.
    const HEAP_REGIONS: usize = 64;
    /// The least the heap grows by, so that small allocations do not each take a region.
    const HEAP_GROWTH_MIN: usize = 2 << 20;

    #[global_allocator]
    static HEAP: KernelHeap = KernelHeap(IrqMutex::new(Regions::new()));

    /// Adds a region of contiguous free frames for `layout`; `false` if there is none.
    fn grow(regions: &mut Regions<HEAP_REGIONS>, layout: Layout) -> bool {
        let bytes = growth_for(layout, HEAP_GROWTH_MIN, PAGE_SIZE as usize);
        let pages = bytes as u64 / PAGE_SIZE;
        // A smaller run when the large one is not to be had: what the block itself needs.
        let exact = growth_for(layout, 0, PAGE_SIZE as usize) as u64 / PAGE_SIZE;
        let Some((first, pages)) =
            [pages, exact].into_iter().find_map(|n| alloc_frames(n).ok().map(|f| (f, n)))
        else {
            return false;
        };
        // SAFETY: the frames were just allocated for the heap alone and are direct-mapped;
        // they go back to the frame allocator only after `release_empty` hands them back.
        if unsafe { regions.add(pfn_to_virt(first) as *mut u8, (pages * PAGE_SIZE) as usize) } {
            return true;
        }
        for pfn in first..first + pages {
            let _ = free_frame(pfn);
        }
        false
    }

    // SAFETY: the regions hand out disjoint, correctly aligned blocks and are only reached
    // under the lock; a region's memory is the heap's alone until it is released empty.
    unsafe impl GlobalAlloc for KernelHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let mut regions = self.0.lock();
            if let Some(p) = regions.allocate(layout) {
                return p.as_ptr();
            }
            if grow(&mut regions, layout) {
                if let Some(p) = regions.allocate(layout) {
                    return p.as_ptr();
                }
            }
            core::ptr::null_mut()
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: GlobalAlloc's contract: ptr came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(NonNull::new_unchecked(ptr), layout) }
        }
    }

    /// The heap's boot region at most: the rest of memory stays with the frame allocator
    /// (so the balloon can give it back) until the heap needs it.
    pub const BOOT_HEAP_MAX: u64 = 8 << 20;

    /// Gives the heap its boot region: up to `max_bytes` of contiguous frames, half the free
    /// memory at most, as before the heap could grow (a 12 MiB PVH guest with a quarter
    /// failed a 1 MiB disk write with the backend's I/O error and twice triple-faulted, not
    /// understood; with half it passed); it grows from the rest as it needs.
    pub fn init_heap(max_bytes: u64) -> Result<u64, FrameError> {
        let (free, _) = frame_stats();
        let pages = (max_bytes / PAGE_SIZE).min(free / 2).max(1);
        let first = alloc_frames(pages)?;
        let bytes = pages * PAGE_SIZE;
        // SAFETY: the frames were just allocated for the heap alone, for good, and are
        // direct-mapped.
        unsafe { HEAP.0.lock().add(pfn_to_virt(first) as *mut u8, bytes as usize) };
        Ok(bytes)
    }

    /// Gives the frames of the heap's regions that nothing uses back to the frame allocator;
    /// returns how many.
    pub fn trim_heap() -> u64 {
        let mut regions = HEAP.0.lock();
        let mut frames = 0;
        while let Some(r) = regions.release_empty() {
            let first = crate::arch::virt_to_pfn(r.start as u64);
            for pfn in first..first + r.len as u64 / PAGE_SIZE {
                if free_frame(pfn).is_ok() {
                    frames += 1;
                }
            }
        }
        frames
    }

    /// The heap's regions, the boot one included.
    pub fn heap_regions() -> usize {
        HEAP.0.lock().count()
    }

    /// (used, free) heap bytes.
    pub fn heap_stats() -> (usize, usize) {
        HEAP.0.lock().stats()
    }
}
