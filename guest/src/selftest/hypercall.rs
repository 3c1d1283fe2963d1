use super::{check, xen_only, Outcome, Test};
use crate::arch::pfn_to_virt;
use crate::mm::{self, paging};
use core::hint::black_box;
use hypercall::raw::{self, Entry};
use hypercall::{abi, Errno};

pub const TESTS: &[Test] = &[
    Test { name: "hypercall::xen_version", run: xen_version },
    Test { name: "hypercall::register_abi", run: register_abi },
    Test { name: "hypercall::arities_live", run: arities_live },
    Test { name: "hypercall::multicall_reports_bad_entry", run: multicall_reports_bad_entry },
];

fn xen_version() -> Outcome {
    xen_only!();
    let (major, minor) = match hypercall::ops::xen_version() {
        Ok(v) => v,
        Err(e) => return Outcome::Fail(alloc::format!("XENVER_version: {e}")),
    };
    check!(major >= 4, "Xen {major}.{minor} is older than any Xen with 64-bit-only PV");
    let (extra, len) = match hypercall::ops::xen_extraversion() {
        Ok(v) => v,
        Err(e) => return Outcome::Fail(alloc::format!("XENVER_extraversion: {e}")),
    };
    let extra = &extra[..len];
    check!(
        !extra.is_empty() && extra.iter().all(|b| b.is_ascii_graphic()),
        "extraversion {extra:?} is not printable text"
    );
    // A second, independent report of the version: Xen's CPUID leaf base + 1.
    let leaf = crate::pvops::cpuid(0x4000_0001, 0).eax;
    check!(
        leaf == (major as u32) << 16 | minor as u32,
        "CPUID says {}.{}, XENVER_version says {major}.{minor}",
        leaf >> 16,
        leaf & 0xffff
    );
    log::info!("Xen {major}.{minor}{}", core::str::from_utf8(extra).unwrap_or("?"));
    Outcome::Pass
}

extern "C" {
    fn abi_probe();
    static mut abi_probe_regs: [u64; 6];
}

// A stand-in hypercall page slot: records the argument registers, then clobbers every
// register Xen may clobber, and returns a marker in rax.
core::arch::global_asm!(
    r#"
    .text
    .globl abi_probe
abi_probe:
    movq %rdi, abi_probe_regs+0(%rip)
    movq %rsi, abi_probe_regs+8(%rip)
    movq %rdx, abi_probe_regs+16(%rip)
    movq %r10, abi_probe_regs+24(%rip)
    movq %r8,  abi_probe_regs+32(%rip)
    movq %r9,  abi_probe_regs+40(%rip)
    movq $-1, %rdi
    movq $-1, %rsi
    movq $-1, %rdx
    movq $-1, %r10
    movq $-1, %r8
    movq $-1, %r9
    movq $-1, %rcx
    movq $-1, %r11
    movq $0x0abe0abe, %rax
    ret
    .data
    .balign 8
    .globl abi_probe_regs
abi_probe_regs:
    .quad 0, 0, 0, 0, 0, 0
"#,
    options(att_syntax)
);

/// Every arity puts its arguments in the documented registers (rdi, rsi, rdx, r10, r8),
/// returns rax, and survives the callee clobbering all six argument registers, as a
/// debug Xen does whatever the arity.
fn register_abi() -> Outcome {
    const MARKER: i64 = 0x0abe_0abe;
    let args: [u64; 5] = black_box([
        0x1111_0000_0000_0001,
        0x2222_0000_0000_0002,
        0x3333_0000_0000_0003,
        0x4444_0000_0000_0004,
        0x5555_0000_0000_0005,
    ]);
    // SAFETY: abi_probe follows the hypercall register ABI and returns.
    let entry = unsafe { Entry::at(abi_probe as *const () as usize) };
    for arity in 0..=5usize {
        // SAFETY: as above; the probe only writes its own record.
        unsafe { (*core::ptr::addr_of_mut!(abi_probe_regs)) = [0; 6] };
        let [a1, a2, a3, a4, a5] = args;
        // SAFETY: the probe is not a hypercall: it touches nothing of ours but its record.
        let ret = unsafe {
            match arity {
                0 => raw::call0(entry),
                1 => raw::call1(entry, a1),
                2 => raw::call2(entry, a1, a2),
                3 => raw::call3(entry, a1, a2, a3),
                4 => raw::call4(entry, a1, a2, a3, a4),
                _ => raw::call5(entry, a1, a2, a3, a4, a5),
            }
        };
        check!(ret == MARKER, "arity {arity}: returned {ret:#x}");
        // SAFETY: reading the probe's record after the call.
        let seen = unsafe { *core::ptr::addr_of!(abi_probe_regs) };
        for i in 0..arity {
            check!(
                seen[i] == args[i],
                "arity {arity}: argument {} arrived as {:#x}",
                i + 1,
                seen[i]
            );
        }
        // The arguments are still intact for the caller: the clobbers were declared.
        check!(black_box(args) == [a1, a2, a3, a4, a5], "arity {arity}: caller's values clobbered");
    }
    Outcome::Pass
}

