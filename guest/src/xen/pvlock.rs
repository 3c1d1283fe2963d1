//! PV spinlocks: under Xen the vCPU holding a lock may be descheduled, and a waiter that
//! spins on burns the physical CPU the holder may need to finish. So a waiter that has spun
//! a while blocks in `SCHEDOP_poll` on its own kick port (an IPI event channel bound to its
//! vCPU and kept masked: polled, never delivered), and the holder, letting go, kicks every
//! vCPU waiting on that lock. As Linux's `arch/x86/xen/spinlock.c`; used by
//! [`crate::sync::IrqMutex`].
//!
//! A kick can be missed when a holder lets go just as a waiter registers (the unlock is a
//! release store, not a full barrier): the poll's timeout bounds that wait.
//!
//! The same port wakes a parked vCPU ([`wait_for_kick`], [`kick_cpu`]): a kick sent before
//! the vCPU polls stays pending and ends its poll at once, so none is lost. A wake may end
//! a lock wait early and a lock's kick may wake a parked vCPU: both loops look again.

use super::evtchn::{self, Error};
use crate::smp::{self, MAX_CPUS};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use events::Port;

/// How long one poll blocks at most (see the module docs).
const POLL_TIMEOUT_NS: u64 = 1_000_000;

/// Each vCPU's kick port, `epoch << 32 | port` (0: none): a port bound in an earlier epoch
/// is gone, and its number may name another port of ours by now.
static KICK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The lock each vCPU blocks on (its address; 0: none).
static WAITING_ON: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

static BLOCKS: AtomicU64 = AtomicU64::new(0);
static KICKS: AtomicU64 = AtomicU64::new(0);

/// Binds `cpu`'s kick port, masked: at boot for each vCPU before it runs, and again in a
/// new domain after a resume.
pub fn bind(cpu: usize) -> Result<(), Error> {
    evtchn::init_vcpu(cpu as u32)?;
    let port = evtchn::bind_polled_ipi(cpu as u32)?;
    KICK[cpu].store(evtchn::epoch() << 32 | u64::from(port.0), Ordering::Release);
    Ok(())
}

/// Whether `cpu` has a kick port in this epoch.
pub fn has_kick_port(cpu: usize) -> bool {
    kick_port(cpu).is_some()
}

/// Blocks the calling vCPU, `cpu`, until its port is kicked (or was, since it last looked)
/// or `timeout_ns` passed; at once if it has no port.
pub fn wait_for_kick(cpu: usize, timeout_ns: u64) {
    let Some(port) = kick_port(cpu) else { return };
    let deadline = crate::time::xen_common::system_time_ns() + timeout_ns;
    let _ = hypercall::ops::sched_poll(&[port.0], deadline);
    // After the poll, not before: a kick sent in between would be lost, and the caller
    // looks for what it was woken for next.
    evtchn::clear_pending(port);
}

/// Kicks `cpu`'s port, if it has one.
pub fn kick_cpu(cpu: usize) {
    if let Some(port) = kick_port(cpu) {
        let _ = evtchn::send(port);
    }
}

fn kick_port(cpu: usize) -> Option<Port> {
    let v = KICK[cpu].load(Ordering::Acquire);
    (v != 0 && v >> 32 == evtchn::epoch()).then_some(Port(v as u32))
}

/// Times a vCPU blocked waiting for a lock, and kicks sent to waiting vCPUs.
pub fn stats() -> (u64, u64) {
    (BLOCKS.load(Ordering::Relaxed), KICKS.load(Ordering::Relaxed))
}

/// Takes the lock `lock` (an address naming it) with `try_lock`, blocking between tries,
/// with `waiters` counting the vCPUs that do; `None` at once where this vCPU cannot block
/// (natively, one vCPU, or no kick port yet), and the caller spins.
pub fn lock_blocking<G>(
    lock: usize,
    waiters: &AtomicU32,
    mut try_lock: impl FnMut() -> Option<G>,
) -> Option<G> {
    if !crate::pvops::is_xen() || smp::count() < 2 {
        return None;
    }
    let me = smp::current();
    let port = kick_port(me)?;
    WAITING_ON[me].store(lock, Ordering::SeqCst);
    waiters.fetch_add(1, Ordering::SeqCst);
    let guard = loop {
        // Cleared before the try: a kick after it stays pending and ends the poll at once.
        evtchn::clear_pending(port);
        if let Some(guard) = try_lock() {
            break guard;
        }
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        let deadline = crate::time::xen_common::system_time_ns() + POLL_TIMEOUT_NS;
        if hypercall::ops::sched_poll(&[port.0], deadline).is_err() {
            core::hint::spin_loop();
        }
    };
    waiters.fetch_sub(1, Ordering::SeqCst);
    WAITING_ON[me].store(0, Ordering::SeqCst);
    Some(guard)
}

/// Wakes every vCPU blocked on `lock`, which its holder just let go.
pub fn kick(lock: usize) {
    for (cpu, waiting_on) in WAITING_ON.iter().enumerate().take(smp::count()) {
        if waiting_on.load(Ordering::SeqCst) == lock {
            if let Some(port) = kick_port(cpu) {
                KICKS.fetch_add(1, Ordering::Relaxed);
                let _ = evtchn::send(port);
            }
        }
    }
}
