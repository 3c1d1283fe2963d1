//! Xen PVH platform state: what a PV guest gets from start_info and the domain builder, a
//! PVH guest asks for itself (the hypercall page through an MSR, shared_info and
//! grant-table frames placed in its physical address space, the event upcall as an
//! interrupt vector, the console and xenstore pages from HVM parameters).

pub mod ops;

use super::{virt_to_pfn, PAGE_SIZE};
use crate::mm::paging;
use hypercall::abi;

/// The IDT vector Xen injects for event upcalls (`HVM_PARAM_CALLBACK_IRQ`): the first one
/// after the legacy PIC's range, which PVH has no use for anyway.
pub const CALLBACK_VECTOR: u8 = 0x30;

/// Where pages outside the direct map are mapped, one after the other: the console and
/// xenstore rings, which the toolstack places just below 4 GiB.
const SPECIAL_VA: u64 = 0xffff_c200_0000_0000;

extern "C" {
    static hypercall_page: u8;
    fn xen_hvm_callback();
}

/// Xen's CPUID leaves' base, for writing the hypercall page again after a resume.
static CPUID_BASE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Gives our guest frames `pfns` (at most [`crate::mm::balloon::BATCH`]) back to Xen, which
/// takes them out of our physical address space; returns how many it took, from the start.
///
/// # Safety
/// Nothing uses the pages or shares them (they are out of the frame allocator), and
/// nothing will touch their direct-map addresses until they are populated again.
pub unsafe fn give_back(pfns: &[u64]) -> usize {
    let (mut frames, n) = super::xen_common::balloon_batch(pfns);
    super::xen_common::balloon_call("XENMEM_decrease_reservation", &mut frames[..n], |list| {
        // SAFETY: the caller's contract.
        unsafe { hypercall::ops::decrease_reservation(list) }
    })
}

/// Asks Xen for memory at our guest frames `pfns`; returns how many it populated, from the
/// start (the direct map never stopped mapping them).
pub fn populate(pfns: &[u64]) -> usize {
    let (mut frames, n) = super::xen_common::balloon_batch(pfns);
    super::xen_common::balloon_call(
        "XENMEM_populate_physmap",
        &mut frames[..n],
        hypercall::ops::populate_physmap,
    )
}

/// Has Xen write the hypercall page: CPUID(base + 2).EBX names the MSR that takes the
/// page's physical address.
pub fn init_hypercall_page(cpuid_base: u32) {
    CPUID_BASE.store(cpuid_base, core::sync::atomic::Ordering::Relaxed);
    let msr = super::cpu::cpuid_raw(cpuid_base + 2, 0).ebx;
    let page = core::ptr::addr_of!(hypercall_page);
    // SAFETY: the page is ours, in .text, reserved for exactly this; the image is loaded
    // at its link address minus KERNEL_BASE, so that is its physical address. Xen fills it
    // before the wrmsr returns.
    unsafe {
        x86_64::registers::model_specific::Msr::new(msr).write(page as u64 - super::KERNEL_BASE);
        hypercall::init(page);
    }
}

/// Places shared_info at the image page reserved for it (the page PV maps it over), so
/// that vcpu_info and the event bitmaps are where the common Xen code looks.
pub fn map_shared_info() -> hypercall::Result<()> {
    let pfn = virt_to_pfn(super::xen_common::shared_info_va());
    // SAFETY: the reserved page is never accessed as Rust data: it only serves as the
    // address at which shared_info appears, read through atomics.
    unsafe { hypercall::ops::add_to_physmap(abi::XENMAPSPACE_SHARED_INFO, 0, pfn) }
}

/// The IDT entry stub for [`CALLBACK_VECTOR`]: it enters the trap dispatcher as the PV
/// event callback does.
pub fn callback_stub() -> u64 {
    xen_hvm_callback as *const () as u64
}

/// Asks Xen to deliver event upcalls as [`CALLBACK_VECTOR`]. Xen injects it while
/// `evtchn_upcall_pending` is set and interrupts are enabled; the local APIC takes no part
/// (no EOI).
pub fn enable_callback_vector() -> hypercall::Result<()> {
    hypercall::ops::hvm_set_param(
        abi::HVM_PARAM_CALLBACK_IRQ,
        abi::HVM_PARAM_CALLBACK_TYPE_VECTOR | u64::from(CALLBACK_VECTOR),
    )
}

/// Why a ring page named by HVM parameters cannot be used.
#[derive(Debug)]
pub enum RingPageError {
    Param(u32, hypercall::Errno),
    /// A parameter holds a value no page or port can have.
    Bad(u32, u64),
    Map(paging::MapError),
}

impl core::fmt::Display for RingPageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingPageError::Param(i, e) => write!(f, "HVM parameter {i}: {e}"),
            RingPageError::Bad(i, v) => write!(f, "HVM parameter {i} is {v:#x}"),
            RingPageError::Map(e) => write!(f, "cannot map the page: {e:?}"),
        }
    }
}

/// The ring page's pfn and its event channel, as the HVM parameters `pfn_param` and
/// `port_param` name them (console, xenstore), checked.
fn ring_params(pfn_param: u32, port_param: u32) -> Result<(u64, u32), RingPageError> {
    let get = |i| hypercall::ops::hvm_get_param(i).map_err(|e| RingPageError::Param(i, e));
    let pfn = get(pfn_param)?;
    let port = get(port_param)?;
    // The toolstack's pages sit below 4 GiB; 0 means the parameter was never set.
    if pfn == 0 || pfn >= (1 << 20) {
        return Err(RingPageError::Bad(pfn_param, pfn));
    }
    let Ok(port) = u32::try_from(port) else { return Err(RingPageError::Bad(port_param, port)) };
    if port == 0 {
        return Err(RingPageError::Bad(port_param, 0));
    }
    Ok((pfn, port))
}

