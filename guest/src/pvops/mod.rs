//! pv_ops: one table of privileged operations (cpu, irq, mmu, time, console, shutdown, smp),
//! filled once at boot with one of three backends: native, Xen PV, or Xen PVH (native
//! cpu/irq/mmu ops, Xen's time, console and shutdown).
//!
//! Every call goes through a call site emitted by [`pv_call!`]: a 6-byte
//! `call *PV_OPS+slot(%rip)` plus a record in `.parainstructions` (site address, op, length,
//! clobbers), the shape Linux's paravirt patching uses. Once the backend is chosen, [`patch`]
//! rewrites each site into the inline instruction, a direct call or NOPs (`nopvpatch` on
//! the command line keeps the indirect calls).

pub mod patch;

pub use crate::pvpatch::{Backend, Op};

use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, Ordering};

/// What `cpuid` returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The interrupt-enable bit of the flags word `save_fl` returns (RFLAGS.IF natively).
pub const FLAGS_IF: u64 = 1 << 9;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuOps {
    pub cpuid: unsafe extern "C" fn(leaf: u32, subleaf: u32, out: *mut Cpuid),
    /// The faulting address of the last page fault.
    pub read_cr2: extern "C" fn() -> u64,
    /// Enables interrupts (events) and waits for one, atomically.
    pub idle: extern "C" fn(),
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IrqOps {
    pub save_fl: extern "C" fn() -> u64,
    pub restore_fl: extern "C" fn(flags: u64),
    pub disable: extern "C" fn(),
    pub enable: extern "C" fn(),
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmuOps {
    /// The frame of the root page table.
    pub read_cr3: extern "C" fn() -> u64,
    /// Writes a page-table entry that maps a frame number (as [`MmuOps::pfn_to_frame`]).
    pub set_pte: unsafe extern "C" fn(ptep: *mut u64, val: u64),
    pub flush_tlb_one: unsafe extern "C" fn(va: u64),
    /// The frame number hardware (and other domains) see for one of our pages.
    pub pfn_to_frame: extern "C" fn(pfn: u64) -> u64,
    /// The inverse; [`INVALID_PFN`] for a frame that is not ours.
    pub frame_to_pfn: extern "C" fn(frame: u64) -> u64,
    /// Makes a zeroed page fit to become a page table (Xen: no writable mapping may remain).
    pub make_table: unsafe extern "C" fn(pfn: u64),
    /// Lazy mode: from `lazy_enter` to `lazy_leave`, `set_pte` and `flush_tlb_one` may be
    /// queued and issued together (Xen: one hypercall per batch). Page tables read back
    /// inside the section may be stale until `lazy_flush` or `lazy_leave`.
    pub lazy_enter: extern "C" fn(),
    pub lazy_flush: extern "C" fn(),
    pub lazy_leave: extern "C" fn(),
}

/// Returned by `frame_to_pfn` for frames we do not own.
pub const INVALID_PFN: u64 = u64::MAX;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TimeOps {
    /// Monotonic nanoseconds since an arbitrary boot-time origin.
    pub clock_ns: extern "C" fn() -> u64,
    /// Arms the one-shot timer interrupt for when `clock_ns` reaches the deadline (at once
    /// if it has passed); a later call replaces an earlier one.
    pub set_timer: extern "C" fn(deadline_ns: u64),
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConsoleOps {
    /// Writes bytes; returns how many were lost (0 when all went out).
    pub write: unsafe extern "C" fn(bytes: *const u8, len: usize) -> usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ShutdownOps {
    pub shutdown: extern "C" fn(how: Halt) -> !,
}

/// Where and how a CPU that [`SmpOps::start_cpu`] starts begins: the backend's own entry
/// code runs on `stack_top`, sets the CPU up for its platform, makes `percpu` its per-CPU
/// base and enters `crate::smp::secondary_main(cpu)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CpuStart {
    pub stack_top: u64,
    pub percpu: u64,
}

/// The other CPUs (vCPUs): how many the platform gives, starting one, and parking a CPU
/// with nothing to do until another wakes it (Xen: `VCPUOP_down` and `VCPUOP_up`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SmpOps {
    /// CPUs the platform gives us, the boot CPU included (at least 1).
    pub cpu_count: extern "C" fn() -> u32,
    /// Starts `cpu` (never started before) as `start` says: 0, or a negative errno.
    pub start_cpu: unsafe extern "C" fn(cpu: u32, start: *const CpuStart) -> i64,
    /// Stops the calling CPU, `cpu`, until [`SmpOps::wake_cpu`]; returns then.
    pub park_cpu: extern "C" fn(cpu: u32),
    /// Lets parked `cpu` go on.
    pub wake_cpu: extern "C" fn(cpu: u32),
    /// Whether `cpu` is parked (or was never started).
    pub cpu_parked: extern "C" fn(cpu: u32) -> bool,
    /// Makes `base` the calling CPU's per-CPU base (what `gs:` addresses).
    pub set_percpu_base: unsafe extern "C" fn(base: u64),
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PvOps {
    pub cpu: CpuOps,
    pub irq: IrqOps,
    pub mmu: MmuOps,
    pub time: TimeOps,
    pub console: ConsoleOps,
    pub shutdown: ShutdownOps,
    pub smp: SmpOps,
}

impl Op {
    /// Offset of this op's function pointer in [`PvOps`].
    pub const fn slot(self) -> usize {
        match self {
            Op::Cpuid => offset_of!(PvOps, cpu.cpuid),
            Op::ReadCr2 => offset_of!(PvOps, cpu.read_cr2),
            Op::Idle => offset_of!(PvOps, cpu.idle),
            Op::SaveFl => offset_of!(PvOps, irq.save_fl),
            Op::RestoreFl => offset_of!(PvOps, irq.restore_fl),
            Op::IrqDisable => offset_of!(PvOps, irq.disable),
            Op::IrqEnable => offset_of!(PvOps, irq.enable),
            Op::ReadCr3 => offset_of!(PvOps, mmu.read_cr3),
            Op::SetPte => offset_of!(PvOps, mmu.set_pte),
            Op::FlushTlbOne => offset_of!(PvOps, mmu.flush_tlb_one),
            Op::PfnToFrame => offset_of!(PvOps, mmu.pfn_to_frame),
            Op::FrameToPfn => offset_of!(PvOps, mmu.frame_to_pfn),
            Op::MakeTable => offset_of!(PvOps, mmu.make_table),
            Op::LazyEnter => offset_of!(PvOps, mmu.lazy_enter),
            Op::LazyFlush => offset_of!(PvOps, mmu.lazy_flush),
            Op::LazyLeave => offset_of!(PvOps, mmu.lazy_leave),
            Op::ClockNs => offset_of!(PvOps, time.clock_ns),
            Op::SetTimer => offset_of!(PvOps, time.set_timer),
            Op::ConsoleWrite => offset_of!(PvOps, console.write),
            Op::Shutdown => offset_of!(PvOps, shutdown.shutdown),
            Op::CpuCount => offset_of!(PvOps, smp.cpu_count),
            Op::StartCpu => offset_of!(PvOps, smp.start_cpu),
            Op::ParkCpu => offset_of!(PvOps, smp.park_cpu),
            Op::WakeCpu => offset_of!(PvOps, smp.wake_cpu),
            Op::CpuParked => offset_of!(PvOps, smp.cpu_parked),
            Op::SetPercpuBase => offset_of!(PvOps, smp.set_percpu_base),
        }
    }
}

/// A `.parainstructions` record: one per emitted call site.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PatchSite {
    pub addr: u64,
    pub op: u16,
    pub len: u8,
    /// Registers the site may clobber: [`CLOBBERS_C_ABI`] for every site today.
    pub clobbers: u8,
    _reserved: u32,
}

/// The site clobbers what the C ABI lets a callee clobber.
pub const CLOBBERS_C_ABI: u8 = 1;

/// The op table every call site reads, filled by [`install`] before the first privileged
/// operation with the table boot chose (each backend's lives with its platform code, so
/// that this module names none of them).
static mut PV_OPS: PvOps = UNINSTALLED;

/// What the table holds until [`install`]. Nothing may call through it before (install's
/// contract); one that does stops at an invalid opcode, at once, rather than running one
/// platform's privileged instruction on another.
const UNINSTALLED: PvOps = PvOps {
    cpu: CpuOps { cpuid: uninstalled_cpuid, read_cr2: uninstalled_u64, idle: uninstalled },
    irq: IrqOps {
        save_fl: uninstalled_u64,
        restore_fl: uninstalled_arg,
        disable: uninstalled,
        enable: uninstalled,
    },
    mmu: MmuOps {
        read_cr3: uninstalled_u64,
        set_pte: uninstalled_set_pte,
        flush_tlb_one: uninstalled_arg,
        pfn_to_frame: uninstalled_map,
        frame_to_pfn: uninstalled_map,
        make_table: uninstalled_arg,
        lazy_enter: uninstalled,
        lazy_flush: uninstalled,
        lazy_leave: uninstalled,
    },
    time: TimeOps { clock_ns: uninstalled_u64, set_timer: uninstalled_arg },
    console: ConsoleOps { write: uninstalled_write },
    shutdown: ShutdownOps { shutdown: uninstalled_shutdown },
    smp: SmpOps {
        cpu_count: uninstalled_u32,
        start_cpu: uninstalled_start_cpu,
        park_cpu: uninstalled_u32_arg,
        wake_cpu: uninstalled_u32_arg,
        cpu_parked: uninstalled_bool,
        set_percpu_base: uninstalled_set_base,
    },
};

fn stop_uninstalled() -> ! {
    // SAFETY: ud2 only raises #UD.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

extern "C" fn uninstalled() {
    stop_uninstalled()
}

extern "C" fn uninstalled_u64() -> u64 {
    stop_uninstalled()
}

extern "C" fn uninstalled_arg(_: u64) {
    stop_uninstalled()
}

extern "C" fn uninstalled_map(_: u64) -> u64 {
    stop_uninstalled()
}

extern "C" fn uninstalled_cpuid(_: u32, _: u32, _: *mut Cpuid) {
    stop_uninstalled()
}

extern "C" fn uninstalled_set_pte(_: *mut u64, _: u64) {
    stop_uninstalled()
}

extern "C" fn uninstalled_write(_: *const u8, _: usize) -> usize {
    stop_uninstalled()
}

extern "C" fn uninstalled_shutdown(_: Halt) -> ! {
    stop_uninstalled()
}

extern "C" fn uninstalled_u32() -> u32 {
    stop_uninstalled()
}

extern "C" fn uninstalled_u32_arg(_: u32) {
    stop_uninstalled()
}

extern "C" fn uninstalled_bool(_: u32) -> bool {
    stop_uninstalled()
}

unsafe extern "C" fn uninstalled_start_cpu(_: u32, _: *const CpuStart) -> i64 {
    stop_uninstalled()
}

unsafe extern "C" fn uninstalled_set_base(_: u64) {
    stop_uninstalled()
}

static BACKEND: AtomicU8 = AtomicU8::new(Backend::Native as u8);

/// Fills the op table.
///
/// # Safety
/// Called once, first thing at boot on one CPU, before any pv_ops call; `ops` must be the
/// backend that matches the platform we run on.
pub unsafe fn install(backend: Backend, ops: PvOps) {
    // SAFETY: nothing reads the table concurrently (single CPU, before any call site runs).
    unsafe { core::ptr::addr_of_mut!(PV_OPS).write(ops) };
    BACKEND.store(backend as u8, Ordering::Relaxed);
}

pub fn backend() -> Backend {
    match BACKEND.load(Ordering::Relaxed) {
        1 => Backend::XenPv,
        2 => Backend::XenPvh,
        _ => Backend::Native,
    }
}

/// Whether we run under Xen (PV or PVH): event channels, grants, xenstore exist.
pub fn is_xen() -> bool {
    backend() != Backend::Native
}

/// Whether we run as a Xen PV guest: ring 3, Xen-validated page tables, start_info.
pub fn is_xen_pv() -> bool {
    backend() == Backend::XenPv
}

/// The address of the op table (for checking call-site encodings).
pub fn table_addr() -> u64 {
    core::ptr::addr_of!(PV_OPS) as u64
}

/// The function a slot currently holds.
pub fn slot_target(op: Op) -> u64 {
    // SAFETY: the table is only written by `install`, before anything reads it.
    unsafe { ((table_addr() as usize + op.slot()) as *const u64).read() }
}

/// All recorded call sites.
pub fn sites() -> &'static [PatchSite] {
    extern "C" {
        static __parainstructions_start: PatchSite;
        static __parainstructions_end: PatchSite;
    }
    // SAFETY: the linker script places only PatchSite records (16 bytes, 8-aligned)
    // between the two symbols, in a section that is never written.
    unsafe {
        let start = core::ptr::addr_of!(__parainstructions_start);
        let end = core::ptr::addr_of!(__parainstructions_end);
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// Emits one pv_ops call site and its `.parainstructions` record.
macro_rules! pv_call {
    ($op:ident; $($operands:tt)*) => {
        core::arch::asm!(
            "771:",
            "call qword ptr [rip + {ops} + {slot}]",
            // Room for the op's inline form, where it is longer than the call.
            ".if {pad} > 0",
            ".nops {pad}",
            ".endif",
            "772:",
            ".pushsection .parainstructions, \"a\"",
            ".balign 8",
            ".quad 771b",
            ".short {op}",
            ".byte 772b - 771b",
            ".byte {clobbers}",
            ".long 0",
            ".popsection",
            ops = sym PV_OPS,
            slot = const Op::$op.slot(),
            pad = const $crate::pvpatch::site_len(Op::$op) - $crate::pvpatch::CALL_LEN,
            op = const Op::$op as u16,
            clobbers = const CLOBBERS_C_ABI,
            $($operands)*
            clobber_abi("C"),
        )
    };
}

/// The same call as [`pv_call!`] without a record: the patcher never sees it, so it stays
/// indirect (for measuring what patching saves).
macro_rules! pv_call_unrecorded {
    ($op:ident; $($operands:tt)*) => {
        core::arch::asm!(
            "call qword ptr [rip + {ops} + {slot}]",
            ops = sym PV_OPS,
            slot = const Op::$op.slot(),
            $($operands)*
            clobber_abi("C"),
        )
    };
}

// The wrappers are `inline(always)` so that each caller gets its own patchable site.
// SAFETY (for every pv_call! below): the slot holds an `extern "C"` function of exactly the
// signature the operands describe (the table is typed and filled only by `install`), and
// clobber_abi("C") declares everything such a function may clobber.

#[inline(always)]
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let mut out = Cpuid::default();
    // SAFETY: see above; `out` is valid for the callee to write.
    unsafe {
        pv_call!(Cpuid; in("edi") leaf, in("esi") subleaf, in("rdx") &mut out as *mut Cpuid,)
    };
    out
}

#[inline(always)]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { pv_call!(ReadCr2; lateout("rax") v,) };
    v
}

#[inline(always)]
pub fn idle() {
    // SAFETY: see above.
    unsafe { pv_call!(Idle;) };
}

#[inline(always)]
pub fn save_fl() -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { pv_call!(SaveFl; lateout("rax") v,) };
    v
}

#[inline(always)]
pub fn restore_fl(flags: u64) {
    // SAFETY: see above.
    unsafe { pv_call!(RestoreFl; in("rdi") flags,) };
}

#[inline(always)]
pub fn irq_disable() {
    // SAFETY: see above.
    unsafe { pv_call!(IrqDisable;) };
}

#[inline(always)]
pub fn irq_enable() {
    // SAFETY: see above.
    unsafe { pv_call!(IrqEnable;) };
}

#[inline(always)]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { pv_call!(ReadCr3; lateout("rax") v,) };
    v
}

