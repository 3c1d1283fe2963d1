use super::{check, Outcome, Test};
use crate::pvops::{self, Op};

pub const TESTS: &[Test] = &[Test { name: "pvops::call_sites", run: call_sites }];

/// Every recorded call site is the 6-byte `call *slot(%rip)` its record describes, aimed at
/// the slot of its op, and every slot holds the chosen backend's function.
fn call_sites() -> Outcome {
    let sites = pvops::sites();
    check!(sites.len() >= 16, "only {} call sites recorded", sites.len());
    let mut seen = [0u32; 32];
    for site in sites {
        let Ok(op) = Op::try_from(site.op) else {
            return Outcome::Fail(alloc::format!("site {:#x}: unknown op {}", site.addr, site.op));
        };
        seen[site.op as usize] += 1;
        check!(site.len == 6, "site {:#x} ({op:?}): length {}", site.addr, site.len);
        check!(
            site.clobbers == pvops::CLOBBERS_C_ABI,
            "site {:#x}: clobbers {}",
            site.addr,
            site.clobbers
        );
        // SAFETY: the record's address is a site in .text, `len` (6) bytes long.
        let code = unsafe { core::slice::from_raw_parts(site.addr as *const u8, 6) };
        check!(
            code[..2] == [0xff, 0x15],
            "site {:#x} ({op:?}) is {code:02x?}, not call *rel(%rip)",
            site.addr
        );
        let disp = i32::from_le_bytes([code[2], code[3], code[4], code[5]]) as i64;
        let target = (site.addr as i64 + 6 + disp) as u64;
        let slot = pvops::table_addr() + op.slot() as u64;
        check!(
            target == slot,
            "site {:#x} ({op:?}) reads {target:#x}, its slot is {slot:#x}",
            site.addr
        );
    }
    let backend = match pvops::backend() {
        pvops::Backend::XenPv => pvops::xen::OPS,
        pvops::Backend::Native => pvops::native::OPS,
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