/// The ring page and event channel the HVM parameters `pfn_param` and `port_param` name
/// (console, xenstore), the page mapped at the `slot`-th special address.
pub fn ring_page(
    pfn_param: u32,
    port_param: u32,
    slot: u64,
) -> Result<(*mut u8, u32), RingPageError> {
    let (pfn, port) = ring_params(pfn_param, port_param)?;
    let va = SPECIAL_VA + slot * PAGE_SIZE;
    // SAFETY: each slot of the special range is used for one page only, and the page is
    // shared only with its backend, which writes it concurrently: users go through
    // volatile/atomic ring accessors.
    unsafe { paging::map(va, pfn, true) }.map_err(RingPageError::Map)?;
    Ok((va as *mut u8, port))
}

/// The port the HVM parameters name after a resume, for a ring page mapped at `slot` by
/// [`ring_page`]: the toolstack keeps the page where it was (a new one would need mapping
/// again, which we refuse: it does not happen), the port is new.
pub fn ring_port_after_resume(
    pfn_param: u32,
    port_param: u32,
    slot: u64,
) -> Result<u32, RingPageError> {
    let (pfn, port) = ring_params(pfn_param, port_param)?;
    let mapped = paging::translate(SPECIAL_VA + slot * PAGE_SIZE).map_err(RingPageError::Map)?;
    if pfn != mapped {
        return Err(RingPageError::Bad(pfn_param, pfn));
    }
    Ok(port)
}

/// After the suspend call returned, with events masked: writes the hypercall page again
/// (a new host may want the other vendor's instruction) and, as Linux's
/// `xen_hvm_post_suspend` does, places shared_info again in a new domain and re-arms the
/// event upcall vector (a parameter the save does not carry).
pub fn post_suspend(new_domain: bool) -> hypercall::Result<()> {
    init_hypercall_page(CPUID_BASE.load(core::sync::atomic::Ordering::Relaxed));
    if new_domain {
        map_shared_info()?;
    }
    enable_callback_vector()
}

/// A fresh page of ours turned into grant-table frame `index`; returns its pfn (its
/// direct-map address is the table's). The RAM that was behind it goes back to Xen.
pub fn grant_table_frame(index: u64) -> Result<u64, grant::GrantError> {
    // Out of memory, references stay as scarce as when the table is at Xen's limit.
    let pfn = crate::mm::alloc_frame().map_err(|_| grant::GrantError::Exhausted)?;
    // SAFETY: the frame was just allocated to us alone and is never freed: from now on
    // it is only the grant table, reached at its direct-map address.
    unsafe { hypercall::ops::add_to_physmap(abi::XENMAPSPACE_GRANT_TABLE, index, pfn) }
        .map_err(grant::GrantError::Hypercall)?;
    Ok(pfn)
}

/// Starts vCPU `cpu` (`VCPUOP_initialise` with a 64-bit HVM context, then `VCPUOP_up`):
/// in long mode on this CPU's page tables and control registers, at [`secondary_entry`]
/// with its stack and per-CPU area. Why not the local APIC's INIT-SIPI-SIPI: that needs a
/// real-mode trampoline below 1 MiB, the MADT and a trip through 16- and 32-bit code; Xen
/// starts a PVH vCPU where we ask, in the mode we ask, with the same hypercalls as PV.
///
/// # Safety
/// As for `pvops::start_cpu`.
pub unsafe extern "C" fn start_cpu(cpu: u32, start: *const crate::pvops::CpuStart) -> i64 {
    // SAFETY: the caller passes a valid CpuStart.
    let start = unsafe { start.read() };
    let (cr0, cr4): (u64, u64);
    // SAFETY: reading control registers in ring 0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    let efer = x86_64::registers::model_specific::Efer::read_raw();
    let ctx = abi::VcpuHvmContext {
        mode: abi::VCPU_HVM_MODE_64B,
        x86_64: abi::VcpuHvmX86_64 {
            rip: secondary_entry as *const () as u64,
            // As if called: the return address slot (zero) sits at the top.
            rsp: start.stack_top - 8,
            rdi: cpu.into(),
            rsi: start.percpu,
            // Interrupts off: nothing on the secondaries takes events yet.
            rflags: 0x2,
            cr0,
            cr3: crate::pvops::read_cr3() << 12,
            cr4,
            efer,
            ..Default::default()
        },
        ..Default::default()
    };
    // SAFETY: the vCPU starts on its own stack, at an entry that sets it up before any
    // Rust code that could fault, on the page tables every CPU shares.
    let started = unsafe { hypercall::ops::vcpu_initialise_hvm(cpu, &ctx) }
        .and_then(|()| hypercall::ops::vcpu_up(cpu));
    match started {
        Ok(()) => 0,
        Err(e) => -i64::from(e.0),
    }
}

/// Where a secondary vCPU starts (see [`super::native::secondary_start`]).
extern "C" fn secondary_entry(cpu: u64, percpu: u64) -> ! {
    super::native::secondary_start(cpu, percpu)
}