/// # Safety
/// `ptep` is an entry of a live page table of ours, and the change must not invalidate
/// memory Rust still references.
#[inline(always)]
pub unsafe fn set_pte(ptep: *mut u64, val: u64) {
    // SAFETY: see above; the caller vouches for the entry.
    unsafe { pv_call!(SetPte; in("rdi") ptep, in("rsi") val,) };
}

/// # Safety
/// None beyond performance: a TLB flush cannot break memory safety, but it is `unsafe`
/// to keep page-table manipulation in one audited place.
#[inline(always)]
pub unsafe fn flush_tlb_one(va: u64) {
    // SAFETY: see above.
    unsafe { pv_call!(FlushTlbOne; in("rdi") va,) };
}

#[inline(always)]
pub fn pfn_to_frame(pfn: u64) -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { pv_call!(PfnToFrame; in("rdi") pfn, lateout("rax") v,) };
    v
}

#[inline(always)]
pub fn frame_to_pfn(frame: u64) -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { pv_call!(FrameToPfn; in("rdi") frame, lateout("rax") v,) };
    v
}

/// # Safety
/// `pfn` is a zeroed page we own that nothing references, about to become a page table.
#[inline(always)]
pub unsafe fn make_table(pfn: u64) {
    // SAFETY: see above; the caller vouches for the page.
    unsafe { pv_call!(MakeTable; in("rdi") pfn,) };
}

