//! Xen PV platform state: the p2m and m2p translations, direct-map PTEs, shared_info mapped
//! by virtual address, and trap and callback registration. What PVH shares with it is in
//! [`super::xen_common`].

pub mod ops;

use super::{pfn_to_virt, KERNEL_BASE, PAGE_SIZE};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use hypercall::abi;

/// Xen's read-only machine-to-physical table in every 64-bit PV guest
/// (`RO_MPT_VIRT_START`, public/arch-x86/xen-x86_64.h).
const M2P: u64 = 0xffff_8000_0000_0000;

/// PTE bits: present, writable, user (Xen sets it on a PV kernel's pages anyway),
/// accessed, dirty.
const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;

static P2M: AtomicPtr<u64> = AtomicPtr::new(core::ptr::null_mut());
static NR_PAGES: AtomicU64 = AtomicU64::new(0);
static MAX_MFN: AtomicU64 = AtomicU64::new(0);
static ROOT_MFN: AtomicU64 = AtomicU64::new(0);

/// Records the translations start_info gave us.
///
/// # Safety
/// `p2m` is start_info's `mfn_list`: `nr_pages` machine frame numbers, mapped for good.
pub unsafe fn init_memory(p2m: *mut u64, nr_pages: u64, max_mfn: u64) {
    P2M.store(p2m, Ordering::Relaxed);
    NR_PAGES.store(nr_pages, Ordering::Relaxed);
    MAX_MFN.store(max_mfn, Ordering::Relaxed);
}

/// Records the machine frame of the root page table (start_info's `pt_base`).
pub fn set_root_table(mfn: u64) {
    ROOT_MFN.store(mfn, Ordering::Relaxed);
}

pub fn nr_pages() -> u64 {
    NR_PAGES.load(Ordering::Relaxed)
}

pub fn root_table_mfn() -> u64 {
    ROOT_MFN.load(Ordering::Relaxed)
}

/// Our machine frame for `pfn`; `u64::MAX` outside our memory.
pub fn pfn_to_mfn(pfn: u64) -> u64 {
    if pfn >= nr_pages() {
        return u64::MAX;
    }
    // SAFETY: `init_memory`'s contract: the p2m holds nr_pages entries.
    unsafe { P2M.load(Ordering::Relaxed).add(pfn as usize).read() }
}

/// Our pfn for machine frame `mfn`, or `None` if the frame is not ours.
pub fn mfn_to_pfn(mfn: u64) -> Option<u64> {
    if mfn > MAX_MFN.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: Xen maps the m2p read-only at M2P for every machine frame up to the maximum
    // RAM page (XENMEM_maximum_ram_page), which bounds mfn above.
    let pfn = unsafe { ((M2P + mfn * 8) as *const u64).read_volatile() };
    // The m2p entry of a frame that is not ours is someone else's pfn: check it maps back.
    (pfn_to_mfn(pfn) == mfn).then_some(pfn)
}

/// The machine address of a direct-mapped virtual address.
pub fn virt_to_machine(va: u64) -> u64 {
    let pfn = (va - KERNEL_BASE) / PAGE_SIZE;
    (pfn_to_mfn(pfn) * PAGE_SIZE) | (va & (PAGE_SIZE - 1))
}

/// A direct-map PTE for `pfn`.
pub fn direct_pte(pfn: u64, writable: bool) -> u64 {
    let rw = if writable { PTE_RW } else { 0 };
    (pfn_to_mfn(pfn) * PAGE_SIZE) | PTE_P | PTE_US | PTE_A | PTE_D | rw
}

/// Remaps `pfn`'s direct-map page read-write or read-only.
///
/// # Safety
/// With `writable == false`, no code may write the page through the direct map afterwards.
pub unsafe fn set_direct_map_writable(pfn: u64, writable: bool) -> hypercall::Result<()> {
    // SAFETY: the same frame stays mapped at the same address; only the permission changes.
    unsafe {
        hypercall::ops::update_va_mapping(
            pfn_to_virt(pfn),
            direct_pte(pfn, writable),
            abi::UVMF_INVLPG,
        )
    }
}

extern "C" {
    fn xen_event_callback();
    fn xen_failsafe_callback();
}

/// Maps the shared_info frame over the page reserved for it in the image.
pub fn map_shared_info(maddr: u64) -> hypercall::Result<()> {
    // SAFETY: the reserved page is never accessed as Rust data: it only serves as the
    // address at which shared_info appears, read through atomics.
    unsafe {
        hypercall::ops::update_va_mapping(
            super::xen_common::shared_info_va(),
            maddr | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D,
            abi::UVMF_INVLPG,
        )
    }
}

/// Installs the trap table and the event and failsafe callbacks.
pub fn init_traps() -> hypercall::Result<()> {
    const TI_DPL3: u8 = 3;
    // Mask events on entry, like an interrupt gate; HYPERVISOR_iret restores the mask.
    const TI_MASK_EVENTS: u8 = 4;
    let stubs = super::traps::stubs(true);
    // 31 vectors (NMI is delivered through a callback, not the trap table) and the
    // all-zero entry that ends the table.
    let mut table = [abi::trap_info { vector: 0, flags: 0, cs: 0, address: 0 }; 32];
    let vectors = (0..32u8).filter(|&v| v != 2);
    for (slot, vector) in table.iter_mut().zip(vectors) {
        // int3 and into are executed by our ring-3 kernel itself: they need DPL 3.
        let dpl = if vector == 3 || vector == 4 { TI_DPL3 } else { 0 };
        *slot = abi::trap_info {
            vector,
            flags: dpl | TI_MASK_EVENTS,
            cs: abi::FLAT_KERNEL_CS as u16,
            address: stubs[vector as usize],
        };
    }
    // SAFETY: every address is an entry stub of entry.S for Xen's PV frame, in .text;
    // the table ends with an all-zero entry.
    unsafe { hypercall::ops::set_trap_table(&table)? };

    for (kind, address) in [
        (abi::CALLBACKTYPE_EVENT, xen_event_callback as *const () as u64),
        (abi::CALLBACKTYPE_FAILSAFE, xen_failsafe_callback as *const () as u64),
    ] {
        let cb = abi::CallbackRegister { kind, flags: abi::CALLBACKF_MASK_EVENTS, address };
        // SAFETY: both are entry stubs of entry.S for Xen's callback frame, in .text.
        unsafe { hypercall::ops::callback_register(&cb)? };
    }
    Ok(())
}
