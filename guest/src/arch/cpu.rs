//! Unprivileged instructions every backend may use directly.

use crate::pvops::Cpuid;
use core::arch::asm;

/// The CPUID instruction as the hardware (or, under PV, the hypervisor's passthrough)
/// answers it, with no masking.
pub fn cpuid_raw(leaf: u32, subleaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    Cpuid { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// Waits until every earlier instruction has completed and discards anything fetched
/// ahead, so that code just written runs as written (Intel SDM vol. 3A, "Handling Self- and
/// Cross-Modifying Code"). CPUID serializes and, unlike IRET or a CR write, works in ring 3
/// under Xen PV too.
pub fn serialize() {
    cpuid_raw(0, 0);
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged unless CR4.TSD is set, which neither Xen nor we do.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A software breakpoint (#BP), for the trap self-test.
pub fn breakpoint() {
    // SAFETY: the #BP handler returns to the next instruction with every register intact.
    unsafe { asm!("int3", options(nomem, nostack)) };
}

/// The first CPUID leaf of Xen's block, if we run under Xen: Xen places it at 0x40000000
/// or, when it also offers another hypervisor's interface there, 0x100 leaves higher.
pub fn xen_cpuid_base() -> Option<u32> {
    find_xen_leaves(cpuid_raw)
}

/// [`xen_cpuid_base`] through `cpuid` (a PV guest's CPUID goes through pv_ops: a plain one
/// shows the hardware's leaves, not Xen's).
pub fn find_xen_leaves(cpuid: impl Fn(u32, u32) -> Cpuid) -> Option<u32> {
    (0x4000_0000..0x4001_0000u32)
        .step_by(0x100)
        .find(|&leaf| &signature(&cpuid(leaf, 0)) == b"XenVMMXenVMM")
}

/// The vendor string of a hypervisor CPUID leaf block (`XenVMMXenVMM` for Xen).
pub fn signature(r: &Cpuid) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    s[8..12].copy_from_slice(&r.edx.to_le_bytes());
    s
}

/// Fails on purpose, as the command line's `fault=` asks.
pub fn fault(kind: crate::cmdline::Fault) -> ! {
    use crate::cmdline::Fault;
    match kind {
        Fault::PageFault => {
            // SAFETY: nothing is ever mapped in the first page on either platform, so this
            // write faults, and the #PF handler does not return.
            unsafe { (0x10 as *mut u64).write_volatile(0xdead) };
        }
        Fault::InvalidOpcode => {
            // SAFETY: none: ud2 traps, and the #UD handler never returns.
            unsafe { asm!("ud2", options(nomem, nostack)) };
        }
        Fault::Panic => panic!("fault=panic requested on the command line"),
        Fault::StackOverflow => {
            recurse(0);
        }
    }
    unreachable!("the fault did not fault")
}

/// Calls itself until the stack runs out, each frame holding a buffer the optimizer must
/// keep.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 32]);
    if core::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[31])
}