/// Page-table updates may be batched until the returned guard is dropped.
#[inline(always)]
pub fn lazy_mmu() -> LazyMmu {
    // SAFETY: see above.
    unsafe { pv_call!(LazyEnter;) };
    LazyMmu(())
}

/// Issues the updates queued so far in lazy mode.
#[inline(always)]
pub fn lazy_flush() {
    // SAFETY: see above.
    unsafe { pv_call!(LazyFlush;) };
}

/// A lazy-MMU section; leaving it (on drop) issues what is still queued.
pub struct LazyMmu(());

impl Drop for LazyMmu {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: see above.
        unsafe { pv_call!(LazyLeave;) };
    }
}

#[inline(always)]
pub fn clock_ns() -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { pv_call!(ClockNs; lateout("rax") v,) };
    v
}

#[inline(always)]
pub fn set_timer(deadline_ns: u64) {
    // SAFETY: see above.
    unsafe { pv_call!(SetTimer; in("rdi") deadline_ns,) };
}

/// Writes to the console; returns how many bytes were lost.
#[inline(always)]
pub fn console_write(bytes: &[u8]) -> usize {
    let lost: usize;
    // SAFETY: see above; the callee only reads `len` bytes.
    unsafe {
        pv_call!(ConsoleWrite; in("rdi") bytes.as_ptr(), in("rsi") bytes.len(), lateout("rax") lost,)
    };
    lost
}

