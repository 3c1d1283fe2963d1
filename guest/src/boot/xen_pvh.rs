//! The Xen PVH boot path: the PVH entry found Xen's CPUID leaves. The guest runs in ring 0
//! of an HVM container on its own page tables, and sets up each Xen service itself.

use super::{boot_failed, pvh, start_xen_services};
use crate::arch::{native, xen_pvh};
use crate::pvops::{self, Backend};
use hypercall::abi;

/// Slots of the special mapping range.
pub const CONSOLE_SLOT: u64 = 0;
pub const XENSTORE_SLOT: u64 = 1;

pub fn start(start_info_paddr: u64, cpuid_base: u32) -> ! {
    xen_pvh::init_hypercall_page(cpuid_base);
    // SAFETY: first thing at boot, on the one vCPU, and Xen's CPUID leaves say we are a
    // Xen HVM container entered through the PVH entry.
    unsafe { pvops::install(Backend::XenPvh, crate::arch::xen_pvh::ops::OPS) };
    crate::smp::init_boot_cpu();
    native::init_idt(Some((xen_pvh::CALLBACK_VECTOR, xen_pvh::callback_stub())));
    native::drop_identity_map();
    crate::console::init_xen_debug_port();

    if let Err(e) = xen_pvh::map_shared_info() {
        boot_failed(format_args!("placing shared_info: {e}"));
    }
    let si = pvh::read_start_info(start_info_paddr)
        .unwrap_or_else(|why| boot_failed(format_args!("{why}")));
    let options = super::options();
    crate::console::init_logger(options.log);
    if let Err(why) = pvh::init_memory(&si) {
        boot_failed(format_args!("{why}"));
    }
    match xen_pvh::ring_page(
        abi::HVM_PARAM_CONSOLE_PFN,
        abi::HVM_PARAM_CONSOLE_EVTCHN,
        CONSOLE_SLOT,
    ) {
        // SAFETY: the toolstack's console page, mapped for good in its own slot and shared
        // only with the console backend.
        Ok((page, port)) => unsafe { crate::console::init_xen_ring(page, port) },
        Err(e) => boot_failed(format_args!("console page: {e}")),
    }
    log::info!("Xen PVH boot: {} MiB of RAM", pvh::boot_info().map_or(0, |b| b.ram_bytes >> 20));

    if let Err(e) = xen_pvh::enable_callback_vector() {
        boot_failed(format_args!("HVM_PARAM_CALLBACK_IRQ: {e}"));
    }
    let (page, port) = match xen_pvh::ring_page(
        abi::HVM_PARAM_STORE_PFN,
        abi::HVM_PARAM_STORE_EVTCHN,
        XENSTORE_SLOT,
    ) {
        Ok(ring) => ring,
        Err(e) => boot_failed(format_args!("xenstore page: {e}")),
    };
    // SAFETY: the toolstack's xenstore page, mapped for good in its own slot and shared
    // only with xenstored; the IDT, the callback vector and memory are set.
    unsafe { start_xen_services(options, page, port) }
}
