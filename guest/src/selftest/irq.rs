use super::{check, xen_only, Outcome, Test};
use crate::pvops::{self, FLAGS_IF};
use core::sync::atomic::{AtomicU32, Ordering};
use events::Port;

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

static TIMER_EVENTS: AtomicU32 = AtomicU32::new(0);

fn on_timer(_: Port, _: usize) {
    TIMER_EVENTS.fetch_add(1, Ordering::SeqCst);
}

/// An event that arrives while events are disabled is delivered by irq_enable itself.
fn pending_delivered_on_enable() -> Outcome {
    xen_only!();
    let port = match crate::evtchn::bind_virq(hypercall::abi::VIRQ_TIMER, on_timer, 0) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("bind VIRQ_TIMER: {e}")),
    };
    let outcome = (|| {
        let before = TIMER_EVENTS.load(Ordering::SeqCst);
        pvops::irq_disable();
        let deadline = crate::time::xen::system_time_ns() + 1_000_000;
        if let Err(e) = hypercall::ops::set_timer(deadline) {
            pvops::irq_enable();
            return Outcome::Fail(alloc::format!("set_timer_op: {e}"));
        }
        // Sleep until the timer's port is pending (SCHEDOP_poll ignores the event mask).
        let poll = hypercall::ops::sched_poll(&[port.0], deadline + 1_000_000_000);
        let pending = crate::arch::xen::vcpu().upcall_pending();
        let during = TIMER_EVENTS.load(Ordering::SeqCst);
        pvops::irq_enable();
        let after = TIMER_EVENTS.load(Ordering::SeqCst);
        check!(poll.is_ok(), "SCHEDOP_poll: {poll:?}");
        check!(pending != 0, "the timer event did not become pending");
        check!(during == before, "the handler ran while events were disabled");
        check!(after == before + 1, "irq_enable delivered {} events, expected 1", after - before);
        Outcome::Pass
    })();
    if let Err(e) = crate::evtchn::close(port) {
        return Outcome::Fail(alloc::format!("close VIRQ_TIMER port: {e}"));
    }
    outcome
}