/// How the machine stops.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// A clean poweroff: everything went well.
    Poweroff = 0,
    /// Something failed (Xen: the domain crashes; natively: QEMU exits with the fail code).
    Failure = 1,
    /// Start again (Xen: the toolstack restarts the domain; natively: a reset).
    Reboot = 2,
}

/// Stops the machine.
#[inline(always)]
pub fn shutdown(how: Halt) -> ! {
    // SAFETY: see above; the callee does not return.
    unsafe { pv_call!(Shutdown; in("edi") how as u32, options(noreturn),) }
}

/// CPUs the platform gives us, the boot CPU included.
#[inline(always)]
pub fn cpu_count() -> u32 {
    let v: u32;
    // SAFETY: see above.
    unsafe { pv_call!(CpuCount; lateout("eax") v,) };
    v
}

/// Starts `cpu`: 0 or a negative errno.
///
/// # Safety
/// `cpu` was never started, and `start`'s stack is the CPU's alone for good, mapped,
/// and `percpu` its per-CPU area.
#[inline(always)]
pub unsafe fn start_cpu(cpu: u32, start: &CpuStart) -> i64 {
    let v: i64;
    // SAFETY: see above; the caller vouches for what the CPU is started on.
    unsafe {
        pv_call!(StartCpu; in("edi") cpu, in("rsi") start as *const CpuStart, lateout("rax") v,)
    };
    v
}

