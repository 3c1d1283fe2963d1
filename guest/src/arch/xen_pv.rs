//! Xen PV platform state: the shared_info page and vcpu 0's vcpu_info in it, the p2m and
//! m2p translations, trap and callback registration, and the event upcall.

pub mod ops;

use super::{pfn_to_virt, KERNEL_BASE, PAGE_SIZE};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use hypercall::abi;
use hypercall::Errno;

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
    static xen_shared_info_page: [u8; 4096];
    fn xen_event_callback();
    fn xen_failsafe_callback();
}

/// The image page shared_info appears at, on both Xen platforms (PV maps it there, PVH
/// places it there in its physical address space).
pub(crate) fn shared_info_va() -> u64 {
    core::ptr::addr_of!(xen_shared_info_page) as u64
}

/// Maps the shared_info frame over the page reserved for it in the image.
pub fn map_shared_info(maddr: u64) -> hypercall::Result<()> {
    // SAFETY: the reserved page is never accessed as Rust data: it only serves as the
    // address at which shared_info appears, read through atomics.
    unsafe {
        hypercall::ops::update_va_mapping(
            shared_info_va(),
            maddr | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D,
            abi::UVMF_INVLPG,
        )
    }
}

/// vcpu 0's `vcpu_info` (the first slot of shared_info), read and written atomically
/// because Xen updates it concurrently.
#[derive(Clone, Copy)]
pub struct Vcpu(u64);

pub fn vcpu() -> Vcpu {
    Vcpu(shared_info_va())
}

impl Vcpu {
    fn byte(&self, off: u64) -> &'static AtomicU8 {
        // SAFETY: offsets 0 and 1 of vcpu_info are the u8 upcall_pending and upcall_mask;
        // the page is mapped for good (before map_shared_info it is our zeroed page).
        unsafe { &*((self.0 + off) as *const AtomicU8) }
    }

    fn word(&self, off: u64) -> &'static AtomicU64 {
        // SAFETY: as for `byte`, at 8-aligned u64 fields of vcpu_info.
        unsafe { &*((self.0 + off) as *const AtomicU64) }
    }

    pub fn upcall_pending(&self) -> u8 {
        self.byte(0).load(Ordering::Relaxed)
    }

    pub fn upcall_mask(&self) -> u8 {
        self.byte(1).load(Ordering::Relaxed)
    }

    pub fn set_upcall_mask(&self, mask: u8) {
        self.byte(1).store(mask, Ordering::Relaxed)
    }

    /// The faulting address Xen saved for the last page fault (`arch.cr2`).
    pub fn cr2(&self) -> u64 {
        self.word(16).load(Ordering::Relaxed)
    }

    pub fn as_ptr(&self) -> *mut abi::vcpu_info {
        self.0 as *mut abi::vcpu_info
    }

    /// `vcpu_info.time`.
    pub fn time_info(&self) -> *const abi::vcpu_time_info {
        (self.0 + core::mem::offset_of!(abi::vcpu_info, time) as u64) as *const _
    }
}

/// The 2-level event channel view of shared_info and vcpu 0.
pub fn two_level() -> events::TwoLevel<'static> {
    let si = shared_info_va();
    // SAFETY: shared_info (or, before it is mapped, the zeroed page reserved for it) is
    // mapped for good, vcpu 0's vcpu_info is its first slot, and its event fields are only
    // accessed atomically in this kernel.
    unsafe {
        events::TwoLevel::new(
            core::ptr::NonNull::new_unchecked(si as *mut abi::shared_info),
            core::ptr::NonNull::new_unchecked(si as *mut abi::vcpu_info),
        )
    }
}

/// The event callback: runs with events masked (Xen masks them when it bounces the
/// callback, and HYPERVISOR_iret restores the mask on the way out).
pub fn upcall() {
    crate::xen::evtchn::dispatch_pending();
}

/// Makes Xen deliver a pending event now: it checks on every return to the guest.
pub fn force_event_delivery() {
    let _ = hypercall::ops::xen_version();
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

/// Stops the domain; a failure shows to the toolstack as a crash.
pub fn shutdown(how: crate::pvops::Halt) -> ! {
    use crate::pvops::Halt;
    use hypercall::ops::ShutdownReason;
    let why = match how {
        Halt::Poweroff => ShutdownReason::Poweroff,
        Halt::Failure => ShutdownReason::Crash,
        Halt::Reboot => ShutdownReason::Reboot,
    };
    crate::console::drain(2_000_000_000);
    let err: Errno = hypercall::ops::shutdown(why);
    crate::console::emergency(format_args!("SCHEDOP_shutdown failed: {err}\n"));
    loop {
        let _ = hypercall::ops::sched_yield();
    }
}
