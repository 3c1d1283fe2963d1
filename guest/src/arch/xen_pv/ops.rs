//! The Xen PV backend: the kernel runs in ring 3, so interrupts are the event mask in
//! vcpu_info, page tables are read-only and changed by hypercall, and cpuid goes through
//! Xen's forced-emulation prefix.

use crate::arch::xen_common;
use crate::arch::xen_pv as platform;
use crate::pvops::{
    ConsoleOps, CpuOps, Cpuid, IrqOps, MmuOps, PvOps, ShutdownOps, SmpOps, TimeOps, FLAGS_IF,
};
use crate::sync::IrqMutex;
use core::arch::asm;
use core::sync::atomic::{compiler_fence, Ordering};
use hypercall::abi;
use hypercall::multicall::Batch;

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
        lazy_enter,
        lazy_flush,
        lazy_leave,
    },
    time: TimeOps {
        clock_ns: crate::time::xen_common::clock_ns,
        set_timer: crate::time::xen_common::set_timer,
    },
    console: ConsoleOps { write: crate::console::xen_write },
    shutdown: ShutdownOps { shutdown },
    smp: SmpOps {
        cpu_count: xen_common::cpu_count,
        start_cpu: platform::start_cpu,
        park_cpu: xen_common::park_cpu,
        wake_cpu: xen_common::wake_cpu,
        cpu_parked: xen_common::cpu_parked,
        set_percpu_base,
    },
};

/// `set_segment_base(SEGBASE_GS_KERNEL)`.
unsafe extern "C" fn set_percpu_base(base: u64) {
    // SAFETY: the caller vouches for the area; nothing relies on the old base.
    if let Err(e) = unsafe { hypercall::ops::set_gs_kernel_base(base) } {
        crate::console::emergency(format_args!("smp: cannot set the GS base: {e}\n"));
        shutdown(crate::pvops::Halt::Failure)
    }
}

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
    xen_common::this_vcpu().cr2()
}

extern "C" fn idle() {
    // SCHEDOP_block re-enables event delivery and blocks as one step, so an event that
    // became pending after the caller's check still wakes us.
    if let Err(e) = hypercall::ops::sched_block() {
        log::error!("SCHEDOP_block failed: {e}");
    }
}

// The irq ops address the calling vCPU's own vcpu_info, through its per-CPU area.