/// Real hypercalls of every arity, each checked for what Xen did with every argument.
/// Arities 2 to 4 use different hypercalls under PV and PVH: each mode has its own set.
fn arities_live() -> Outcome {
    xen_only!();
    // Arity 0: a hypercall number Xen leaves unimplemented.
    // SAFETY: an unimplemented hypercall does nothing.
    let r = unsafe { raw::hypercall0(55) };
    check!(r == -(Errno::ENOSYS.0 as i64), "hypercall 55 returned {r}");

    // Arity 1: set_timer_op with a deadline in the past fires at once; 0 cancels it.
    check!(hypercall::ops::set_timer(1).is_ok(), "set_timer_op(1)");
    check!(hypercall::ops::set_timer(0).is_ok(), "set_timer_op(0)");

    let outcome =
        if crate::pvops::is_xen_pv() { pv_arities_2_to_4() } else { pvh_arities_2_to_4() };
    if !matches!(outcome, Outcome::Pass) {
        return outcome;
    }

    // Arity 5: argo_op is the one 5-argument hypercall; Debian's Xen is built without it.
    // SAFETY: with Argo absent the hypercall does nothing; with it, cmd 0 is invalid.
    let r = unsafe { raw::hypercall5(abi::nr::ARGO_OP, 0, 0, 0, 0, 0) };
    check!(
        r == -(Errno::ENOSYS.0 as i64)
            || r == -(Errno::EOPNOTSUPP.0 as i64)
            || r == -(Errno::EINVAL.0 as i64),
        "argo_op returned {r}"
    );
    Outcome::Pass
}

/// PVH: hvm_op reads back the callback vector boot set (command and struct both taken),
/// and grant_table_op fills one query_size. No 4-argument hypercall serves a PVH guest
/// (mmuext_op refuses translated domains), so arity 4 is left to the PV run.
fn pvh_arities_2_to_4() -> Outcome {
    let want =
        abi::HVM_PARAM_CALLBACK_TYPE_VECTOR | u64::from(crate::arch::xen_pvh::CALLBACK_VECTOR);
    let got = hypercall::ops::hvm_get_param(abi::HVM_PARAM_CALLBACK_IRQ);
    check!(got == Ok(want), "HVM_PARAM_CALLBACK_IRQ reads {got:x?}, expected {want:#x}");
    match grant::ops::query_size() {
        Ok((frames, max)) => {
            check!(frames >= 1 && frames <= max, "grant table query_size: {frames} of {max}")
        }
        Err(e) => return Outcome::Fail(alloc::format!("grant table query_size: {e:?}")),
    }
    Outcome::Pass
}

