//! Hypercall instructions.
//!
//! x86-64 ABI (Xen `public/arch-x86/xen-x86_64.h`): arguments in rdi, rsi, rdx, r10, r8, r9;
//! the result in rax. Each hypercall is a `call` to its 32-byte slot in the hypercall page.
//! A debug Xen deliberately corrupts all six argument registers, used or not, and the PV
//! page's `syscall` clobbers rcx and r11: that is the C ABI's clobber set, so every arity
//! declares `clobber_abi("C")`.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::Errno;

/// Bytes per hypercall slot in the hypercall page.
const SLOT: usize = 32;
/// Slots in the 4 KiB hypercall page.
const SLOTS: u32 = 128;

static PAGE: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);

/// Names the hypercall page from now on.
///
/// # Safety
/// `page` is the address of a 4 KiB hypercall page that Xen has filled (or will fill before
/// the first hypercall) and that stays mapped and executable for the life of the kernel.
pub unsafe fn init(page: *const u8) {
    PAGE.store(page as usize, Ordering::Release);
}

/// Whether hypercalls can be made (we run on Xen and the page is set up).
pub fn is_available() -> bool {
    PAGE.load(Ordering::Acquire) != 0
}

/// Hypercalls issued so far through [`hypercall0`]..[`hypercall5`] (and so every wrapper).
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// The address a hypercall instruction jumps to.
#[derive(Clone, Copy, Debug)]
pub struct Entry(usize);

impl Entry {
    /// The slot of hypercall `nr` in the registered page; `None` before [`init`] or for a
    /// number beyond the page.
    pub fn of(nr: u32) -> Option<Entry> {
        let page = PAGE.load(Ordering::Acquire);
        (page != 0 && nr < SLOTS).then(|| Entry(page + nr as usize * SLOT))
    }

    /// An arbitrary entry point, for exercising the register ABI against a stub.
    ///
    /// # Safety
    /// `addr` is code that follows the hypercall register ABI and returns with `ret`.
    pub unsafe fn at(addr: usize) -> Entry {
        Entry(addr)
    }
}

macro_rules! arities {
    ($($call:ident $hypercall:ident ($($arg:ident : $reg:tt),*);)*) => {$(
        /// Enters `entry` with the arguments in their ABI registers.
        ///
        /// # Safety
        /// The hypercall and its arguments must not break any invariant Rust relies on
        /// (a page-table or trap-table update can break all of them).
        #[inline(always)]
        pub unsafe fn $call(entry: Entry $(, $arg: u64)*) -> i64 {
            let ret: i64;
            // SAFETY: the caller vouches for the hypercall's effect; the asm itself only
            // clobbers what is declared (the C ABI's caller-saved registers, memory) and
            // uses the stack below rsp for the return address, with no red zone on this
            // target.
            unsafe {
                asm!(
                    "call {entry}",
                    entry = in(reg) entry.0,
                    $(in($reg) $arg,)*
                    lateout("rax") ret,
                    clobber_abi("C"),
                );
            }
            ret
        }

        /// Hypercall `nr` through the registered page; `-ENOSYS` when there is none.
        ///
        /// # Safety
        /// As for the `call` variant of the same arity.
        #[inline]
        pub unsafe fn $hypercall(nr: u32 $(, $arg: u64)*) -> i64 {
            match Entry::of(nr) {
                Some(entry) => {
                    COUNT.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: forwarded contract; the entry lies in the registered page.
                    unsafe { $call(entry $(, $arg)*) }
                }
                None => -(Errno::ENOSYS.0 as i64),
            }
        }
    )*};
}

arities! {
    call0 hypercall0();
    call1 hypercall1(a1: "rdi");
    call2 hypercall2(a1: "rdi", a2: "rsi");
    call3 hypercall3(a1: "rdi", a2: "rsi", a3: "rdx");
    call4 hypercall4(a1: "rdi", a2: "rsi", a3: "rdx", a4: "r10");
    call5 hypercall5(a1: "rdi", a2: "rsi", a3: "rdx", a4: "r10", a5: "r8");
}
