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

/// The p2m's entries: the boot memory, or more once [`grow_p2m`] made room.
pub fn nr_pages() -> u64 {
    // Acquire: pairs with grow_p2m's release, so a count that includes the new entries
    // comes with the pointer to the p2m that has them.
    NR_PAGES.load(Ordering::Acquire)
}

pub fn root_table_mfn() -> u64 {
    ROOT_MFN.load(Ordering::Relaxed)
}

/// Our machine frame for `pfn`; `u64::MAX` outside our memory.
pub fn pfn_to_mfn(pfn: u64) -> u64 {
    if pfn >= nr_pages() {
        return u64::MAX;
    }
    // SAFETY: `init_memory`'s and `grow_p2m`'s contract: the p2m holds nr_pages entries.
    unsafe { P2M.load(Ordering::Relaxed).add(pfn as usize).read_volatile() }
}

/// The p2m entry of a pfn Xen has back (the balloon's): the toolstack's save skips it.
pub const INVALID_MFN: u64 = u64::MAX;

/// # Safety
/// `pfn < nr_pages()`; nothing maps `pfn` by its old frame any more, or `mfn` is ours.
unsafe fn set_p2m(pfn: u64, mfn: u64) {
    // SAFETY: `init_memory`'s and `grow_p2m`'s contract (nr_pages entries, ours to write);
    // the toolstack reads the p2m only while we are suspended.
    unsafe { P2M.load(Ordering::Relaxed).add(pfn as usize).write_volatile(mfn) }
}

/// Makes room in the p2m for pfns up to `pages`, memory the balloon may populate past the
/// boot size: a p2m in new contiguous frames of ours (start_info's has exactly the boot
/// pages, with the builder's pages right after it), the old entries copied, the new ones
/// invalid, and published again for the toolstack.
pub fn grow_p2m(pages: u64) -> Result<(), &'static str> {
    let nr = nr_pages();
    if pages <= nr {
        return Ok(());
    }
    let leaves = pages.div_ceil(crate::mm::p2m::ENTRIES_PER_PAGE);
    let first = crate::mm::alloc_frames(leaves).map_err(|_| "no memory for a larger p2m")?;
    let new = pfn_to_virt(first) as *mut u64;
    for i in 0..leaves * crate::mm::p2m::ENTRIES_PER_PAGE {
        let mfn = if i < nr { pfn_to_mfn(i) } else { INVALID_MFN };
        // SAFETY: the frames were just allocated to us alone, contiguous and direct-mapped;
        // i is within them.
        unsafe { new.add(i as usize).write_volatile(mfn) };
    }
    // Only vCPU 0 changes the p2m (the balloon, a resume); the other vCPUs read it, and see
    // the new count only with the new pointer (release, paired with nr_pages' acquire).
    P2M.store(new, Ordering::Release);
    NR_PAGES.store(pages, Ordering::Release);
    publish_p2m()
}

/// Gives our pages `pfns` (at most [`crate::mm::balloon::BATCH`]) back to Xen; returns how
/// many it took, from the start. Each is unmapped from the direct map first (Xen frees a
/// page only when its last mapping goes) and marked invalid in the p2m; those Xen refuses
/// are ours again, mapped as before.
///
/// # Safety
/// Nothing uses the pages or shares them: they are out of the frame allocator.
pub unsafe fn give_back(pfns: &[u64]) -> usize {
    let mut mfns = [0u64; crate::mm::balloon::BATCH];
    let n = pfns.len().min(mfns.len());
    let mut unmapped = 0;
    for (i, &pfn) in pfns[..n].iter().enumerate() {
        mfns[i] = pfn_to_mfn(pfn);
        // SAFETY: the caller's contract: nothing references the page.
        if unsafe { crate::mm::paging::unmap(pfn_to_virt(pfn)) }.is_err() {
            log::error!("balloon: pfn {pfn:#x} has no direct mapping: kept");
            break;
        }
        // SAFETY: pfn is ours (it came from the allocator) and is no longer mapped.
        unsafe { set_p2m(pfn, INVALID_MFN) };
        unmapped = i + 1;
    }
    let taken = super::xen_common::balloon_call(
        "XENMEM_decrease_reservation",
        &mut mfns[..unmapped],
        // SAFETY: the pages are unmapped and unused; the p2m no longer names them.
        |list| unsafe { hypercall::ops::decrease_reservation(list) },
    );
    for (&pfn, &mfn) in pfns[taken..unmapped].iter().zip(&mfns[taken..unmapped]) {
        // SAFETY: Xen kept the frame ours; it goes back where it was.
        unsafe { set_p2m(pfn, mfn) };
        // SAFETY: the direct-map slot of our own page, emptied above.
        if let Err(e) = unsafe { crate::mm::paging::map(pfn_to_virt(pfn), pfn, true) } {
            log::error!("balloon: remapping pfn {pfn:#x}: {e:?}");
        }
    }
    taken
}

