//! x86-64: entry code, exception entry, and the two platforms' low-level state.

pub mod cpu;
pub mod native;
pub mod stack;
pub mod traps;
pub mod xen_common;
pub mod xen_pv;
pub mod xen_pvh;

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

/// Where the image is linked; physical (PV: pseudo-physical) page N is mapped at
/// `KERNEL_BASE + N * 4096` on every platform (the direct map).
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
pub const PAGE_SIZE: u64 = 4096;
/// The direct map ends where the address space does: 2 GiB of memory at most.
pub const DIRECT_MAP_PAGES: u64 = (0u64.wrapping_sub(KERNEL_BASE)) / PAGE_SIZE;

pub fn pfn_to_virt(pfn: u64) -> u64 {
    KERNEL_BASE + pfn * PAGE_SIZE
}

/// The pfn of a direct-mapped address.
pub fn virt_to_pfn(va: u64) -> u64 {
    (va - KERNEL_BASE) / PAGE_SIZE
}

/// First and one-past-last pfn of the loaded image (including .bss).
pub fn image_pfns() -> (u64, u64) {
    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    let (start, end) =
        (core::ptr::addr_of!(__image_start) as u64, core::ptr::addr_of!(__image_end) as u64);
    (virt_to_pfn(start), virt_to_pfn(end + PAGE_SIZE - 1))
}

/// The kernel's code, whole pages (the linker script aligns both ends).
pub fn text_range() -> core::ops::Range<u64> {
    extern "C" {
        static __text_start: u8;
        static __text_end: u8;
    }
    core::ptr::addr_of!(__text_start) as u64..core::ptr::addr_of!(__text_end) as u64
}
