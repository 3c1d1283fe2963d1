use super::{check, xen_only, Outcome, Test};
use crate::pvops::{self, FLAGS_IF};
use core::sync::atomic::{AtomicU32, Ordering};

pub const TESTS: &[Test] = &[
    Test { name: "irq::save_restore_nesting", run: save_restore_nesting },
    Test { name: "irq::pending_delivered_on_enable", run: pending_delivered_on_enable },
];

fn enabled() -> bool {
    pvops::save_fl() & FLAGS_IF != 0
}

fn save_restore_nesting() -> Outcome {
    check!(enabled(), "interrupts are not enabled at test time");
    {
        let _outer = pvops::irq_save();
        check!(!enabled(), "irq_save did not disable");
        {
            let _inner = pvops::irq_save();
            check!(!enabled(), "nested irq_save enabled");
        }
        check!(!enabled(), "inner restore re-enabled inside the outer section");
        let flags = pvops::save_fl();
        pvops::irq_enable();
        check!(enabled(), "irq_enable");
        pvops::restore_fl(flags);
        check!(!enabled(), "restore_fl(disabled)");
    }
    check!(enabled(), "outer restore did not re-enable");
    pvops::irq_disable();
    pvops::irq_disable();
    pvops::irq_enable();
    check!(enabled(), "enable after two disables (no counting, as on hardware)");
    Outcome::Pass
}

static TIMER_CALLS: AtomicU32 = AtomicU32::new(0);

fn count_call(_: usize) {
    TIMER_CALLS.fetch_add(1, Ordering::SeqCst);
}

/// An event that arrives while events are disabled is delivered by irq_enable itself.
fn pending_delivered_on_enable() -> Outcome {
    xen_only!();
    let port = crate::time::xen_common::timer_port();
    let calls = TIMER_CALLS.load(Ordering::SeqCst);
    pvops::irq_disable();
    let deadline = pvops::clock_ns() + 1_000_000;
    crate::time::add(deadline, count_call, 0);
    // Sleep until the timer's port is pending (SCHEDOP_poll ignores the event mask). Another
    // event for the domain (DHCP going on in the background, xenstored, xenconsoled) also
    // ends a poll: poll again until it is the timer's.
    let give_up = deadline + 1_000_000_000;
    let mut poll = Ok(());
    while poll.is_ok() && !crate::xen::evtchn::is_pending(port) && pvops::clock_ns() < give_up {
        poll = hypercall::ops::sched_poll(&[port.0], give_up);
    }
    let pending = crate::arch::xen_common::vcpu().upcall_pending();
    let before = crate::time::xen_common::timer_events();
    pvops::irq_enable();
    let after = crate::time::xen_common::timer_events();
    check!(poll.is_ok(), "SCHEDOP_poll: {poll:?}");
    check!(pending != 0, "the timer event did not become pending");
    check!(after > before, "irq_enable did not deliver the pending timer event");
    // Xen may fire a timer up to its slop early; the queue then waits for the deadline.
    let fired = crate::time::wait_until(|| TIMER_CALLS.load(Ordering::SeqCst) > calls, give_up);
    check!(fired, "the timer's callback never ran");
    Outcome::Pass
}