/// Asks Xen for memory at our pfns `pfns` (at most [`crate::mm::balloon::BATCH`], each
/// given back before); returns how many it populated, from the start, each mapped in the
/// direct map again and in the p2m (Xen set the m2p).
pub fn populate(pfns: &[u64]) -> usize {
    let (mut frames, n) = super::xen_common::balloon_batch(pfns);
    let populated = super::xen_common::balloon_call(
        "XENMEM_populate_physmap",
        &mut frames[..n],
        hypercall::ops::populate_physmap,
    );
    for (&pfn, &mfn) in pfns[..populated].iter().zip(&frames[..populated]) {
        // SAFETY: Xen gave us `mfn` for `pfn`, which nothing maps.
        unsafe { set_p2m(pfn, mfn) };
        // SAFETY: the direct-map slot of our own page, empty since it was given back.
        if let Err(e) = unsafe { crate::mm::paging::map(pfn_to_virt(pfn), pfn, true) } {
            log::error!("balloon: mapping pfn {pfn:#x}: {e:?}");
        }
    }
    populated
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

/// The frame-list pages (pfns): the top one, then those it names.
static FRAME_LISTS: spin::Mutex<alloc::vec::Vec<u64>> = spin::Mutex::new(alloc::vec::Vec::new());

/// Tells the toolstack where our p2m is, which it needs to save us at all (`xl save` reads
/// it through shared_info's `arch.pfn_to_mfn_frame_list_list`): a top page naming the
/// frame-list pages, each naming up to 512 p2m pages, by machine frame. Called at boot and
/// after every resume in a new domain, where the machine frames are new (the toolstack
/// rewrote the p2m itself, but not the lists, which are ordinary pages to it).
pub fn publish_p2m() -> Result<(), &'static str> {
    let p2m = P2M.load(Ordering::Relaxed) as u64;
    let nr = nr_pages();
    if !p2m.is_multiple_of(PAGE_SIZE) {
        return Err("the p2m is not page-aligned");
    }
    let (leaves, lists) =
        crate::mm::p2m::tree_shape(nr).ok_or("the p2m is too large for one frame list")?;
    let mut pages = FRAME_LISTS.lock();
    if pages.len() < (1 + lists) as usize {
        // A p2m grown past what the lists can name: new ones (the old pages go back).
        for pfn in pages.drain(..) {
            let _ = crate::mm::free_frame(pfn);
        }
        let first = crate::mm::alloc_zeroed_frames(1 + lists).map_err(|_| "no memory")?;
        pages.extend(first..first + 1 + lists);
    }
    use crate::mm::p2m::ENTRIES_PER_PAGE;
    let entry = |pfn: u64, i: u64| (pfn_to_virt(pfn) + i * 8) as *mut u64;
    for leaf in 0..leaves {
        let mfn = virt_to_machine(p2m + leaf * PAGE_SIZE) / PAGE_SIZE;
        let list = pages[1 + (leaf / ENTRIES_PER_PAGE) as usize];
        // SAFETY: the frame-list pages are ours alone (allocated above, kept for good) and
        // direct-mapped; the index is below ENTRIES_PER_PAGE.
        unsafe { entry(list, leaf % ENTRIES_PER_PAGE).write_volatile(mfn) };
    }
    for (i, &list) in pages[1..].iter().enumerate() {
        // SAFETY: as above, for the top page; i < lists <= ENTRIES_PER_PAGE.
        unsafe { entry(pages[0], i as u64).write_volatile(pfn_to_mfn(list)) };
    }
    let arch =
        super::xen_common::shared_info_va() + core::mem::offset_of!(abi::shared_info, arch) as u64;
    let field = |off: usize| (arch + off as u64) as *mut u64;
    use hypercall::abi::arch_shared_info as A;
    // SAFETY: shared_info is mapped at its page for good; these fields are the guest's to
    // write (Xen only reads them), and nothing else in this kernel touches them. p2m_cr3 = 0
    // makes the toolstack walk the frame lists rather than a virtual linear p2m.
    unsafe {
        field(core::mem::offset_of!(A, p2m_cr3)).write_volatile(0);
        field(core::mem::offset_of!(A, pfn_to_mfn_frame_list_list))
            .write_volatile(pfn_to_mfn(pages[0]));
        field(core::mem::offset_of!(A, max_pfn)).write_volatile(nr);
    }
    Ok(())
}

