use super::{check, Outcome, Test};
use crate::arch::{cpu, traps};
use core::hint::black_box;

pub const TESTS: &[Test] = &[Test { name: "trap::breakpoint_resumes", run: breakpoint_resumes }];

/// int3 enters the #BP handler (through Xen's trap table or our IDT), which returns to the
/// next instruction with every register as it was.
fn breakpoint_resumes() -> Outcome {
    let before = traps::breakpoints();
    let values: [u64; 4] = black_box([1, 2, 3, 4]);
    let mut sum = 0;
    for _ in 0..3 {
        cpu::breakpoint();
        sum += values.iter().sum::<u64>();
    }
    let taken = traps::breakpoints() - before;
    check!(taken == 3, "{taken} breakpoints handled, expected 3");
    check!(black_box(sum) == 30, "state after the traps is wrong: {sum}");
    Outcome::Pass
}
