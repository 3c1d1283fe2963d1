//! What both Xen platforms share at this level: the shared_info page (PV maps it, PVH
//! places it), each vCPU's vcpu_info (in its per-CPU area once Xen agreed to keep it there,
//! else its slot of shared_info), the 2-level event view, the event upcall, and shutdown.
//! Named for serving PV and PVH alike, beside xen_pv and xen_pvh.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use hypercall::abi;
use hypercall::Errno;

extern "C" {
    static xen_shared_info_page: [u8; 4096];
}

/// The image page shared_info appears at, on both Xen platforms (PV maps it there, PVH
/// places it there in its physical address space).
pub(crate) fn shared_info_va() -> u64 {
    core::ptr::addr_of!(xen_shared_info_page) as u64
}

/// A vCPU's `vcpu_info`, read and written atomically because Xen updates it concurrently.
#[derive(Clone, Copy)]
pub struct Vcpu(u64);

/// The boot vCPU's `vcpu_info`, wherever it is now: the event ABIs and the clock read it.
pub fn vcpu() -> Vcpu {
    Vcpu(match crate::smp::vcpu_info_of(0) {
        // Before the boot CPU's area is filled: where Xen starts it.
        0 => shared_info_va(),
        va => va,
    })
}

/// vCPU `cpu`'s slot of shared_info, where Xen keeps its `vcpu_info` unless told otherwise:
/// the first 32 vCPUs have one.
pub fn vcpu_info_slot(cpu: usize) -> Option<u64> {
    (cpu < abi::XEN_LEGACY_MAX_VCPUS as usize)
        .then(|| shared_info_va() + (cpu * core::mem::size_of::<abi::vcpu_info>()) as u64)
}

/// Whether Xen keeps the vCPUs' `vcpu_info` in their per-CPU areas (it took the boot
/// vCPU's), so that `%gs:` reaches each one's own: the patcher's Xen PV inline irq ops.
pub fn vcpu_info_at_gs() -> bool {
    crate::pvops::is_xen() && crate::smp::vcpu_info_of(0) == crate::smp::vcpu_info_area(0)
}

/// Has Xen keep `cpu`'s `vcpu_info` in its per-CPU area (`VCPUOP_register_vcpu_info`), as
/// Linux does: vCPUs past shared_info's 32 slots need it, and each vCPU's own is then at a
/// fixed offset from its `gs:` base. Once per vCPU and domain, by the vCPU itself or while
/// it is down: the boot vCPU at boot and again in a new domain after a resume, each other
/// one before it starts. Where Xen refuses the boot vCPU's, every vCPU keeps its shared_info
/// slot (past 32, it cannot run); where it refuses another's after taking the boot vCPU's,
/// that one cannot run.
pub fn place_vcpu_info(cpu: usize) -> Result<(), Errno> {
    let area = crate::smp::vcpu_info_area(cpu);
    let frame = crate::pvops::pfn_to_frame(super::virt_to_pfn(area));
    let offset = (area % super::PAGE_SIZE) as u32;
    // SAFETY: the area is 64 bytes of the image set aside for this vCPU's vcpu_info for
    // good, 64-aligned (so within a page), and the guest reaches them only as a `Vcpu`.
    match unsafe { hypercall::ops::vcpu_register_vcpu_info(cpu as u32, frame, offset) } {
        Ok(()) => {
            if cpu == 0 {
                log::info!(
                    "smp: vcpu_info in each vCPU's per-CPU area (VCPUOP_register_vcpu_info)"
                );
            }
            crate::smp::set_vcpu_info(cpu, area);
            Ok(())
        }
        Err(e) => {
            // With the boot vCPU's placed, the irq ops may address vcpu_info through %gs:
            // (inline), so every vCPU must have its own there.
            if cpu != 0 && vcpu_info_at_gs() {
                return Err(e);
            }
            let slot = vcpu_info_slot(cpu).ok_or(e)?;
            static SAID: core::sync::atomic::AtomicBool =
                core::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "smp: VCPUOP_register_vcpu_info of vCPU {cpu}: {e}; vCPUs keep their \
                     vcpu_info in shared_info, and at most 32 run"
                );
            }
            crate::smp::set_vcpu_info(cpu, slot);
            Ok(())
        }
    }
}

