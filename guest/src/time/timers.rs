//! Timers on top of pv_ops' one-shot `set_timer`: the queue, the expiry path the timer
//! interrupt runs (VIRQ_TIMER under Xen, IRQ 0 natively), sleeping and waiting with a timeout.

use super::queue::{Callback, TimerId, TimerQueue};
use crate::pvops;
use crate::sync::IrqMutex;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// Arms the hardware timer for the earliest deadline again: after a resume in a new domain
/// Xen has forgotten the one it had (and the timer's port, which the caller bound again).
pub fn rearm() {
    if let Some(deadline) = QUEUE.lock().next_deadline() {
        pvops::set_timer(deadline);
    }
}

fn set_flag(ctx: usize) {
    // SAFETY: `wait_until` passes the address of its own flag and cancels this timer
    // before the flag goes out of scope, so the pointer is live whenever this runs.
    unsafe { &*(ctx as *const AtomicBool) }.store(true, Ordering::SeqCst);
}

/// The longest a wait idles without looking at its condition again: a wake-up that never
/// comes (an event lost anywhere between the other domain and our handler) then costs this,
/// not the whole timeout, and is counted.
const SLICE_NS: u64 = 100_000_000;

/// Waits whose condition was found true on a slice's timer rather than after an event: a
/// condition that time itself makes true (one that polls a protocol stack with timers), or
/// a lost wake-up.
static SLICE_FINDS: AtomicU64 = AtomicU64::new(0);

/// `idle=poll`: waits spin with events enabled rather than block in Xen.
static IDLE_POLL: AtomicBool = AtomicBool::new(false);

/// Makes every later wait spin (`true`) or block (`false`, the default).
pub fn set_idle_poll(poll: bool) {
    IDLE_POLL.store(poll, Ordering::Relaxed);
}

/// Whether waits spin (`idle=poll`).
pub fn idle_polls() -> bool {
    IDLE_POLL.load(Ordering::Relaxed)
}

/// Idles until `done()` holds or the clock reaches `deadline_ns`; returns `done()`'s last
/// answer. `done` is checked with interrupts disabled, then the CPU waits with them enabled
/// atomically (SCHEDOP_block, `sti; hlt`), so no wake-up between the check and the wait
/// is lost. Interrupts are enabled while waiting, whatever the caller had.
pub fn wait_until(mut done: impl FnMut() -> bool, deadline_ns: u64) -> bool {
    let slice_over = AtomicBool::new(false);
    let flag = &slice_over as *const AtomicBool as usize;
    let mut timer = None;
    let saved = pvops::save_fl();
    let result = loop {
        pvops::irq_disable();
        let slice_ended = slice_over.swap(false, Ordering::SeqCst);
        if done() {
            if slice_ended {
                let n = SLICE_FINDS.fetch_add(1, Ordering::Relaxed) + 1;
                log::debug!("wait: condition found true on a slice's timer ({n} so far)");
            }
            break true;
        }
        let now = pvops::clock_ns();
        if now >= deadline_ns {
            break false;
        }
        if timer.is_none() || slice_ended {
            timer = Some(add(deadline_ns.min(now + SLICE_NS), set_flag, flag));
        }
        if idle_polls() {
            // Enabling delivers what is pending; the loop masks again before it looks.
            pvops::irq_enable();
            core::hint::spin_loop();
        } else {
            pvops::idle();
        }
    };
    pvops::restore_fl(saved);
    if let Some(timer) = timer {
        cancel(timer);
    }
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
