//! The kernel stack, checked last so that every other test has had its go at it.

use super::{check, Outcome, Test};
use crate::arch::stack;
use crate::mm::paging::{self, MapError};

pub const TESTS: &[Test] = &[
    Test { name: "stack::guard_unmapped", run: guard_unmapped },
    Test { name: "stack::headroom", run: headroom },
];

/// The page below the stack is not mapped, so an overflow faults.
fn guard_unmapped() -> Outcome {
    let guard = stack::guard();
    match paging::translate(guard.start) {
        Err(MapError::NotMapped) => Outcome::Pass,
        other => Outcome::Fail(alloc::format!("guard page {:#x}: {other:?}", guard.start)),
    }
}

/// Every test so far left at least a quarter of the stack unused: the margin for deeper
/// paths than the tests take (an event upcall on top of the deepest driver call).
fn headroom() -> Outcome {
    let (used, size) = (stack::deepest(), stack::size());
    check!(used > 0, "the stack was never painted");
    check!(used <= size / 4 * 3, "{} of {} KiB of stack used", used / 1024, size / 1024);
    log::info!("stack: at most {} of {} KiB used so far", used / 1024, size / 1024);
    Outcome::Pass
}
