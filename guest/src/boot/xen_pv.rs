//! The Xen PV boot path: `startup_xen` lands here with start_info, the hypercall page
//! filled and a bootstrap mapping of the first few MiB.

use super::{boot_failed, start_xen_services};
use crate::arch::{self, pfn_to_virt, virt_to_pfn, xen_pv, DIRECT_MAP_PAGES, PAGE_SIZE};
use crate::mm::{self, paging};
use crate::pvops::{self, Backend};
use hypercall::abi::{self, start_info};
use spin::Once;

/// What start_info said at boot, kept for the self-tests and the log.
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    pub magic: [u8; 32],
    pub nr_pages: u64,
    pub shared_info_maddr: u64,
    pub flags: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    pub mfn_list: u64,
    /// The first pfn after everything the domain builder placed.
    pub first_free_pfn: u64,
}

static START_INFO: Once<StartInfo> = Once::new();

pub fn start_info() -> Option<&'static StartInfo> {
    START_INFO.get()
}

#[no_mangle]
extern "C" fn xen_pv_start(si: *const start_info) -> ! {
    extern "C" {
        static hypercall_page: u8;
    }
    // SAFETY: Xen filled the page named by our HYPERCALL_PAGE note before entering us.
    unsafe { hypercall::init(core::ptr::addr_of!(hypercall_page)) };
    // SAFETY: first thing at boot, on the one vCPU, and we are a PV guest (startup_xen).
    unsafe { pvops::install(Backend::XenPv, crate::arch::xen_pv::ops::OPS) };
    crate::smp::init_boot_cpu();
    // No upcall until the callbacks, the event ABI and the handlers are in place;
    // kernel_main enables events.
    pvops::irq_disable();

    // SAFETY: Xen passes start_info in rsi, inside the bootstrap mapping, in our own memory.
    let raw = unsafe { si.read() };
    xen_pv::set_start_info(si as u64);
    // SAFETY: the union member for a domU; dom0's is checked by flags before use.
    let (console_mfn, console_evtchn) = unsafe { (raw.console.domU.mfn, raw.console.domU.evtchn) };
    let info = START_INFO.call_once(|| StartInfo {
        magic: raw.magic.map(|c| c as u8),
        nr_pages: raw.nr_pages,
        shared_info_maddr: raw.shared_info,
        flags: raw.flags,
        store_mfn: raw.store_mfn,
        store_evtchn: raw.store_evtchn,
        console_mfn,
        console_evtchn,
        pt_base: raw.pt_base,
        nr_pt_frames: raw.nr_pt_frames,
        mfn_list: raw.mfn_list,
        first_free_pfn: virt_to_pfn(raw.pt_base) + raw.nr_pt_frames,
    });
    if !info.magic.starts_with(abi::START_INFO_MAGIC) {
        // No console yet to say why; the crash itself is the message.
        pvops::shutdown(pvops::Halt::Failure);
    }

    let max_mfn = hypercall::ops::maximum_ram_page()
        .unwrap_or_else(|_| pvops::shutdown(pvops::Halt::Failure));
    // SAFETY: mfn_list is start_info's p2m of nr_pages entries, inside the bootstrap mapping
    // that we never tear down.
    unsafe { xen_pv::init_memory(info.mfn_list as *mut u64, info.nr_pages, max_mfn) };
    xen_pv::set_root_table(xen_pv::pfn_to_mfn(virt_to_pfn(info.pt_base)));
    if xen_pv::map_shared_info(info.shared_info_maddr).is_err() {
        pvops::shutdown(pvops::Halt::Failure);
    }

    if info.flags & abi::SIF_INITDOMAIN != 0 {
        crate::console::init_xen_dom0();
    } else {
        let Some(pfn) = xen_pv::mfn_to_pfn(info.console_mfn) else {
            pvops::shutdown(pvops::Halt::Failure)
        };
        // SAFETY: the console page is ours (its mfn maps back to our pfn), inside the
        // bootstrap mapping, and shared only with the console backend.
        unsafe { crate::console::init_xen_ring(pfn_to_virt(pfn) as *mut u8, info.console_evtchn) };
    }

    super::save_cmdline(&raw.cmd_line.map(|c| c as u8));
    let options = super::options();
    crate::console::init_logger(options.log);
    log::info!(
        "Xen PV boot: {} pages, start_info magic '{}'",
        info.nr_pages,
        core::str::from_utf8(&info.magic).unwrap_or("?").trim_end_matches('\0')
    );

    let clock = crate::time::xen_common::snapshot();
    log::debug!(
        "pvclock: system_time {} ns at tsc {}, scale {:?}; tsc now {}",
        clock.system_time,
        clock.tsc_timestamp,
        clock.scale,
        crate::arch::cpu::rdtsc()
    );
    if let Err(e) = xen_pv::init_traps() {
        boot_failed(format_args!("trap table / callbacks: {e}"));
    }
    if let Err(why) = setup_memory(info) {
        boot_failed(format_args!("{why}"));
    }
    // Without it the toolstack cannot save us; everything else works.
    if let Err(why) = xen_pv::publish_p2m() {
        log::error!("p2m not published, so `xl save` cannot work: {why}");
    }
    let Some(store_pfn) = xen_pv::mfn_to_pfn(info.store_mfn) else {
        boot_failed(format_args!("xenstore mfn {:#x} is not ours", info.store_mfn))
    };
    // SAFETY: the xenstore page is ours (its mfn maps back to our pfn), inside the
    // bootstrap mapping, and shared only with xenstored; traps, callbacks and memory are set.
    unsafe { start_xen_services(options, pfn_to_virt(store_pfn) as *mut u8, info.store_evtchn) }
}

