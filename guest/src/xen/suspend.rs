//! Suspend and resume (Xen only): what `xl save`, `xl save -c` and `xl migrate` ask of the
//! guest through `control/shutdown = suspend`, done as Linux's `drivers/xen/manage.c` and
//! `arch/x86/xen/suspend.c` do it. With events masked the platform undoes what a save must
//! not see, `SCHEDOP_shutdown(SHUTDOWN_suspend)` hands the domain to the toolstack, and the
//! call returns either in the same domain (a checkpoint, or a save that failed: everything
//! is as it was) or in a new one (a restore or a migration: every event channel, the grant
//! table's entries, xenstore's watches and the backends are gone, and machine frames have
//! changed). The clock goes on from where it stood (see `time::xen_common::resume_clock`).

use super::{evtchn, gnttab, xenstore};
use crate::{pvops, time};
use core::sync::atomic::{AtomicU64, Ordering};
use hypercall::ops::Resumed;

/// Resumes so far, in a new domain and cancelled.
static NEW_DOMAIN: AtomicU64 = AtomicU64::new(0);
static CANCELLED: AtomicU64 = AtomicU64::new(0);

/// (resumes in a new domain, cancelled suspends) since boot.
pub fn resumes() -> (u64, u64) {
    (NEW_DOMAIN.load(Ordering::SeqCst), CANCELLED.load(Ordering::SeqCst))
}

/// Suspends the domain for the toolstack and returns once it runs again, everything Xen
/// carries over nothing of rebuilt, the network reconnected; returns whether this is a new
/// domain, where a disk's holder must [`crate::blk::resume`] it. Called between requests
/// (no xenstore call, no device I/O in progress). A failure to rebuild after a resume
/// leaves a guest that cannot reach its console, xenstore or devices: it says so and stops
/// as crashed.
pub fn suspend() -> bool {
    log::info!("suspend: going down for the toolstack");
    crate::console::drain(2_000_000_000);
    crate::smp::park_others_for_suspend();
    pvops::irq_disable();
    let clock = time::xen_common::clock_ns();
    let frame = if pvops::is_xen_pv() {
        gnttab::suspend();
        crate::arch::xen_pv::pre_suspend()
    } else {
        0
    };
    // SAFETY: events are masked; under PV the grant table and shared_info are unmapped and
    // start_info's frames made pseudo-physical just above.
    let outcome = unsafe { hypercall::ops::suspend(frame) };
    crate::smp::end_parking_down();
    let new_domain = matches!(outcome, Ok(Resumed::NewDomain));
    let ports = platform_resume(new_domain).unwrap_or_else(|why| broken(format_args!("{why}")));
    if new_domain {
        // A new domain keeps vcpu_info in shared_info until told again; before the clock
        // and the event ABI read it. Still masked: Xen copies in whatever the slot held.
        if let Err(e) = crate::arch::xen_common::place_vcpu_info(0) {
            broken(format_args!("the boot vCPU's vcpu_info: {e}"));
        }
        pvops::irq_disable();
    }
    // Nothing reads the clock before this (the console below stamps nothing).
    time::xen_common::resume_clock(clock);
    if let Some((console_port, _)) = ports {
        crate::console::resume_xen_ring(console_port);
    }
    if new_domain {
        if let Err(e) = evtchn::resume_new_domain() {
            broken(format_args!("event channels: {e}"));
        }
        if let Err(e) = time::xen_common::init_timer() {
            broken(format_args!("binding VIRQ_TIMER: {e}"));
        }
    }
    if let Err(e) = gnttab::resume(new_domain) {
        broken(format_args!("grant table: {e:?}"));
    }
    time::rearm();
    pvops::irq_enable();
    if new_domain {
        crate::smp::restart_after_resume();
    }
    if let Err(e) = outcome {
        log::error!("suspend: SCHEDOP_shutdown(suspend) failed: {e}; carrying on");
    }
    if let Some((_, store_port)) = ports {
        if let Err(e) = xenstore::resume(store_port) {
            broken(format_args!("xenstore: {e}"));
        }
    }
    let (counter, what) = if new_domain {
        (&NEW_DOMAIN, "in a new domain")
    } else {
        (&CANCELLED, "cancelled (same domain)")
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let (new, cancelled) = resumes();
    crate::println!("control: resumed {what}: resumes={new} cancelled={cancelled}");
    publish_counts(new, cancelled);
    if new_domain {
        // The toolstack made our xenstore directory afresh.
        if let Some(result) = super::control::result() {
            super::control::publish_result(result);
        }
        crate::net::resume();
    }
    new_domain
}

/// The toolstack can read how often we were resumed (`xenstore-read
/// /local/domain/<id>/data/resumes`): "<new domain> <cancelled>".
fn publish_counts(new: u64, cancelled: u64) {
    let text = alloc::format!("{new} {cancelled}");
    if let Some(Err(e)) =
        xenstore::with(|xs| xenbus::Store::write(xs, "data/resumes", text.as_bytes()))
    {
        log::warn!("cannot publish the resume count: {e}");
    }
}

/// The platform's half of the resume, events masked: shared_info (and, PV, start_info and
/// the p2m; PVH, the hypercall page and the upcall vector). In a new domain, the console
/// and xenstore ports to bind again.
fn platform_resume(new_domain: bool) -> Result<Option<(u32, u32)>, &'static str> {
    if pvops::is_xen_pv() {
        let r = crate::arch::xen_pv::post_suspend(new_domain)?;
        if !new_domain {
            return Ok(None);
        }
        // The toolstack keeps both pages at their pfns; only their machine frames change.
        let va = r.store_pfn.map(crate::arch::pfn_to_virt);
        if va != Some(xenstore::page_va()) {
            return Err("the xenstore page moved");
        }
        return Ok(Some((r.console_evtchn, r.store_evtchn)));
    }
    use crate::arch::xen_pvh;
    use crate::boot::xen_pvh::{CONSOLE_SLOT, XENSTORE_SLOT};
    use hypercall::abi;
    xen_pvh::post_suspend(new_domain).map_err(|_| "placing shared_info again")?;
    if !new_domain {
        return Ok(None);
    }
    let console = xen_pvh::ring_port_after_resume(
        abi::HVM_PARAM_CONSOLE_PFN,
        abi::HVM_PARAM_CONSOLE_EVTCHN,
        CONSOLE_SLOT,
    )
    .map_err(|_| "the console page after the resume")?;
    let store = xen_pvh::ring_port_after_resume(
        abi::HVM_PARAM_STORE_PFN,
        abi::HVM_PARAM_STORE_EVTCHN,
        XENSTORE_SLOT,
    )
    .map_err(|_| "the xenstore page after the resume")?;
    Ok(Some((console, store)))
}

/// A resume that cannot be completed: say why on whatever console there is, stop crashed.
fn broken(why: core::fmt::Arguments<'_>) -> ! {
    crate::console::emergency(format_args!("resume failed: {why}\n"));
    pvops::shutdown(pvops::Halt::Failure)
}
