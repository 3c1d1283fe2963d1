//! The Xen PV backend: the kernel runs in ring 3, so interrupts are the event mask in
//! vcpu_info, page tables are read-only and changed by hypercall, and cpuid goes through
//! Xen's forced-emulation prefix.

use super::{ConsoleOps, CpuOps, Cpuid, IrqOps, MmuOps, PvOps, ShutdownOps, TimeOps, FLAGS_IF};
use crate::arch::xen as platform;
use core::arch::asm;
use core::sync::atomic::{compiler_fence, Ordering};
use hypercall::abi;

pub const OPS: PvOps = PvOps {
    cpu: CpuOps { cpuid, read_cr2, idle },
    irq: IrqOps { save_fl, restore_fl, disable, enable },
    mmu: MmuOps { read_cr3, set_pte, flush_tlb_one, pfn_to_frame, frame_to_pfn, make_table },
    time: TimeOps { clock_ns: crate::time::xen::clock_ns },
    console: ConsoleOps { write: crate::console::xen_write },
    shutdown: ShutdownOps { shutdown },
};

/// CPUID.1 features a PV guest must not use: the hardware behind them belongs to Xen
/// (EDX: MTRR, ACPI thermal, TM; ECX: MONITOR/MWAIT, x2APIC).
pub const LEAF1_EDX_MASKED: u32 = (1 << 12) | (1 << 22) | (1 << 29);
pub const LEAF1_ECX_MASKED: u32 = (1 << 3) | (1 << 21);

unsafe extern "C" fn cpuid(leaf: u32, subleaf: u32, out: *mut Cpuid) {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: `ud2; "xen"; cpuid` is Xen's forced-emulation prefix: Xen decodes it and
    // emulates CPUID with the domain's policy. rbx is reserved by LLVM, hence the swap.
    unsafe {
        asm!(
            "mov {tmp:r}, rbx",
            ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags),
        )
    };
    let mut r = Cpuid { eax, ebx, ecx, edx };
    if leaf == 1 {
        r.edx &= !LEAF1_EDX_MASKED;
        r.ecx &= !LEAF1_ECX_MASKED;
    }
    // SAFETY: the call site passes a valid, writable Cpuid.
    unsafe { out.write(r) };
}

extern "C" fn read_cr2() -> u64 {
    platform::vcpu().cr2()
}

extern "C" fn idle() {
    // SCHEDOP_block re-enables event delivery and blocks as one step, so an event that
    // became pending after the caller's check still wakes us.
    if let Err(e) = hypercall::ops::sched_block() {
        log::error!("SCHEDOP_block failed: {e}");
    }
}

extern "C" fn save_fl() -> u64 {
    if platform::vcpu().upcall_mask() == 0 {
        FLAGS_IF
    } else {
        0
    }
}

extern "C" fn restore_fl(flags: u64) {
    if flags & FLAGS_IF != 0 {
        enable();
    } else {
        disable();
    }
}

extern "C" fn disable() {
    platform::vcpu().set_upcall_mask(1);
    // The mask must be set before any code the caller protects with it.
    compiler_fence(Ordering::SeqCst);
}

extern "C" fn enable() {
    let vcpu = platform::vcpu();
    compiler_fence(Ordering::SeqCst);
    vcpu.set_upcall_mask(0);
    // Unmask, then check: an event that arrived while masked sits in upcall_pending and
    // Xen will not deliver it until our next entry into the hypervisor. Force one.
    compiler_fence(Ordering::SeqCst);
    if vcpu.upcall_pending() != 0 {
        platform::force_event_delivery();
    }
}

extern "C" fn read_cr3() -> u64 {
    platform::root_table_mfn()
}

unsafe extern "C" fn set_pte(ptep: *mut u64, val: u64) {
    let mut val = val;
    if val & 1 != 0 {
        // Xen adds _PAGE_USER to a 64-bit PV kernel's mappings anyway (its kernel runs in
        // ring 3); say so ourselves so entries read back as written.
        val |= 1 << 2;
    }
    let req = abi::mmu_update {
        ptr: platform::virt_to_machine(ptep as u64) | abi::MMU_NORMAL_PT_UPDATE as u64,
        val,
    };
    // SAFETY: the caller vouches for the entry; Xen validates the update itself.
    if let Err(e) = unsafe { hypercall::ops::mmu_update(&[req]) } {
        panic!("mmu_update of pte {ptep:p} = {val:#x} failed: {e}");
    }
}

unsafe extern "C" fn flush_tlb_one(va: u64) {
    let op = hypercall::ops::mmuext(abi::MMUEXT_INVLPG_LOCAL, va);
    // SAFETY: a TLB flush does not change any mapping.
    if let Err(e) = unsafe { hypercall::ops::mmuext_op(&[op]) } {
        log::error!("MMUEXT_INVLPG_LOCAL {va:#x} failed: {e}");
    }
}

extern "C" fn pfn_to_frame(pfn: u64) -> u64 {
    platform::pfn_to_mfn(pfn)
}

extern "C" fn frame_to_pfn(frame: u64) -> u64 {
    platform::mfn_to_pfn(frame).unwrap_or(super::INVALID_PFN)
}

unsafe extern "C" fn make_table(pfn: u64) {
    // SAFETY: the caller hands over a page nothing references; mapping it read-only in the
    // direct map is what Xen requires of a page-table page.
    if let Err(e) = unsafe { platform::set_direct_map_writable(pfn, false) } {
        panic!("cannot make pfn {pfn:#x} read-only for a page table: {e}");
    }
}

extern "C" fn shutdown(reason: u32) -> ! {
    platform::shutdown(reason)
}