/// Frame allocator, direct map of all our memory, heap.
fn setup_memory(info: &StartInfo) -> Result<(), &'static str> {
    let nr = info.nr_pages.min(DIRECT_MAP_PAGES);
    if nr < info.nr_pages {
        log::warn!("only the first {} of {} pages fit the direct map", nr, info.nr_pages);
    }
    mm::init_frames(nr);

    // The bootstrap mapping covers the image, the domain builder's pages and some slack:
    // everything after the page tables that it maps is ours to use.
    let mut mapped_end = info.first_free_pfn;
    while mapped_end < nr && paging::translate(pfn_to_virt(mapped_end)).is_ok() {
        mapped_end += 1;
    }
    mm::add_free_frames(info.first_free_pfn, mapped_end);
    let (image_start, _) = arch::image_pfns();
    for pfn in 0..image_start {
        if paging::translate(pfn_to_virt(pfn)).is_ok() {
            mm::add_free_frames(pfn, pfn + 1);
        }
    }
    log::debug!("bootstrap mapping ends at pfn {mapped_end:#x}; mapping up to {nr:#x}");
    extend_direct_map(mapped_end, nr)?;
    let heap = mm::init_heap(crate::mm::BOOT_HEAP_MAX).map_err(|_| "no memory for the heap")?;
    log::debug!("heap: {} KiB", heap / 1024);
    Ok(())
}

/// Maps pfns `[from, to)` into the direct map and gives them to the frame allocator.
///
/// Whole 2 MiB blocks get an L1 table filled while it is still an ordinary page, then made
/// read-only and hooked in: two hypercalls per 2 MiB instead of one per page.
fn extend_direct_map(from: u64, to: u64) -> Result<(), &'static str> {
    const L1_PAGES: u64 = 512;
    let mut pfn = from;
    while pfn < to {
        let va = pfn_to_virt(pfn);
        let l2e = paging::entry(va, 2, true).map_err(|_| "cannot build direct-map tables")?;
        // SAFETY: reading an entry of a live table.
        let l2_present = unsafe { l2e.read_volatile() } & paging::PTE_PRESENT != 0;
        if !pfn.is_multiple_of(L1_PAGES) || l2_present {
            // SAFETY: the direct-map address of our own, so far unmapped, page.
            unsafe { paging::map(va, pfn, true) }.map_err(|_| "cannot map a page")?;
            mm::add_free_frames(pfn, pfn + 1);
            pfn += 1;
            continue;
        }
        let table = mm::alloc_frame().map_err(|_| "no memory for page tables")?;
        let entries = pfn_to_virt(table) as *mut u64;
        for i in 0..L1_PAGES {
            let p = pfn + i;
            let val = if p < to { xen_pv::direct_pte(p, true) } else { 0 };
            // SAFETY: `table` is a fresh frame of ours, still an ordinary writable page.
            unsafe { entries.add(i as usize).write(val) };
        }
        // SAFETY: the page is filled and referenced by nothing; the L2 slot is empty, so
        // hooking the table in only adds mappings of our own, so far unmapped, pages.
        unsafe {
            pvops::make_table(table);
            pvops::set_pte(
                l2e,
                (xen_pv::pfn_to_mfn(table) * PAGE_SIZE)
                    | paging::PTE_PRESENT
                    | paging::PTE_WRITABLE,
            );
        }
        let end = (pfn + L1_PAGES).min(to);
        mm::add_free_frames(pfn, end);
        pfn = end;
    }
    Ok(())
}