/// PV: set_segment_base, update_va_mapping and mmu_update, each seen to take effect.
fn pv_arities_2_to_4() -> Outcome {
    // Arity 2: set_segment_base(FS) then read through %fs: both arguments took effect.
    let cell: u64 = black_box(0x0f5_0f5);
    // SAFETY: the kernel does not use FS.
    let set = unsafe { hypercall::ops::set_fs_base(&cell as *const u64 as u64) };
    check!(set.is_ok(), "set_fs_base: {set:?}");
    let via_fs: u64;
    // SAFETY: FS now points at `cell`, which is live.
    unsafe { core::arch::asm!("mov {}, fs:[0]", out(reg) via_fs, options(nostack, readonly)) };
    check!(via_fs == cell, "read {via_fs:#x} through FS, expected {cell:#x}");

    // Arities 3 and 4: update_va_mapping and mmu_update on a scratch mapping.
    const VA: u64 = 0xffff_c000_1000_0000;
    let (a, b) = match (mm::alloc_frame(), mm::alloc_frame()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Outcome::Fail("no frames".into()),
    };
    // SAFETY: fresh frames of ours, written through the direct map.
    unsafe {
        (pfn_to_virt(a) as *mut u64).write(0xaaaa);
        (pfn_to_virt(b) as *mut u64).write(0xbbbb);
    }
    let outcome = (|| {
        // SAFETY: VA is a scratch address nothing else uses.
        let mapped = unsafe { paging::map(VA, a, false) };
        check!(mapped.is_ok(), "map scratch page: {mapped:?}");
        // SAFETY: reading the page we just mapped.
        let v = unsafe { (VA as *const u64).read_volatile() };
        check!(v == 0xaaaa, "scratch page content {v:#x}");
        let pte_b = crate::arch::xen_pv::direct_pte(b, false);
        // SAFETY: remaps the scratch VA to another frame of ours.
        let r = unsafe { hypercall::ops::update_va_mapping(VA, pte_b, abi::UVMF_INVLPG) };
        check!(r.is_ok(), "update_va_mapping: {r:?}");
        // SAFETY: as above.
        let v = unsafe { (VA as *const u64).read_volatile() };
        check!(v == 0xbbbb, "update_va_mapping ignored va/pte: read {v:#x}");
        let Ok(ptep) = paging::entry(VA, 1, false) else {
            return Outcome::Fail("no pte".into());
        };
        let req = |pfn| abi::mmu_update {
            ptr: crate::arch::xen_pv::virt_to_machine(ptep as u64)
                | abi::MMU_NORMAL_PT_UPDATE as u64,
            val: crate::arch::xen_pv::direct_pte(pfn, false),
        };
        // SAFETY: two updates of the scratch PTE, ending on frame a.
        let done = unsafe { hypercall::ops::mmu_update(&[req(b), req(a)]) };
        check!(done == Ok(2), "mmu_update of 2 entries reported {done:?}");
        // SAFETY: flush the stale translation, then read.
        unsafe { crate::pvops::flush_tlb_one(VA) };
        // SAFETY: reading the scratch page.
        let v = unsafe { (VA as *const u64).read_volatile() };
        check!(v == 0xaaaa, "mmu_update not applied in order: read {v:#x}");
        Outcome::Pass
    })();
    // SAFETY: the scratch mapping is no longer used.
    let _ = unsafe { paging::unmap(VA) };
    let _ = (mm::free_frame(a), mm::free_frame(b));
    outcome
}

/// A multicall with one bad entry among good ones runs them all and names exactly that one.
fn multicall_reports_bad_entry() -> Outcome {
    use hypercall::multicall::{Batch, BatchError};
    xen_only!();
    const EVTCHNOP_CLOSE: u64 = abi::EVTCHNOP_close as u64;
    // Port 0 is never bound, so closing it is refused; the struct outlives the flush.
    let mut bad_close = abi::evtchn_close { port: u32::MAX };
    let version = [abi::XENVER_VERSION as u64, 0, 0, 0, 0, 0];
    let close = [EVTCHNOP_CLOSE, &mut bad_close as *mut _ as u64, 0, 0, 0, 0];
    let mut batch = Batch::<4>::new();
    let before = raw::count();
    // SAFETY: xen_version takes no buffer; the close argument lives until the flush.
    unsafe {
        let _ = batch.push(abi::nr::XEN_VERSION, version);
        let _ = batch.push(abi::nr::EVENT_CHANNEL_OP, close);
        let _ = batch.push(abi::nr::XEN_VERSION, version);
    }
    let r = batch.flush();
    check!(raw::count() - before == 1, "{} hypercalls for one batch", raw::count() - before);
    match r {
        Err(BatchError::Entries { index: 1, op, errno, failed: 1 })
            if op == abi::nr::EVENT_CHANNEL_OP =>
        {
            check!(errno == Errno::EINVAL, "bad close reported {errno}, expected EINVAL");
        }
        other => return Outcome::Fail(alloc::format!("batch reported {other:?}")),
    }
    // SAFETY: as above.
    unsafe {
        let _ = batch.push(abi::nr::XEN_VERSION, version);
        let _ = batch.push(abi::nr::XEN_VERSION, version);
    }
    check!(batch.flush() == Ok(()), "a good batch failed");
    Outcome::Pass
}
