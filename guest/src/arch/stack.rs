//! The boot stack, the only kernel stack: a guard page below it, so that an overflow faults
//! instead of overwriting shared_info and .data, and a painted pattern that tells how deep
//! the stack has ever been.

use super::PAGE_SIZE;
use core::ops::Range;

/// What the unused part of the stack is filled with; a word still holding it was never
/// written since [`paint`].
const PAINT: u64 = 0x57ac_57ac_57ac_57ac;

extern "C" {
    static boot_stack_guard: [u8; PAGE_SIZE as usize];
    static boot_stack: u8;
    static boot_stack_top: u8;
}

/// The stack's own pages (not the guard).
pub fn range() -> Range<u64> {
    core::ptr::addr_of!(boot_stack) as u64..core::ptr::addr_of!(boot_stack_top) as u64
}

pub fn size() -> u64 {
    let r = range();
    r.end - r.start
}

/// The unmapped page just below the stack.
pub fn guard() -> Range<u64> {
    let start = core::ptr::addr_of!(boot_stack_guard) as u64;
    start..start + PAGE_SIZE
}

/// Unmaps the guard page. A push into it then faults: under Xen PV, Xen cannot deliver the
/// fault and crashes the domain; natively and under PVH, the #DF handler runs on a stack of
/// its own and names the overflow.
pub fn protect() -> Result<(), crate::mm::paging::MapError> {
    // SAFETY: the guard page is reserved in entry.S for exactly this and nothing refers to it.
    unsafe { crate::mm::paging::unmap_guard(guard().start) }
}

fn current_sp() -> u64 {
    let sp: u64;
    // SAFETY: reads rsp.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Fills the stack below the caller's frame with [`PAINT`], so that [`deepest`] can tell
/// later how much of it was used. Called once, early, with interrupts disabled.
pub fn paint() {
    let stack = range();
    // Keep clear of what this function itself may still push.
    let end = current_sp() - 256;
    let mut p = stack.start;
    while p < end {
        // SAFETY: below rsp (minus a margin) nothing live sits on the stack: the target has
        // no red zone, interrupts are disabled, and these are stack pages of ours.
        unsafe { (p as *mut u64).write_volatile(PAINT) };
        p += 8;
    }
}

/// How many bytes of the stack have been in use at the deepest point since [`paint`].
pub fn deepest() -> u64 {
    let stack = range();
    let mut p = stack.start;
    // SAFETY: reads words of our own stack pages, below the live frames or in them.
    while p < stack.end && unsafe { (p as *const u64).read_volatile() } == PAINT {
        p += 8;
    }
    stack.end - p
}

/// Whether a trap with this faulting address (CR2) and stack pointer is a stack overflow:
/// the push that overflowed hit the guard page, and a #DF it caused holds the stack pointer
/// just above it.
pub fn overflowed(cr2: u64, rsp: u64) -> bool {
    let guard = guard();
    guard.contains(&cr2) || (guard.start..guard.end + 64).contains(&rsp)
}
