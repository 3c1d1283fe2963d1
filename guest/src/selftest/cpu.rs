use super::{check, Outcome, Test};
use crate::arch::cpu::{cpuid_raw, signature};
use crate::pvops;

pub const TESTS: &[Test] = &[Test { name: "cpu::cpuid", run: cpuid }];

const HYPERVISOR_BIT: u32 = 1 << 31;

/// Under Xen, cpuid shows Xen's signature leaves. Under PV it goes through the
/// forced-emulation prefix and hides what a PV guest must not use; natively and under PVH
/// it is the instruction itself.
fn cpuid() -> Outcome {
    let leaf1 = pvops::cpuid(1, 0);
    if pvops::is_xen() {
        let base = pvops::cpuid(0x4000_0000, 0);
        check!(
            &signature(&base) == b"XenVMMXenVMM",
            "leaf 0x40000000 signature {:?}",
            signature(&base)
        );
        check!(base.eax >= 0x4000_0002, "max hypervisor leaf {:#x}", base.eax);
        check!(leaf1.ecx & HYPERVISOR_BIT != 0, "leaf 1 lacks the hypervisor bit");
    }
    if pvops::is_xen_pv() {
        check!(
            leaf1.edx & crate::arch::xen_pv::ops::LEAF1_EDX_MASKED == 0,
            "leaf 1 edx {:#x} not masked",
            leaf1.edx
        );
        check!(
            leaf1.ecx & crate::arch::xen_pv::ops::LEAF1_ECX_MASKED == 0,
            "leaf 1 ecx {:#x} not masked",
            leaf1.ecx
        );
        check!(leaf1.edx & 1 != 0, "leaf 1 lost the FPU bit: masking too much");
    } else {
        for (leaf, sub) in [(0, 0), (1, 0), (7, 0), (0x8000_0001, 0)] {
            let (pv, raw) = (pvops::cpuid(leaf, sub), cpuid_raw(leaf, sub));
            // APIC ID bits (leaf 1 ebx[31:24]) are per-CPU; we run on CPU 0 throughout.
            check!(pv == raw, "leaf {leaf:#x}: pv_ops {pv:x?} vs instruction {raw:x?}");
        }
    }
    Outcome::Pass
}
