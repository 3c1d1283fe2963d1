//! The native backend: bare instructions, ring 0, our own page tables (QEMU PVH boot).

use crate::arch::cpu;
use crate::pvops::{
    ConsoleOps, CpuOps, Cpuid, IrqOps, MmuOps, PvOps, ShutdownOps, SmpOps, TimeOps,
};
use core::arch::asm;

pub const OPS: PvOps = PvOps {
    cpu: CpuOps { cpuid, read_cr2, idle },
    irq: IrqOps { save_fl, restore_fl, disable, enable },
    mmu: MmuOps {
        read_cr3,
        set_pte,
        flush_tlb_one,
        pfn_to_frame,
        frame_to_pfn,
        make_table,
        lazy_enter: nothing,
        lazy_flush: nothing,
        lazy_leave: nothing,
    },
    time: TimeOps {
        clock_ns: crate::time::native::clock_ns,
        set_timer: crate::time::native::set_timer,
    },
    console: ConsoleOps { write: crate::console::native_write },
    shutdown: ShutdownOps { shutdown: crate::arch::native::shutdown },
    smp: SmpOps {
        cpu_count: super::smp::cpu_count,
        start_cpu: super::smp::start_cpu,
        park_cpu: super::smp::park_cpu,
        wake_cpu: super::smp::wake_cpu,
        cpu_parked: super::smp::cpu_parked,
        set_percpu_base: write_gs_base,
    },
};

/// `IA32_GS_BASE`.
///
/// # Safety
/// As for `pvops::set_percpu_base`: `base` is the calling CPU's per-CPU area.
pub unsafe extern "C" fn write_gs_base(base: u64) {
    x86_64::registers::model_specific::GsBase::write(x86_64::VirtAddr::new(base));
}

unsafe extern "C" fn cpuid(leaf: u32, subleaf: u32, out: *mut Cpuid) {
    // SAFETY: the call site passes a valid, writable Cpuid.
    unsafe { out.write(cpu::cpuid_raw(leaf, subleaf)) };
}

extern "C" fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects; we run in ring 0.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

extern "C" fn idle() {
    // SAFETY: `sti; hlt` back to back: an interrupt arriving after sti still wakes the hlt,
    // because sti's effect is delayed by one instruction.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

extern "C" fn save_fl() -> u64 {
    let v;
    // SAFETY: reads RFLAGS through the stack, which the asm leaves balanced.
    unsafe { asm!("pushfq; pop {}", out(reg) v, options(nomem, preserves_flags)) };
    v
}

extern "C" fn restore_fl(flags: u64) {
    // SAFETY: restores a flags value that save_fl produced.
    unsafe { asm!("push {}; popfq", in(reg) flags, options(nomem)) };
}

extern "C" fn disable() {
    // SAFETY: ring 0.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

extern "C" fn enable() {
    // SAFETY: ring 0; handlers for every vector we can receive are installed at boot.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

extern "C" fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    (v & 0x000f_ffff_ffff_f000) >> 12
}

unsafe extern "C" fn set_pte(ptep: *mut u64, val: u64) {
    // SAFETY: the caller vouches that ptep is an entry of a live table of ours.
    unsafe { ptep.write_volatile(val) };
}

unsafe extern "C" fn flush_tlb_one(va: u64) {
    // SAFETY: invlpg only drops a TLB entry.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

extern "C" fn pfn_to_frame(pfn: u64) -> u64 {
    pfn
}

extern "C" fn frame_to_pfn(frame: u64) -> u64 {
    frame
}

unsafe extern "C" fn make_table(_pfn: u64) {}

/// Native page-table writes are immediate: there is nothing to batch.
extern "C" fn nothing() {}
