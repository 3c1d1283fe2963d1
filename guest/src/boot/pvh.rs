//! The PVH entry, shared by two platforms: QEMU's `-kernel` (native) and a Xen
//! `type = "pvh"` domU. `pvh_start32` switched to long mode on the boot page tables (the first
//! 2 GiB mapped at KERNEL_BASE) and calls [`pvh_start`] with the physical address of
//! hvm_start_info; Xen's CPUID leaves tell the two apart.

use crate::arch::{self, DIRECT_MAP_PAGES, KERNEL_BASE, PAGE_SIZE};

/// `struct hvm_start_info` (public/arch-x86/hvm/start_info.h), version 1.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<HvmStartInfo>() == 56);
const _: () = assert!(core::mem::size_of::<MemmapEntry>() == 24);

const HVM_START_MAGIC: u32 = 0x336e_c578;
const MEMMAP_RAM: u32 = 1;
/// More entries than any PC firmware or toolstack reports: a bigger count is garbage.
const MAX_MEMMAP_ENTRIES: u32 = 128;

/// What the loader said, kept for the self-tests.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub start_info_version: u32,
    pub memmap_entries: u32,
    pub ram_bytes: u64,
    /// Where the loader says the ACPI RSDP is (0: it did not say).
    pub rsdp_paddr: u64,
}

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

pub fn boot_info() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}

/// A physical address below 2 GiB, through the boot mapping.
fn phys<T>(paddr: u64) -> *const T {
    (KERNEL_BASE + paddr) as *const T
}

#[no_mangle]
extern "C" fn pvh_start(start_info_paddr: u32) -> ! {
    match arch::cpu::xen_cpuid_base() {
        Some(base) => super::xen_pvh::start(start_info_paddr.into(), base),
        None => super::native::start(start_info_paddr.into()),
    }
}

/// Copies hvm_start_info and keeps its command line. Before any console exists, so a bad
/// structure is returned as a message for the caller to show once it can.
pub fn read_start_info(paddr: u64) -> Result<HvmStartInfo, &'static str> {
    if paddr == 0 || paddr >= DIRECT_MAP_PAGES * PAGE_SIZE {
        return Err("hvm_start_info outside the boot mapping");
    }
    // SAFETY: the loader places hvm_start_info in low memory, which the boot tables map
    // (checked above).
    let si: HvmStartInfo = unsafe { phys::<HvmStartInfo>(paddr).read() };
    if si.magic != HVM_START_MAGIC {
        return Err("hvm_start_info has the wrong magic");
    }
    if si.cmdline_paddr != 0 && si.cmdline_paddr < DIRECT_MAP_PAGES * PAGE_SIZE - 1024 {
        // SAFETY: a NUL-terminated string in low memory; save_cmdline stops at NUL or 1 KiB.
        let raw = unsafe { core::slice::from_raw_parts(phys::<u8>(si.cmdline_paddr), 1024) };
        super::save_cmdline(raw);
    }
    Ok(si)
}

/// Starts the frame allocator on the loader's memory map: RAM above the image is free
/// (below it lie the loader's data and legacy areas). Then the heap.
pub fn init_memory(si: &HvmStartInfo) -> Result<(), &'static str> {
    if si.version < 1 || si.memmap_paddr == 0 {
        return Err("hvm_start_info has no memory map");
    }
    if si.memmap_entries > MAX_MEMMAP_ENTRIES {
        return Err("hvm_start_info claims too many memory map entries");
    }
    let bytes = u64::from(si.memmap_entries) * core::mem::size_of::<MemmapEntry>() as u64;
    if si.memmap_paddr.saturating_add(bytes) > DIRECT_MAP_PAGES * PAGE_SIZE {
        return Err("hvm_start_info's memory map lies outside the boot mapping");
    }
    // SAFETY: the loader's memory map, in mapped low memory, with the entry count checked.
    let memmap = unsafe {
        core::slice::from_raw_parts(
            phys::<MemmapEntry>(si.memmap_paddr),
            si.memmap_entries as usize,
        )
    };
    let ram = memmap.iter().filter(|e| e.kind == MEMMAP_RAM);
    let top = ram.clone().map(|e| e.addr.saturating_add(e.size)).max().unwrap_or(0);
    let frames = (top / PAGE_SIZE).min(DIRECT_MAP_PAGES);
    crate::mm::init_frames(frames);
    let (_, image_end) = arch::image_pfns();
    for e in ram.clone() {
        let start = (e.addr.div_ceil(PAGE_SIZE)).max(image_end);
        let end = (e.addr.saturating_add(e.size) / PAGE_SIZE).min(frames);
        if start < end {
            crate::mm::add_free_frames(start, end);
        }
    }
    BOOT_INFO.call_once(|| BootInfo {
        start_info_version: si.version,
        memmap_entries: si.memmap_entries,
        ram_bytes: ram.map(|e| e.size).sum(),
        rsdp_paddr: si.rsdp_paddr,
    });
    crate::mm::init_heap(crate::mm::BOOT_HEAP_MAX).map(drop).map_err(|_| "no memory for the heap")
}
