use super::{check, Outcome, Test, XorShift};
use crate::pvops;
use crate::sync::IrqMutex;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

pub const TESTS: &[Test] = &[
    Test { name: "time::monotonic", run: monotonic },
    Test { name: "time::rate", run: rate },
    Test { name: "time::timer_deadline", run: timer_deadline },
    Test { name: "time::timers_in_order", run: timers_in_order },
    Test { name: "time::sleep", run: sleep },
];

fn monotonic() -> Outcome {
    let start = pvops::clock_ns();
    let mut last = start;
    for i in 0..100_000 {
        let now = pvops::clock_ns();
        check!(now >= last, "read {i}: went back from {last} to {now}");
        last = now;
    }
    check!(last > start, "100000 reads and the clock did not move ({start})");
    // Between two reads a few hundred instructions apart, the clock must tick on its own
    // (TSC extrapolation), not only when the hypervisor refreshes its record.
    let mut advanced = 0;
    let mut prev = pvops::clock_ns();
    for _ in 0..1000 {
        for _ in 0..200 {
            core::hint::spin_loop();
        }
        let now = pvops::clock_ns();
        advanced += u32::from(now > prev);
        prev = now;
    }
    // Not all of them: a vCPU moved to another pCPU may read a slightly earlier time,
    // which the monotonic clamp turns into a repeat. A clock that only moves when Xen
    // refreshes its record advances in a handful.
    check!(advanced >= 900, "only {advanced} of 1000 spaced reads saw the clock advance");
    Outcome::Pass
}

/// The clock agrees with a second, independent source.
fn rate() -> Outcome {
    if pvops::is_xen() {
        // Xen's own timer (SCHEDOP_poll's timeout, set from the hypervisor's platform
        // timer) against our TSC-extrapolated clock.
        const SLEEP_NS: u64 = 100_000_000;
        // Events masked: SCHEDOP_poll returns early for a deliverable event, and only the
        // timeout should wake it here. But an event for the domain still ends a poll (Xen
        // unblocks the vCPU to mark it), and with DHCP going on in the background netback
        // sends them while the tests run: a poll that ends before its deadline is polled
        // again, to the same deadline, so that what ends the last one is Xen's timer.
        let irq = pvops::irq_save();
        let t0 = pvops::clock_ns();
        let deadline = crate::time::xen_common::system_time_ns() + SLEEP_NS;
        let (mut r, mut polls) = (Ok(()), 0u32);
        while r.is_ok() && crate::time::xen_common::system_time_ns() < deadline && polls < 10_000 {
            r = hypercall::ops::sched_poll(&[], deadline);
            polls += 1;
        }
        let elapsed = pvops::clock_ns() - t0;
        drop(irq);
        log::debug!("time::rate: {polls} polls to reach the deadline");
        check!(r.is_ok(), "SCHEDOP_poll: {r:?}");
        check!(polls < 10_000, "{polls} polls woken early: an event storm");
        // Within 5%: between Xen's once-a-second recalibrations our extrapolation follows
        // its TSC scale, which under emulation is off by a percent or two.
        check!(elapsed >= SLEEP_NS / 100 * 95, "a 100 ms Xen timer took only {elapsed} ns");
        check!(elapsed < SLEEP_NS * 3, "a 100 ms sleep took {elapsed} ns");
        log::info!(
            "100 ms Xen timer measured as {}.{:03} ms",
            elapsed / 1_000_000,
            elapsed / 1000 % 1000
        );
    } else {
        // The CMOS RTC's seconds against the TSC clock: time one whole RTC second.
        let edge = || {
            let s = crate::arch::native::rtc_seconds();
            while crate::arch::native::rtc_seconds() == s {
                core::hint::spin_loop();
            }
            pvops::clock_ns()
        };
        let t0 = edge();
        let second = edge() - t0;
        check!(
            (950_000_000..1_050_000_000).contains(&second),
            "an RTC second lasted {second} ns by the TSC clock"
        );
        log::info!("RTC second measured as {}.{:03} ms", second / 1_000_000, second / 1000 % 1000);
    }
    Outcome::Pass
}

/// How late a timer may run before we call it broken: lateness the host causes is not the
/// guest's, and the test is whether timers fire, not how fast a busy host lets them. Under
/// Xen in the rig (all of it emulated), a woken vCPU waits for its turn behind dom0: tens
/// of milliseconds when dom0 forwards our console, 600 ms measured while dom0 ran the
/// hotplug scripts of two disks and a vif during the first seconds of our boot.
fn late_ns() -> u64 {
    if pvops::is_xen() {
        2_000_000_000
    } else {
        20_000_000
    }
}

static FIRED_AT: AtomicU64 = AtomicU64::new(0);

fn record_time(_: usize) {
    FIRED_AT.store(pvops::clock_ns(), Ordering::SeqCst);
}

/// A 5 ms timer runs its callback no earlier than its deadline and not much later.
fn timer_deadline() -> Outcome {
    FIRED_AT.store(0, Ordering::SeqCst);
    let deadline = pvops::clock_ns() + 5_000_000;
    crate::time::add(deadline, record_time, 0);
    let fired =
        crate::time::wait_until(|| FIRED_AT.load(Ordering::SeqCst) != 0, deadline + 1_000_000_000);
    let at = FIRED_AT.load(Ordering::SeqCst);
    check!(fired, "the timer did not fire within a second of its deadline");
    check!(at >= deadline, "fired {} ns early", deadline - at);
    check!(at - deadline < late_ns(), "fired {} us late", (at - deadline) / 1000);
    log::debug!("5 ms timer fired {} us late", (at - deadline) / 1000);
    Outcome::Pass
}

static ORDER: IrqMutex<Vec<u64>> = IrqMutex::new(Vec::new());

fn record_deadline(deadline: usize) {
    ORDER.lock().push(deadline as u64);
}

/// 1000 timers added in random order over 50 ms fire in deadline order, each after it.
fn timers_in_order() -> Outcome {
    const N: usize = 1000;
    ORDER.lock().clear();
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let start = pvops::clock_ns();
    let mut last = 0;
    {
        // Adding takes a while under emulation: hold the interrupts back meanwhile, or an
        // early deadline could pass and fire before a yet earlier one is added.
        let _irq = pvops::irq_save();
        for _ in 0..N {
            let deadline = start + 1_000_000 + rng.below(50_000_000);
            last = last.max(deadline);
            crate::time::add(deadline, record_deadline, deadline as usize);
        }
    }
    let all = crate::time::wait_until(|| ORDER.lock().len() == N, last + 1_000_000_000);
    let done = pvops::clock_ns();
    let order = core::mem::take(&mut *ORDER.lock());
    check!(all, "{} of {N} timers fired", order.len());
    if let Some(i) = order.windows(2).position(|w| w[0] > w[1]) {
        return Outcome::Fail(alloc::format!(
            "timer {} (deadline +{} ns) fired after timer {} (deadline +{} ns)",
            i + 1,
            order[i + 1] - start,
            i,
            order[i] - start
        ));
    }
    check!(done >= last, "all fired by {done}, before the last deadline {last}");
    Outcome::Pass
}

/// sleep_ns sleeps at least as long as asked, idling rather than spinning.
fn sleep() -> Outcome {
    for ns in [1_000_000u64, 10_000_000, 30_000_000] {
        let t0 = pvops::clock_ns();
        crate::time::sleep_ns(ns);
        let slept = pvops::clock_ns() - t0;
        check!(slept >= ns, "asked for {ns} ns, slept {slept}");
        check!(slept < ns + late_ns(), "asked for {ns} ns, slept {slept}");
    }
    Outcome::Pass
}