/// The address of start_info, which a resume rewrites (and a suspend first has us make
/// pseudo-physical): its page is ours for good.
static START_INFO_VA: AtomicU64 = AtomicU64::new(0);

pub fn set_start_info(va: u64) {
    START_INFO_VA.store(va, Ordering::Relaxed);
}

fn start_info_ptr() -> *mut abi::start_info {
    START_INFO_VA.load(Ordering::Relaxed) as *mut abi::start_info
}

/// Readies the PV side for a save, with events masked; returns start_info's machine
/// frame, the suspend call's argument. What the toolstack reads must name only our own
/// frames: start_info's xenstore and console pages become pfns (the restore turns them
/// back into the new domain's frames), and shared_info, a frame of Xen's, is unmapped
/// (the page reserved for it shows our own zeroed page again, events marked masked in it).
/// The grant table's frames are [`crate::xen::gnttab::suspend`]'s.
pub fn pre_suspend() -> u64 {
    let si = start_info_ptr();
    // SAFETY: start_info is our page (set_start_info), only this code writes it, and the
    // domU console member is the one a domU has.
    unsafe {
        let store = core::ptr::addr_of_mut!((*si).store_mfn);
        store.write_volatile(mfn_to_pfn(store.read_volatile()).unwrap_or(u64::MAX));
        let console = core::ptr::addr_of_mut!((*si).console.domU.mfn);
        console.write_volatile(mfn_to_pfn(console.read_volatile()).unwrap_or(u64::MAX));
    }
    let va = super::xen_common::shared_info_va();
    // SAFETY: our own image page at its own address again: the reserved page is only ever
    // reached through atomics and volatile accesses.
    if let Err(e) = unsafe {
        hypercall::ops::update_va_mapping(
            va,
            direct_pte(super::virt_to_pfn(va), true),
            abi::UVMF_INVLPG,
        )
    } {
        crate::console::emergency(format_args!("suspend: cannot unmap shared_info: {e}\n"));
    }
    super::xen_common::vcpu().set_upcall_mask(1);
    virt_to_machine(si as u64) / PAGE_SIZE
}

/// What a resume (or a cancelled suspend) makes of start_info: where the xenstore page is,
/// and the event channels to bind again.
pub struct Resumed {
    pub store_pfn: Option<u64>,
    pub store_evtchn: u32,
    pub console_evtchn: u32,
}

/// Undoes [`pre_suspend`] after the suspend call returned, with events masked: in a new
/// domain start_info names the new frames and ports (the toolstack rewrote it) and the
/// machine frames behind our pfns are new; a cancelled suspend gets its old frames back.
/// Maps shared_info again (and re-publishes the p2m for the next save); the caller rebuilds
/// the rest.
pub fn post_suspend(new_domain: bool) -> Result<Resumed, &'static str> {
    let si = start_info_ptr();
    if new_domain {
        MAX_MFN.store(
            hypercall::ops::maximum_ram_page().map_err(|_| "XENMEM_maximum_ram_page failed")?,
            Ordering::Relaxed,
        );
    }
    // SAFETY: as in pre_suspend; the toolstack is done with the page.
    let raw = unsafe { si.read_volatile() };
    // SAFETY: the union member for a domU.
    let (console_mfn, console_evtchn) = unsafe { (raw.console.domU.mfn, raw.console.domU.evtchn) };
    let store_pfn = if new_domain {
        mfn_to_pfn(raw.store_mfn)
    } else {
        // SAFETY: as in pre_suspend.
        unsafe {
            core::ptr::addr_of_mut!((*si).store_mfn).write_volatile(pfn_to_mfn(raw.store_mfn));
            core::ptr::addr_of_mut!((*si).console.domU.mfn).write_volatile(pfn_to_mfn(console_mfn));
        }
        Some(raw.store_mfn)
    };
    set_root_table(pfn_to_mfn(super::virt_to_pfn(raw.pt_base)));
    map_shared_info(raw.shared_info).map_err(|_| "cannot map shared_info")?;
    if new_domain {
        publish_p2m()?;
        init_traps().map_err(|_| "cannot install the trap table and callbacks")?;
    }
    Ok(Resumed { store_pfn, store_evtchn: raw.store_evtchn, console_evtchn })
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

