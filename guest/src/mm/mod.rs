//! Memory: the page-frame allocator, page-table manipulation through pv_ops, and the heap.

pub mod frames;
pub mod p2m;
#[cfg(target_os = "none")]
pub mod paging;

#[cfg(target_os = "none")]
pub use kernel::*;

#[cfg(target_os = "none")]
mod kernel {
    use super::frames::{FrameBitmap, FrameError};
    use crate::arch::{pfn_to_virt, DIRECT_MAP_PAGES, PAGE_SIZE};
    use crate::sync::IrqMutex;
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;
    use linked_list_allocator::Heap;

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

    /// The kernel heap: a first-fit list allocator whose lock also masks interrupts, so that
    /// an event handler may allocate while the interrupted code holds no heap lock.
    pub struct KernelHeap(IrqMutex<Heap>);

    #[global_allocator]
    static HEAP: KernelHeap = KernelHeap(IrqMutex::new(Heap::empty()));

    // SAFETY: the inner Heap hands out disjoint, correctly aligned blocks and is only
    // reached under the lock.
    unsafe impl GlobalAlloc for KernelHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.0.lock().allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr())
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: GlobalAlloc's contract: ptr came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(NonNull::new_unchecked(ptr), layout) }
        }
    }

    /// Gives the heap up to `max_bytes` of contiguous frames (half the free memory at most).
    pub fn init_heap(max_bytes: u64) -> Result<u64, FrameError> {
        let (free, _) = frame_stats();
        let pages = (max_bytes / PAGE_SIZE).min(free / 2).max(1);
        let first = alloc_frames(pages)?;
        let bytes = pages * PAGE_SIZE;
        // SAFETY: the frames were just allocated for the heap alone and are direct-mapped.
        unsafe { HEAP.0.lock().init(pfn_to_virt(first) as *mut u8, bytes as usize) };
        Ok(bytes)
    }

    /// (used, free) heap bytes.
    pub fn heap_stats() -> (usize, usize) {
        let heap = HEAP.0.lock();
        (heap.used(), heap.free())
    }
}
