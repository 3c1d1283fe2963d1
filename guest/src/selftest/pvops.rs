use super::{check, Outcome, Test};
use crate::arch::{text_range, xen_common, PAGE_SIZE};
use crate::mm::paging;
use crate::pvops::{self, patch, Op, FLAGS_IF};

pub const TESTS: &[Test] = &[
    Test { name: "pvops::call_sites", run: call_sites },
    Test { name: "pvops::irq_round_trip", run: irq_round_trip },
    Test { name: "pvops::text_read_only", run: text_read_only },
];

/// Every recorded site holds what boot left there: the patcher's bytes for its op on this
/// backend, or (with `nopvpatch`) the `call *slot(%rip)` through its op's slot, padded to the
/// op's site length; and
/// every slot holds the chosen backend's function.
fn call_sites() -> Outcome {
    let sites = pvops::sites();
    check!(sites.len() >= 16, "only {} call sites recorded", sites.len());
    let mut seen = [0u32; 32];
    for site in sites {
        let Ok(op) = Op::try_from(site.op) else {
            return Outcome::Fail(alloc::format!("site {:#x}: unknown op {}", site.addr, site.op));
        };
        seen[site.op as usize] += 1;
        check!(
            usize::from(site.len) == crate::pvpatch::site_len(op),
            "site {:#x} ({op:?}): length {}",
            site.addr,
            site.len
        );
        check!(
            site.clobbers == pvops::CLOBBERS_C_ABI,
            "site {:#x}: clobbers {}",
            site.addr,
            site.clobbers
        );
        let code = patch::read(site);
        let want = patch::expected(site);
        check!(
            code.is_ok() && code == want,
            "site {:#x} ({op:?}) is {code:02x?}, expected {want:02x?} (patched: {})",
            site.addr,
            patch::patched()
        );
    }
    let backend = match pvops::backend() {
        pvops::Backend::XenPv => crate::arch::xen_pv::ops::OPS,
        pvops::Backend::XenPvh => crate::arch::xen_pvh::ops::OPS,
        pvops::Backend::Native => crate::arch::native::ops::OPS,
    };
    check!(
        pvops::slot_target(Op::IrqDisable) == backend.irq.disable as usize as u64
            && pvops::slot_target(Op::ConsoleWrite) == backend.console.write as usize as u64
            && pvops::slot_target(Op::ClockNs) == backend.time.clock_ns as usize as u64,
        "the table does not hold the {} backend",
        pvops::backend().name()
    );
    for op in
        [Op::SaveFl, Op::RestoreFl, Op::IrqDisable, Op::IrqEnable, Op::ConsoleWrite, Op::ClockNs]
    {
        check!(seen[op as usize] > 0, "no call site recorded for {op:?}");
    }
    Outcome::Pass
}

/// Whether interrupts (events) are enabled, read from the machine rather than through
/// pv_ops: RFLAGS.IF natively and under PVH, vcpu_info's event mask under Xen PV.
fn machine_enabled() -> bool {
    if pvops::is_xen_pv() {
        return xen_common::vcpu().upcall_mask() == 0;
    }
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack, which the asm leaves balanced.
    unsafe { core::arch::asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & FLAGS_IF != 0
}

/// The irq ops, inline or direct calls once patched, do to the machine what they say:
/// disable, enable, save and restore round-trip through IF (the event mask).
fn irq_round_trip() -> Outcome {
    check!(machine_enabled(), "interrupts are not enabled at test time");
    let on = pvops::save_fl();
    check!(on & FLAGS_IF != 0, "save_fl {on:#x} while enabled");
    pvops::irq_disable();
    let disabled = machine_enabled();
    let off = pvops::save_fl();
    pvops::irq_enable();
    let enabled = machine_enabled();
    pvops::restore_fl(off);
    let restored_off = machine_enabled();
    pvops::restore_fl(on);
    let restored_on = machine_enabled();
    check!(!disabled, "irq_disable left the machine enabled");
    check!(off & FLAGS_IF == 0, "save_fl {off:#x} while disabled");
    check!(enabled, "irq_enable left the machine disabled");
    check!(!restored_off, "restore_fl({off:#x}) did not disable");
    check!(restored_on, "restore_fl({on:#x}) did not enable");
    Outcome::Pass
}

/// After boot the code is mapped read-only, patched or not.
fn text_read_only() -> Outcome {
    let text = text_range();
    check!(text.start < text.end, "empty code range {text:#x?}");
    for va in text.step_by(PAGE_SIZE as usize) {
        match paging::is_writable(va) {
            Ok(false) => {}
            Ok(true) => return Outcome::Fail(alloc::format!("code page {va:#x} is writable")),
            Err(e) => return Outcome::Fail(alloc::format!("code page {va:#x}: {e:?}")),
        }
    }
    Outcome::Pass
}
