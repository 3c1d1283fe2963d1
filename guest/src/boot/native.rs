//! The native boot path: QEMU's PVH loader ran `pvh_start32`, which switched to long mode
//! on the boot page tables (the first 2 GiB mapped at KERNEL_BASE) and called us with the
//! physical address of hvm_start_info.

use super::kernel_main;
use crate::arch::{self, native, DIRECT_MAP_PAGES, KERNEL_BASE, PAGE_SIZE};
use crate::pvops::{self, Backend};

/// `struct hvm_start_info` (public/arch-x86/hvm/start_info.h), version 1.
#[repr(C)]
#[derive(Clone, Copy)]
struct HvmStartInfo {
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
/// More entries than any PC firmware reports: a bigger count is garbage.
const MAX_MEMMAP_ENTRIES: u32 = 128;

/// What the loader said, kept for the self-tests.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub start_info_version: u32,
    pub memmap_entries: u32,
    pub ram_bytes: u64,
    pub tsc_hz: u64,
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
extern "C" fn native_start(start_info_paddr: u32) -> ! {
    if let Some(base) = arch::cpu::xen_cpuid_base() {
        xen_pvh_unsupported(base);
    }
    // SAFETY: first thing at boot, one CPU, and we entered through the PVH entry on bare
    // (emulated) hardware: no Xen CPUID leaves.
    unsafe { pvops::install(Backend::Native, pvops::native::OPS) };
    native::init_pic();
    native::init_idt();
    native::drop_identity_map();
    crate::console::init_native();

    // SAFETY: the loader passes hvm_start_info's physical address, below 2 GiB (the
    // option ROM places it in low memory), where the boot tables map it.
    let si: HvmStartInfo = unsafe { phys::<HvmStartInfo>(start_info_paddr.into()).read() };
    if si.magic != HVM_START_MAGIC {
        panic!("hvm_start_info magic {:#x}, expected {HVM_START_MAGIC:#x}", si.magic);
    }
    if si.cmdline_paddr != 0 {
        // SAFETY: a NUL-terminated string in low memory; save_cmdline stops at NUL or 1 KiB.
        let raw = unsafe { core::slice::from_raw_parts(phys::<u8>(si.cmdline_paddr), 1024) };
        super::save_cmdline(raw);
    }
    let options = super::options();
    crate::console::init_logger(options.log);

    let tsc_hz = crate::time::native::calibrate();
    native::init_timer_irq();
    log::info!("native boot: TSC {}.{:03} MHz", tsc_hz / 1_000_000, tsc_hz / 1000 % 1000);

    if si.version < 1 || si.memmap_paddr == 0 {
        panic!("hvm_start_info version {} has no memory map", si.version);
    }
    if si.memmap_entries > MAX_MEMMAP_ENTRIES {
        panic!("hvm_start_info claims {} memory map entries", si.memmap_entries);
    }
    // SAFETY: the loader's memory map, in low memory, with the entry count checked above.
    let memmap = unsafe {
        core::slice::from_raw_parts(
            phys::<MemmapEntry>(si.memmap_paddr),
            si.memmap_entries as usize,
        )
    };
    let ram = memmap.iter().filter(|e| e.kind == MEMMAP_RAM);
    let top = ram.clone().map(|e| e.addr + e.size).max().unwrap_or(0);
    let frames = (top / PAGE_SIZE).min(DIRECT_MAP_PAGES);
    crate::mm::init_frames(frames);
    // Free: RAM above the image (below it lie the loader's data and legacy areas).
    let (_, image_end) = arch::image_pfns();
    for e in ram.clone() {
        let start = (e.addr.div_ceil(PAGE_SIZE)).max(image_end);
        let end = (e.addr + e.size) / PAGE_SIZE;
        if start < end {
            crate::mm::add_free_frames(start, end);
        }
    }
    let ram_bytes = ram.map(|e| e.size).sum();
    BOOT_INFO.call_once(|| BootInfo {
        start_info_version: si.version,
        memmap_entries: si.memmap_entries,
        ram_bytes,
        tsc_hz,
    });
    if let Err(e) = crate::mm::init_heap(64 << 20) {
        panic!("no memory for the heap: {e:?}");
    }
    kernel_main(options)
}

/// The PVH entry under Xen (a `type = "pvh"` domU): no backend for it yet. Say so on Xen's
/// debug port and crash the domain, rather than drive hardware that is not there.
fn xen_pvh_unsupported(cpuid_base: u32) -> ! {
    extern "C" {
        static hypercall_page: u8;
    }
    const XEN_DEBUG_PORT: u16 = 0xe9;
    for &b in b"rust-unikernel: Xen PVH guests are not supported yet; use type = \"pv\"\n" {
        // SAFETY: under Xen HVM/PVH, port 0xe9 is Xen's debug console (writes show in its log).
        unsafe { native::outb(XEN_DEBUG_PORT, b) };
    }
    // CPUID(base + 2).EBX names the MSR that makes Xen write the hypercall page at the
    // physical address we give it.
    let msr = arch::cpu::cpuid_raw(cpuid_base + 2, 0).ebx;
    let page = core::ptr::addr_of!(hypercall_page) as u64;
    // SAFETY: the page is ours, in .text, reserved for exactly this; the image is loaded at
    // its physical address minus KERNEL_BASE.
    unsafe {
        x86_64::registers::model_specific::Msr::new(msr).write(page - KERNEL_BASE);
        hypercall::init(core::ptr::addr_of!(hypercall_page));
    }
    let _ = hypercall::ops::shutdown(hypercall::ops::ShutdownReason::Crash);
    loop {
        core::hint::spin_loop();
    }
}