/// The calling vCPU's `vcpu_info`, through its per-CPU area.
#[inline(always)]
pub fn this_vcpu() -> Vcpu {
    Vcpu(crate::smp::vcpu_info())
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
    // mapped for good, and so is vcpu 0's vcpu_info (its per-CPU area, or its slot of
    // shared_info); their event fields are only accessed atomically in this kernel.
    unsafe {
        events::TwoLevel::new(
            core::ptr::NonNull::new_unchecked(si as *mut abi::shared_info),
            core::ptr::NonNull::new_unchecked(vcpu().as_ptr()),
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

/// vCPUs of this domain: `VCPUOP_is_up` answers for each one that exists (the toolstack's
/// `maxvcpus`), up or not.
pub extern "C" fn cpu_count() -> u32 {
    let max = crate::smp::MAX_CPUS as u32;
    let n = (0..max).take_while(|&cpu| hypercall::ops::vcpu_is_up(cpu).is_ok()).count() as u32;
    if n == max && hypercall::ops::vcpu_is_up(max).is_ok() {
        log::warn!("smp: the toolstack gave more than {max} vCPUs; {max} run (smp::MAX_CPUS)");
    }
    n
}

/// Each vCPU blocked in [`park_cpu`]'s poll.
static POLL_PARKED: [core::sync::atomic::AtomicBool; crate::smp::MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; crate::smp::MAX_CPUS];

/// How long a parked vCPU polls before it looks again on its own.
const PARK_POLL_NS: u64 = 1_000_000_000;

/// Parks the calling vCPU until [`wake_cpu`]. One in service blocks in `SCHEDOP_poll` on
/// its kick port (the toolstack sees it running, blocked, as Linux's idle vCPUs are); one
/// the toolstack took out of service, one about to be saved, and one without a kick port go
/// down (`VCPUOP_down`) until `VCPUOP_up`. Either way it may return early, and the caller's
/// loop looks again.
pub extern "C" fn park_cpu(cpu: u32) {
    use crate::xen::pvlock;
    let c = cpu as usize;
    // The port is looked for first: a vCPU that said it was parked up must be one a kick
    // wakes (wake_cpu kicks a vCPU that is up).
    if crate::smp::in_service(c) && !crate::smp::parking_down() && pvlock::has_kick_port(c) {
        POLL_PARKED[c].store(true, Ordering::SeqCst);
        // Events bound to this vCPU are delivered while it waits: one ends the poll, and
        // its upcall runs here before the poll returns.
        crate::pvops::irq_enable();
        pvlock::wait_for_kick(c, PARK_POLL_NS);
        crate::pvops::irq_disable();
        POLL_PARKED[c].store(false, Ordering::SeqCst);
        return;
    }
    // Events still queued for this vCPU (FIFO: a port moved away stays on the queue it was
    // linked on) are handled before it goes, or they would wait, linked, until it is back.
    crate::xen::evtchn::dispatch_pending();
    if let Err(e) = hypercall::ops::vcpu_down(cpu) {
        static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            log::error!("smp: VCPUOP_down of vcpu {cpu}: {e}");
        }
    }
}

/// Wakes parked `cpu`: a kick if it is up (polling, or about to: the kick waits for it; a
/// vCPU without a kick port is never parked up), else `VCPUOP_up`.
pub extern "C" fn wake_cpu(cpu: u32) {
    if matches!(hypercall::ops::vcpu_is_up(cpu), Ok(true)) {
        crate::xen::pvlock::kick_cpu(cpu as usize);
    } else if let Err(e) = hypercall::ops::vcpu_up(cpu) {
        log::error!("smp: VCPUOP_up of vcpu {cpu}: {e}");
    }
}

/// Whether `cpu` is parked: polling, or down.
pub extern "C" fn cpu_parked(cpu: u32) -> bool {
    POLL_PARKED[cpu as usize].load(Ordering::SeqCst) || cpu_down(cpu)
}

/// Whether `cpu` is down as Xen sees it.
pub fn cpu_down(cpu: u32) -> bool {
    !matches!(hypercall::ops::vcpu_is_up(cpu), Ok(true))
}

/// One balloon batch's frame list: `pfns` (at most [`crate::mm::balloon::BATCH`]) copied,
/// for a XENMEM reservation call to read (and a PV populate to overwrite with machine
/// frames), and how many there are.
pub fn balloon_batch(pfns: &[u64]) -> ([u64; crate::mm::balloon::BATCH], usize) {
    let mut frames = [0u64; crate::mm::balloon::BATCH];
    let n = pfns.len().min(frames.len());
    frames[..n].copy_from_slice(&pfns[..n]);
    (frames, n)
}

/// How many frames, from the start of `list`, the XENMEM reservation call `op` (named `what`)
/// did: never more than the list, none if the call failed, which is said.
pub fn balloon_call(
    what: &str,
    list: &mut [u64],
    op: impl FnOnce(&mut [u64]) -> hypercall::Result<u64>,
) -> usize {
    match op(list) {
        Ok(k) => (k as usize).min(list.len()),
        Err(e) => {
            log::error!("balloon: {what}: {e}");
            0
        }
    }
}
