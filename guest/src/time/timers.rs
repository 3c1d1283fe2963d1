//! Timers on top of pv_ops' one-shot `set_timer`: the queue, the expiry path the timer
//! interrupt runs (VIRQ_TIMER under Xen, IRQ 0 natively), sleeping and waiting with a timeout.

use super::queue::{Callback, TimerId, TimerQueue};
use crate::pvops;
use crate::sync::IrqMutex;
use core::sync::atomic::{AtomicBool, Ordering};

static QUEUE: IrqMutex<TimerQueue> = IrqMutex::new(TimerQueue::new());

/// Runs `callback(ctx)` from the timer interrupt once the clock reaches `deadline_ns`
/// (never before it).
pub fn add(deadline_ns: u64, callback: Callback, ctx: usize) -> TimerId {
    let mut queue = QUEUE.lock();
    let id = queue.add(deadline_ns, callback, ctx);
    if queue.next_deadline() == Some(deadline_ns) {
        pvops::set_timer(deadline_ns);
    }
    id
}

/// Removes a timer that has not fired. The hardware timer may stay armed: when it fires,
/// `expire` finds nothing due and re-arms for whatever is next.
pub fn cancel(id: TimerId) -> bool {
    QUEUE.lock().cancel(id)
}

/// Runs every expired timer, then arms the hardware for the next one. The timer interrupt
/// calls this with interrupts disabled.
pub fn expire() {
    loop {
        let due = {
            let mut queue = QUEUE.lock();
            match queue.pop_expired(pvops::clock_ns()) {
                Some(timer) => Ok(timer),
                None => Err(queue.next_deadline()),
            }
        };
        match due {
            // Called without the queue locked, so a callback may add timers.
            Ok((callback, ctx)) => callback(ctx),
            Err(next) => {
                if let Some(deadline) = next {
                    // Also covers an interrupt that came early by the clock: re-arm.
                    pvops::set_timer(deadline);
                }
                return;
            }
        }
    }
}

fn set_flag(ctx: usize) {
    // SAFETY: `wait_until` passes the address of its own flag and cancels this timer
    // before the flag goes out of scope, so the pointer is live whenever this runs.
    unsafe { &*(ctx as *const AtomicBool) }.store(true, Ordering::SeqCst);
}

/// Idles until `done()` holds or the clock reaches `deadline_ns`; returns `done()`'s last
/// answer. `done` is checked with interrupts disabled, then the CPU waits with them enabled
/// atomically (SCHEDOP_block, `sti; hlt`), so no wake-up between the check and the wait
/// is lost. Interrupts are enabled while waiting, whatever the caller had.
pub fn wait_until(mut done: impl FnMut() -> bool, deadline_ns: u64) -> bool {
    let expired = AtomicBool::new(false);
    let timer = add(deadline_ns, set_flag, &expired as *const AtomicBool as usize);
    let saved = pvops::save_fl();
    let result = loop {
        pvops::irq_disable();
        if done() {
            break true;
        }
        if expired.load(Ordering::SeqCst) || pvops::clock_ns() >= deadline_ns {
            break false;
        }
        pvops::idle();
    };
    pvops::restore_fl(saved);
    cancel(timer);
    result
}

/// Sleeps at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let deadline = pvops::clock_ns().saturating_add(ns);
    wait_until(|| false, deadline);
}

/// The clock when the kernel proper started (Xen's clock counts from the host's boot).
static BOOT_NS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Marks the start of the kernel proper, for [`uptime_ns`].
pub fn mark_boot() {
    BOOT_NS.store(pvops::clock_ns(), Ordering::Relaxed);
}

/// Nanoseconds since [`mark_boot`].
pub fn uptime_ns() -> u64 {
    pvops::clock_ns().saturating_sub(BOOT_NS.load(Ordering::Relaxed))
}