/// Parks the calling CPU, `cpu`, until another wakes it.
#[inline(always)]
pub fn park_cpu(cpu: u32) {
    // SAFETY: see above.
    unsafe { pv_call!(ParkCpu; in("edi") cpu,) };
}

#[inline(always)]
pub fn wake_cpu(cpu: u32) {
    // SAFETY: see above.
    unsafe { pv_call!(WakeCpu; in("edi") cpu,) };
}

#[inline(always)]
pub fn cpu_parked(cpu: u32) -> bool {
    let v: u8;
    // SAFETY: see above (a C `bool` comes back in al).
    unsafe { pv_call!(CpuParked; in("edi") cpu, lateout("al") v,) };
    v != 0
}

/// # Safety
/// `base` is the calling CPU's per-CPU area, live for good; nothing relies on the old base.
#[inline(always)]
pub unsafe fn set_percpu_base(base: u64) {
    // SAFETY: see above; the caller vouches for the area.
    unsafe { pv_call!(SetPercpuBase; in("rdi") base,) };
}

/// A few ops through the op table whatever the patcher did, for the benchmarks to compare
/// against the patched sites in the same boot.
pub mod indirect {
    use super::{Cpuid, Op, PV_OPS};

    // SAFETY (for every pv_call_unrecorded! below): as for pv_call!.

    #[inline(always)]
    pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
        let mut out = Cpuid::default();
        // SAFETY: see above; `out` is valid for the callee to write.
        unsafe {
            pv_call_unrecorded!(
                Cpuid; in("edi") leaf, in("esi") subleaf, in("rdx") &mut out as *mut Cpuid,
            )
        };
        out
    }

    #[inline(always)]
    pub fn save_fl() -> u64 {
        let v: u64;
        // SAFETY: see above.
        unsafe { pv_call_unrecorded!(SaveFl; lateout("rax") v,) };
        v
    }

    #[inline(always)]
    pub fn restore_fl(flags: u64) {
        // SAFETY: see above.
        unsafe { pv_call_unrecorded!(RestoreFl; in("rdi") flags,) };
    }

    #[inline(always)]
    pub fn irq_disable() {
        // SAFETY: see above.
        unsafe { pv_call_unrecorded!(IrqDisable;) };
    }

    #[inline(always)]
    pub fn irq_enable() {
        // SAFETY: see above.
        unsafe { pv_call_unrecorded!(IrqEnable;) };
    }
}

/// Interrupts (events) disabled until dropped, then restored to what they were.
pub struct IrqGuard {
    flags: u64,
}

pub fn irq_save() -> IrqGuard {
    let flags = save_fl();
    irq_disable();
    IrqGuard { flags }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        restore_fl(self.flags);
    }
}
