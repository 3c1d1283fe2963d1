//! Exceptions and Xen callbacks, after the entry stubs of entry.S built a [`TrapFrame`].

use crate::pvops;
use core::sync::atomic::{AtomicU64, Ordering};

/// What the entry stubs push, lowest address first (see `save_regs` in entry.S).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

/// Xen's event-channel upcall (not a CPU vector).
pub const VECTOR_XEN_EVENT: u64 = 256;
/// Xen could not load our segment registers on return (not a CPU vector).
pub const VECTOR_XEN_FAILSAFE: u64 = 257;
const VECTOR_BP: u64 = 3;
const VECTOR_DF: u64 = 8;
const VECTOR_PF: u64 = 14;

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// How many #BP traps were handled and resumed.
pub fn breakpoints() -> u64 {
    BREAKPOINTS.load(Ordering::Relaxed)
}

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        VECTOR_BP => {
            BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
        }
        VECTOR_XEN_EVENT => crate::arch::xen_common::upcall(),
        v @ 0x20..=0x2f if !crate::pvops::is_xen() => {
            crate::arch::native::interrupt((v - crate::arch::native::IRQ_BASE) as u8)
        }
        crate::arch::native::smp::WAKE_VECTOR if !crate::pvops::is_xen() => {
            crate::arch::native::smp::woken()
        }
        crate::arch::native::smp::TIMER_VECTOR if !crate::pvops::is_xen() => {
            crate::arch::native::smp::timer_fired()
        }
        // The local APIC's spurious interrupt: no EOI, nothing to do.
        crate::arch::native::smp::SPURIOUS_VECTOR if !crate::pvops::is_xen() => {}
        _ => fatal(frame),
    }
}

/// Prints everything we know about an unexpected trap, then stops the machine as a failure.
fn fatal(f: &TrapFrame) -> ! {
    let name = match f.vector {
        v @ 0..=31 => NAMES[v as usize],
        VECTOR_XEN_FAILSAFE => "Xen failsafe callback (bad segment on return)",
        _ => "unknown vector",
    };
    // A #DF caused by a #PF that could not be delivered leaves that #PF's address in CR2.
    let cr2 = if matches!(f.vector, VECTOR_PF | VECTOR_DF) { pvops::read_cr2() } else { 0 };
    let why = if super::stack::overflowed(cr2, f.rsp) {
        "the kernel stack overflowed into its guard page\n"
    } else {
        ""
    };
    crate::console::emergency(format_args!(
        "\nFATAL: unhandled trap {vec} ({name}), error code {err:#x}\n{why}\
         rip {rip:#018x} cs {cs:#06x} rflags {rfl:#010x} rsp {rsp:#018x} ss {ss:#06x} cr2 {cr2:#018x}\n\
         rax {rax:#018x} rbx {rbx:#018x} rcx {rcx:#018x} rdx {rdx:#018x}\n\
         rsi {rsi:#018x} rdi {rdi:#018x} rbp {rbp:#018x} r8  {r8:#018x}\n\
         r9  {r9:#018x} r10 {r10:#018x} r11 {r11:#018x} r12 {r12:#018x}\n\
         r13 {r13:#018x} r14 {r14:#018x} r15 {r15:#018x}\n",
        vec = f.vector, err = f.error, rip = f.rip, cs = f.cs, rfl = f.rflags, rsp = f.rsp,
        ss = f.ss, rax = f.rax, rbx = f.rbx, rcx = f.rcx, rdx = f.rdx, rsi = f.rsi, rdi = f.rdi,
        rbp = f.rbp, r8 = f.r8, r9 = f.r9, r10 = f.r10, r11 = f.r11, r12 = f.r12, r13 = f.r13,
        r14 = f.r14, r15 = f.r15,
    ));
    pvops::shutdown(pvops::Halt::Failure)
}

/// The entry stubs of entry.S: natively one per CPU exception and legacy PIC IRQ vector
/// (0..48) and the local APIC's three (0x30-0x32), under Xen one per CPU exception vector
/// (0..32).
pub fn stubs(xen: bool) -> &'static [u64] {
    extern "C" {
        static trap_native_stubs: [u64; super::native::IDT_VECTORS];
        static trap_xen_stubs: [u64; 32];
    }
    // SAFETY: two read-only tables of addresses defined in entry.S.
    unsafe {
        if xen {
            &*core::ptr::addr_of!(trap_xen_stubs)
        } else {
            &*core::ptr::addr_of!(trap_native_stubs)
        }
    }
}
