use super::{check, xen_only, Outcome, Test};
use crate::time;
use crate::xen::evtchn::{self, Loopback};

pub const TESTS: &[Test] = &[
    Test { name: "events::abi_as_chosen", run: abi_as_chosen },
    Test { name: "events::loopback_once", run: loopback_once },
    Test { name: "events::masked_until_unmasked", run: masked_until_unmasked },
    Test { name: "events::virq_debug_binds", run: virq_debug_binds },
];

/// The ABI in use is the one the command line asked for (FIFO by default: Xen 4.17 has it).
fn abi_as_chosen() -> Outcome {
    xen_only!();
    let want = match crate::boot::options().evtchn {
        crate::cmdline::EvtchnAbi::TwoLevel => "2-level",
        _ => "fifo",
    };
    check!(evtchn::abi_name() == want, "using {}, expected {want}", evtchn::abi_name());
    Outcome::Pass
}

/// Waits a little for a handler that should already have run.
fn settle(done: impl FnMut() -> bool) -> bool {
    time::wait_until(done, crate::pvops::clock_ns() + 100_000_000)
}

/// An event sent on one end of a loopback pair runs the other end's handler exactly once.
fn loopback_once() -> Outcome {
    xen_only!();
    let pair = match Loopback::new(false) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("loopback: {e}")),
    };
    for n in 1..=3 {
        check!(evtchn::send(pair.a).is_ok(), "send on {}", pair.a);
        check!(settle(|| pair.counts().1 >= n), "event {n} never arrived on {}", pair.b);
        // Give a duplicate delivery the chance to show.
        time::sleep_ns(2_000_000);
        check!(
            pair.counts() == (0, n),
            "after {n} sends: handler counts (a, b) = {:?}",
            pair.counts()
        );
    }
    Outcome::Pass
}

/// A masked port keeps its event pending and delivers it when unmasked, not before.
fn masked_until_unmasked() -> Outcome {
    xen_only!();
    let pair = match Loopback::new(false) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("loopback: {e}")),
    };
    check!(evtchn::mask(pair.b).is_ok(), "mask");
    check!(evtchn::send(pair.a).is_ok(), "send");
    time::sleep_ns(5_000_000);
    check!(pair.counts().1 == 0, "a masked port ran its handler");
    check!(evtchn::is_pending(pair.b), "the event is not pending on the masked port");
    check!(evtchn::unmask(pair.b).is_ok(), "unmask");
    check!(settle(|| pair.counts().1 == 1), "unmask did not deliver: counts {:?}", pair.counts());
    Outcome::Pass
}

/// A second virtual IRQ binds (and closes) beside the timer's.
fn virq_debug_binds() -> Outcome {
    xen_only!();
    let port = match evtchn::bind_virq(hypercall::abi::VIRQ_DEBUG, |_, _| {}, 0) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("bind VIRQ_DEBUG: {e}")),
    };
    check!(port != time::xen_common::timer_port(), "VIRQ_DEBUG got the timer's {port}");
    check!(evtchn::close(port).is_ok(), "close {port}");
    Outcome::Pass
}
