//! Xen's clock and timer, common to PV and PVH: the pvclock, where vcpu_time_info holds
//! (system_time, tsc_timestamp, scale) and a version that is odd while Xen rewrites it, and
//! `set_timer_op` deadlines delivered as VIRQ_TIMER.

use super::{PvClock, TscScale};
use crate::arch::cpu::rdtsc;
use core::sync::atomic::{fence, AtomicU64, Ordering};

/// The last value returned: the clock never goes backwards, even across vCPU migration
/// between pCPUs whose TSCs Xen extrapolates slightly differently.
static LAST: AtomicU64 = AtomicU64::new(0);

/// One consistent copy of the calling vCPU's vcpu_time_info: Xen keeps each vCPU's for the
/// physical CPU it runs on, and Linux reads its own too. The boot vCPU's while it runs alone
/// (early on, `gs:` names no per-CPU area yet).
pub fn snapshot() -> PvClock {
    use crate::arch::xen_common::{this_vcpu, vcpu};
    snapshot_of(if crate::smp::count() > 1 { this_vcpu() } else { vcpu() })
}

/// One consistent copy of `vcpu`'s vcpu_time_info.
pub fn snapshot_of(vcpu: crate::arch::xen_common::Vcpu) -> PvClock {
    let t = vcpu.time_info();
    loop {
        // SAFETY: `t` points into a vcpu_info, mapped for good (shared_info's page or a
        // per-CPU area); every field is read with a volatile load because Xen rewrites
        // them under the version protocol.
        unsafe {
            let version = core::ptr::addr_of!((*t).version).read_volatile();
            fence(Ordering::Acquire);
            let snap = PvClock {
                tsc_timestamp: core::ptr::addr_of!((*t).tsc_timestamp).read_volatile(),
                system_time: core::ptr::addr_of!((*t).system_time).read_volatile(),
                scale: TscScale {
                    mul_frac: core::ptr::addr_of!((*t).tsc_to_system_mul).read_volatile(),
                    shift: core::ptr::addr_of!((*t).tsc_shift).read_volatile(),
                },
            };
            fence(Ordering::Acquire);
            let again = core::ptr::addr_of!((*t).version).read_volatile();
            if version & 1 == 0 && version == again {
                return snap;
            }
        }
        core::hint::spin_loop();
    }
}

/// Xen system time (ns since the host booted): the hypervisor's own timers use it.
pub fn system_time_ns() -> u64 {
    snapshot().ns_at(rdtsc())
}

/// Our clock minus Xen's system time (wrapping): 0 until a resume. Xen's system time jumps
/// at a resume (by the time the domain was paused, or to another host's uptime after a
/// migration, which may be smaller); the offset makes our clock go on from where it stood
/// when we suspended, so every deadline keeps its distance: none fires early, none is lost.
/// (Like Linux's CLOCK_MONOTONIC, it does not count the time spent suspended.)
static OFFSET: AtomicU64 = AtomicU64::new(0);

pub extern "C" fn clock_ns() -> u64 {
    let now = system_time_ns().wrapping_add(OFFSET.load(Ordering::Relaxed));
    let last = LAST.fetch_max(now, Ordering::Relaxed);
    now.max(last)
}

/// Makes our clock go on from `at_suspend`, what [`clock_ns`] read just before the suspend
/// (see [`OFFSET`]). Called with events masked, before anything reads the clock after the
/// resume.
pub fn resume_clock(at_suspend: u64) {
    OFFSET.store(at_suspend.wrapping_sub(system_time_ns()), Ordering::Relaxed);
}

/// Says how Xen serves RDTSC to us (CPUID leaf base + 3, sub-leaf 0): emulated, each read of
/// the clock costs a VM exit or a trap. Xen's default emulates it on a host whose TSC it does
/// not trust (QEMU's TCG, say); `tsc_mode = "native"` in the xl config avoids that, and the
/// pvclock keeps time right across a migration either way.
pub fn report_tsc_mode() {
    let Some(base) = crate::arch::cpu::find_xen_leaves(crate::pvops::cpuid) else { return };
    if crate::pvops::cpuid(base, 0).eax < base + 3 {
        return;
    }
    let leaf = crate::pvops::cpuid(base + 3, 0);
    let mode = match leaf.ebx {
        0 => "default",
        1 => "always_emulate",
        2 => "native",
        3 => "native_paravirt",
        _ => "unknown",
    };
    let how = if leaf.eax & 1 != 0 { "emulated by Xen" } else { "native" };
    log::info!("time: RDTSC {how} (tsc_mode {mode}, {} kHz)", leaf.ecx);
}

/// The VIRQ_TIMER port (0 before `init_timer`).
static TIMER_PORT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// VIRQ_TIMER events handled so far.
static TIMER_EVENTS: AtomicU64 = AtomicU64::new(0);

pub fn timer_events() -> u64 {
    TIMER_EVENTS.load(Ordering::SeqCst)
}

fn on_timer(_: events::Port, _: usize) {
    TIMER_EVENTS.fetch_add(1, Ordering::SeqCst);
    super::expire();
}

/// Binds VIRQ_TIMER so that `set_timer_op` deadlines run the timer queue.
pub fn init_timer() -> Result<events::Port, crate::xen::evtchn::Error> {
    let port = crate::xen::evtchn::bind_virq(hypercall::abi::VIRQ_TIMER, on_timer, 0)?;
    TIMER_PORT.store(port.0, Ordering::Relaxed);
    Ok(port)
}

pub fn timer_port() -> events::Port {
    events::Port(TIMER_PORT.load(Ordering::Relaxed))
}

/// `set_timer_op` takes Xen's system time: our clock less [`OFFSET`].
pub extern "C" fn set_timer(deadline_ns: u64) {
    let xen_deadline = deadline_ns.wrapping_sub(OFFSET.load(Ordering::Relaxed));
    // 0 would cancel the timer rather than fire it at once; a deadline from before Xen's
    // epoch (after a resume on a younger host) is due now.
    let xen_deadline = if xen_deadline > i64::MAX as u64 { 1 } else { xen_deadline.max(1) };
    if let Err(e) = hypercall::ops::set_timer(xen_deadline) {
        log::error!("set_timer_op({deadline_ns}) failed: {e}");
    }
}