/// Our virtual IDT for Xen (`set_trap_table`, and a new vCPU's context): every exception
/// vector but NMI (delivered through a callback) at its entry stub, then the all-zero entry
/// that ends the table.
fn trap_table() -> [abi::trap_info; 32] {
    const TI_DPL3: u8 = 3;
    // Mask events on entry, like an interrupt gate; HYPERVISOR_iret restores the mask.
    const TI_MASK_EVENTS: u8 = 4;
    let stubs = super::traps::stubs(true);
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
    table
}

/// Installs the trap table and the event and failsafe callbacks.
pub fn init_traps() -> hypercall::Result<()> {
    let table = trap_table();
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

/// Starts vCPU `cpu` (`VCPUOP_initialise` with a PV context, then `VCPUOP_up`): in our
/// kernel mode on the shared page tables, with the boot vCPU's trap table and callbacks,
/// Xen's flat selectors (no GDT of our own, as on the boot vCPU), its per-CPU area as the
/// kernel GS base, at [`secondary_entry`] on its own stack.
///
/// # Safety
/// As for `pvops::start_cpu`.
pub unsafe extern "C" fn start_cpu(cpu: u32, start: *const crate::pvops::CpuStart) -> i64 {
    // SAFETY: the caller passes a valid CpuStart.
    let start = unsafe { start.read() };
    // SAFETY: vcpu_guest_context is plain integers and unions of integers: all zeros is a
    // valid value (no FPU state, no LDT, no GDT frames, no debug registers).
    let mut ctx: alloc::boxed::Box<abi::vcpu_guest_context> =
        alloc::boxed::Box::new(unsafe { core::mem::zeroed() });
    ctx.flags = abi::VGCF_in_kernel.into();
    let regs = &mut ctx.user_regs;
    regs.__bindgen_anon_8.rip = secondary_entry as *const () as u64;
    // As if called: the return address slot (zero) sits at the top.
    regs.__bindgen_anon_10.rsp = start.stack_top - 8;
    regs.__bindgen_anon_7.rdi = cpu.into();
    regs.__bindgen_anon_9.rflags = 0x202;
    regs.cs = abi::FLAT_KERNEL_CS as u16;
    regs.ss = abi::FLAT_KERNEL_SS as u16;
    for t in trap_table().into_iter().take_while(|t| t.address != 0) {
        ctx.trap_ctxt[usize::from(t.vector)] = t;
    }
    ctx.kernel_ss = abi::FLAT_KERNEL_SS.into();
    ctx.kernel_sp = start.stack_top;
    ctx.ctrlreg[3] = root_table_mfn() << 12;
    ctx.event_callback_eip = xen_event_callback as *const () as u64;
    ctx.failsafe_callback_eip = xen_failsafe_callback as *const () as u64;
    ctx.gs_base_kernel = start.percpu;
    // SAFETY: the vCPU starts on its own stack and per-CPU area, at an entry that masks its
    // events first, with the trap table, callbacks and page tables every vCPU shares.
    let started = unsafe { hypercall::ops::vcpu_initialise_pv(cpu, &ctx) }
        .and_then(|()| hypercall::ops::vcpu_up(cpu));
    match started {
        Ok(()) => 0,
        Err(e) => -i64::from(e.0),
    }
}

/// Where a secondary vCPU starts: its events masked (nothing is bound to it; the irq ops
/// address its own vcpu_info through its per-CPU area, which Xen made its GS base), then the
/// common secondary loop.
extern "C" fn secondary_entry(cpu: u64) -> ! {
    super::xen_common::this_vcpu().set_upcall_mask(1);
    crate::smp::secondary_main(cpu as usize)
}
