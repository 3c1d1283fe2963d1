use super::{check, Outcome, Test};
use crate::pvops;

pub const TESTS: &[Test] =
    &[Test { name: "time::monotonic", run: monotonic }, Test { name: "time::rate", run: rate }];

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
    check!(advanced >= 990, "only {advanced} of 1000 spaced reads saw the clock advance");
    Outcome::Pass
}

/// The clock agrees with a second, independent source.
fn rate() -> Outcome {
    if pvops::is_xen() {
        // Xen's own timer (SCHEDOP_poll's timeout, set from the hypervisor's platform
        // timer) against our TSC-extrapolated clock.
        const SLEEP_NS: u64 = 100_000_000;
        let t0 = pvops::clock_ns();
        let deadline = crate::time::xen::system_time_ns() + SLEEP_NS;
        let r = hypercall::ops::sched_poll(&[], deadline);
        let elapsed = pvops::clock_ns() - t0;
        check!(r.is_ok(), "SCHEDOP_poll: {r:?}");
        check!(elapsed >= SLEEP_NS - 1_000_000, "woke after {elapsed} ns, before the 100 ms timer");
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