extern "C" fn save_fl() -> u64 {
    if xen_common::this_vcpu().upcall_mask() == 0 {
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
    xen_common::this_vcpu().set_upcall_mask(1);
    // The mask must be set before any code the caller protects with it.
    compiler_fence(Ordering::SeqCst);
}

extern "C" fn enable() {
    let vcpu = xen_common::this_vcpu();
    compiler_fence(Ordering::SeqCst);
    vcpu.set_upcall_mask(0);
    // Unmask, then check: an event that arrived while masked sits in upcall_pending and
    // Xen will not deliver it until our next entry into the hypervisor. Force one.
    compiler_fence(Ordering::SeqCst);
    if vcpu.upcall_pending() != 0 {
        xen_common::force_event_delivery();
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
    let mut lazy = LAZY.lock();
    if lazy.depth > 0 {
        lazy.queue_update(req);
        return;
    }
    drop(lazy);
    // SAFETY: the caller vouches for the entry; Xen validates the update itself.
    if let Err(e) = unsafe { hypercall::ops::mmu_update(&[req]) } {
        panic!("mmu_update of pte {ptep:p} = {val:#x} failed: {e}");
    }
}

unsafe extern "C" fn flush_tlb_one(va: u64) {
    let op = hypercall::ops::mmuext(abi::MMUEXT_INVLPG_LOCAL, va);
    let mut lazy = LAZY.lock();
    if lazy.depth > 0 {
        lazy.queue_invlpg(op);
        return;
    }
    drop(lazy);
    // SAFETY: a TLB flush does not change any mapping.
    if let Err(e) = unsafe { hypercall::ops::mmuext_op(&[op]) } {
        log::error!("MMUEXT_INVLPG_LOCAL {va:#x} failed: {e}");
    }
}

const LAZY_UPDATES: usize = 256;
const LAZY_INVLPGS: usize = 64;

/// Page-table updates and TLB flushes queued in lazy mode, issued as one multicall.
struct LazyQueue {
    /// Nesting depth of lazy sections; queuing happens while it is above zero.
    depth: u32,
    updates: [abi::mmu_update; LAZY_UPDATES],
    n_updates: usize,
    invlpgs: [abi::mmuext_op; LAZY_INVLPGS],
    n_invlpgs: usize,
    /// More single-page flushes were asked for than fit: flush the whole TLB instead.
    flush_all: [abi::mmuext_op; 1],
    flush_all_queued: bool,
}

// SAFETY: the queued mmuext_ops carry addresses and frame numbers only; their pointer
// member (a vCPU mask for multi-CPU flushes) is never set, so nothing refers to memory
// owned by another context.
unsafe impl Send for LazyQueue {}

static LAZY: IrqMutex<LazyQueue> = IrqMutex::new(LazyQueue {
    depth: 0,
    updates: [abi::mmu_update { ptr: 0, val: 0 }; LAZY_UPDATES],
    n_updates: 0,
    invlpgs: [hypercall::ops::mmuext(abi::MMUEXT_INVLPG_LOCAL, 0); LAZY_INVLPGS],
    n_invlpgs: 0,
    flush_all: [hypercall::ops::mmuext(abi::MMUEXT_TLB_FLUSH_LOCAL, 0)],
    flush_all_queued: false,
});

impl LazyQueue {
    fn queue_update(&mut self, req: abi::mmu_update) {
        if self.n_updates == LAZY_UPDATES {
            self.flush();
        }
        self.updates[self.n_updates] = req;
        self.n_updates += 1;
    }

    fn queue_invlpg(&mut self, op: abi::mmuext_op) {
        if self.n_invlpgs == LAZY_INVLPGS {
            self.flush_all_queued = true;
        } else {
            self.invlpgs[self.n_invlpgs] = op;
            self.n_invlpgs += 1;
        }
    }

    /// Issues everything queued, updates before flushes, in one multicall.
    fn flush(&mut self) {
        let mut batch = Batch::<2>::new();
        let domid = u64::from(abi::DOMID_SELF);
        // SAFETY: (both pushes) the arrays live in `self`, which outlives the flush below;
        // the updates were checked by set_pte's caller and Xen validates each one.
        unsafe {
            if self.n_updates > 0 {
                let args = [self.updates.as_ptr() as u64, self.n_updates as u64, 0, domid, 0, 0];
                let _ = batch.push(abi::nr::MMU_UPDATE, args);
            }
            let (ops, n) = if self.flush_all_queued {
                (self.flush_all.as_ptr(), 1)
            } else {
                (self.invlpgs.as_ptr(), self.n_invlpgs)
            };
            if n > 0 {
                let _ = batch.push(abi::nr::MMUEXT_OP, [ops as u64, n as u64, 0, domid, 0, 0]);
            }
        }
        let queued = (self.n_updates, self.n_invlpgs);
        self.n_updates = 0;
        self.n_invlpgs = 0;
        self.flush_all_queued = false;
        if let Err(e) = batch.flush() {
            // The page tables are now in a state no caller expects: stop here.
            panic!("lazy MMU batch of {} updates, {} flushes failed: {e}", queued.0, queued.1);
        }
    }
}

extern "C" fn lazy_enter() {
    LAZY.lock().depth += 1;
}

extern "C" fn lazy_flush() {
    LAZY.lock().flush();
}

extern "C" fn lazy_leave() {
    let mut lazy = LAZY.lock();
    lazy.depth = lazy.depth.saturating_sub(1);
    if lazy.depth == 0 {
        lazy.flush();
    }
}

extern "C" fn pfn_to_frame(pfn: u64) -> u64 {
    platform::pfn_to_mfn(pfn)
}

extern "C" fn frame_to_pfn(frame: u64) -> u64 {
    platform::mfn_to_pfn(frame).unwrap_or(crate::pvops::INVALID_PFN)
}

unsafe extern "C" fn make_table(pfn: u64) {
    // SAFETY: the caller hands over a page nothing references; mapping it read-only in the
    // direct map is what Xen requires of a page-table page.
    if let Err(e) = unsafe { platform::set_direct_map_writable(pfn, false) } {
        panic!("cannot make pfn {pfn:#x} read-only for a page table: {e}");
    }
}

extern "C" fn shutdown(how: crate::pvops::Halt) -> ! {
    xen_common::shutdown(how)
}

/// The irq ops as `call rel32` straight to the functions above, what the patcher made of
/// every Xen PV site before irq_disable and save_fl went inline: for the benchmarks to
/// compare the two in one boot.
pub mod direct {
    // SAFETY (for every asm! below): the callee is an `extern "C"` function of exactly the
    // signature the operands describe, and clobber_abi("C") declares what it may clobber;
    // callers run under Xen PV (`pvops::is_xen_pv()`), where these are the irq ops.

    #[inline(always)]
    pub fn irq_disable() {
        // SAFETY: see above.
        unsafe { core::arch::asm!("call {f}", f = sym super::disable, clobber_abi("C")) };
    }

    #[inline(always)]
    pub fn irq_enable() {
        // SAFETY: see above.
        unsafe { core::arch::asm!("call {f}", f = sym super::enable, clobber_abi("C")) };
    }

    #[inline(always)]
    pub fn save_fl() -> u64 {
        let v: u64;
        // SAFETY: see above.
        unsafe {
            core::arch::asm!("call {f}", f = sym super::save_fl, lateout("rax") v, clobber_abi("C"))
        };
        v
    }

    #[inline(always)]
    pub fn restore_fl(flags: u64) {
        // SAFETY: see above.
        unsafe {
            core::arch::asm!("call {f}", f = sym super::restore_fl, in("rdi") flags, clobber_abi("C"))
        };
    }
}
