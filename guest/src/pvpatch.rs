//! pv_ops binary patching, the pure half: what bytes a call site becomes for an op on a
//! backend. The kernel half (`pvops::patch`) finds the sites, writes the bytes and guards
//! the text; everything it decides comes from here, so the encodings are unit-tested on
//! the host.
//!
//! Every site starts as the 6-byte `call *slot(%rip)` that `pv_call!` emits, with the C
//! ABI's clobbers declared. It becomes one of:
//! - the op's own instructions, padded with NOPs, where they fit and honour the site's
//!   register contract (natively the irq ops: `cli`, `sti`, `pushfq; pop rax`,
//!   `push rdi; popfq`);
//! - `call rel32` straight to the backend's function, which keeps the indirect call's
//!   contract exactly and saves the load of the slot and the indirect branch;
//! - NOPs, for ops that do nothing on the backend.

ring::abi_enum! {
    /// Identifies the operation a call site invokes, in its `.parainstructions` record.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Op: u16 {
        Cpuid = 0,
        ReadCr2 = 1,
        Idle = 2,
        SaveFl = 3,
        RestoreFl = 4,
        IrqDisable = 5,
        IrqEnable = 6,
        ReadCr3 = 7,
        SetPte = 8,
        FlushTlbOne = 9,
        PfnToFrame = 10,
        FrameToPfn = 11,
        MakeTable = 12,
        LazyEnter = 13,
        LazyFlush = 14,
        LazyLeave = 15,
        ClockNs = 16,
        SetTimer = 17,
        ConsoleWrite = 18,
        Shutdown = 19,
        CpuCount = 20,
        StartCpu = 21,
        ParkCpu = 22,
        WakeCpu = 23,
        CpuParked = 24,
        SetPercpuBase = 25,
    }
}

/// Which backend fills the op table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Backend {
    Native = 0,
    XenPv = 1,
    /// A Xen PVH domU: ring 0 of an HVM container, so the native cpu, irq and mmu ops,
    /// with Xen's time, console and shutdown.
    XenPvh = 2,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::XenPv => "xen-pv",
            Backend::XenPvh => "xen-pvh",
        }
    }
}

/// The length of every site `pv_call!` emits: `ff 15` and a 32-bit displacement.
pub const SITE_LEN: usize = 6;

pub type SiteBytes = [u8; SITE_LEN];

/// What a backend makes of an op's call sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// These instructions in place of the call, then NOPs.
    Inline(&'static [u8]),
    /// `call rel32` to the function the op table holds for the op.
    DirectCall,
    /// The op does nothing on this backend.
    Nop,
}

pub const CLI: &[u8] = &[0xfa];
pub const STI: &[u8] = &[0xfb];
/// `pushfq; pop rax`: the site expects save_fl's result in rax.
pub const PUSHF_POP_RAX: &[u8] = &[0x9c, 0x58];
/// `push rdi; popfq`: the site passes restore_fl's argument in rdi.
pub const PUSH_RDI_POPF: &[u8] = &[0x57, 0x9d];

/// The patch plan of `op` on `backend`.
///
/// Under Xen PV the kernel runs in ring 3, where `cli`, `sti` and `popfq` cannot touch
/// IF: interrupts are the event mask byte in vcpu_info. Storing to it needs at least 7
/// bytes (`movb $imm, rel32(%rip)`), and enabling must also check for a pending event, so
/// every Xen op becomes a direct call.
pub fn plan(backend: Backend, op: Op) -> Plan {
    match backend {
        Backend::XenPv => Plan::DirectCall,
        // The inline instructions and NOPs are native ones, which PVH shares; its Xen ops
        // are calls either way.
        Backend::Native | Backend::XenPvh => match op {
            Op::IrqDisable => Plan::Inline(CLI),
            Op::IrqEnable => Plan::Inline(STI),
            Op::SaveFl => Plan::Inline(PUSHF_POP_RAX),
            Op::RestoreFl => Plan::Inline(PUSH_RDI_POPF),
            // Native page tables need no preparation and their writes are immediate.
            Op::MakeTable | Op::LazyEnter | Op::LazyFlush | Op::LazyLeave => Plan::Nop,
            Op::Cpuid
            | Op::ReadCr2
            | Op::Idle
            | Op::ReadCr3
            | Op::SetPte
            | Op::FlushTlbOne
            | Op::PfnToFrame
            | Op::FrameToPfn
            | Op::ClockNs
            | Op::SetTimer
            | Op::ConsoleWrite
            | Op::Shutdown
            | Op::CpuCount
            | Op::StartCpu
            | Op::ParkCpu
            | Op::WakeCpu
            | Op::CpuParked
            | Op::SetPercpuBase => Plan::DirectCall,
        },
    }
}

/// Why a site cannot be patched: it then keeps its indirect call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The record names no op we know.
    UnknownOp(u16),
    /// The record gives a length other than the 6 bytes `pv_call!` emits.
    Length(u8),
    /// The record's address is not inside the kernel's code.
    OutsideText,
    /// The site's bytes are not the indirect call through its op's slot.
    NotIndirect,
    /// The target lies more than 2 GiB away from the site.
    OutOfRange,
    /// The inline instructions do not fit the site.
    TooLong,
}

impl core::fmt::Display for PatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PatchError::UnknownOp(op) => write!(f, "unknown op {op}"),
            PatchError::Length(n) => write!(f, "recorded length {n}, expected {SITE_LEN}"),
            PatchError::OutsideText => f.write_str("outside the kernel's code"),
            PatchError::NotIndirect => f.write_str("not the indirect call through its slot"),
            PatchError::OutOfRange => f.write_str("target out of rel32 range"),
            PatchError::TooLong => f.write_str("inline instructions longer than the site"),
        }
    }
}

/// The displacement from the end of an instruction at `site` of `len` bytes to `target`.
fn rel32(site: u64, len: u64, target: u64) -> Result<[u8; 4], PatchError> {
    let disp = target.wrapping_sub(site.wrapping_add(len)) as i64;
    i32::try_from(disp).map(i32::to_le_bytes).map_err(|_| PatchError::OutOfRange)
}

/// `call *slot(%rip)` at `site`: what `pv_call!` emits.
pub fn indirect_call(site: u64, slot: u64) -> Result<SiteBytes, PatchError> {
    let d = rel32(site, SITE_LEN as u64, slot)?;
    Ok([0xff, 0x15, d[0], d[1], d[2], d[3]])
}

/// `call target` at `site`, then a 1-byte NOP.
pub fn direct_call(site: u64, target: u64) -> Result<SiteBytes, PatchError> {
    let d = rel32(site, 5, target)?;
    Ok([0xe8, d[0], d[1], d[2], d[3], 0x90])
}

/// The multi-byte NOPs Intel recommends (SDM vol. 2B, NOP), by length: one instruction
/// decodes faster than a run of 0x90.
const NOPS: [&[u8]; 9] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Fills `buf` with as few NOP instructions as possible.
pub fn fill_nops(buf: &mut [u8]) {
    let mut rest = buf;
    while !rest.is_empty() {
        let nop = NOPS[rest.len().min(NOPS.len()) - 1];
        let (head, tail) = rest.split_at_mut(nop.len());
        head.copy_from_slice(nop);
        rest = tail;
    }
}

/// The bytes a site becomes: `addr` and `len` from its record, `plan` for its op, and
/// `target` the function a direct call goes to.
pub fn replacement(addr: u64, len: u8, plan: Plan, target: u64) -> Result<SiteBytes, PatchError> {
    if usize::from(len) != SITE_LEN {
        return Err(PatchError::Length(len));
    }
    let mut bytes = [0; SITE_LEN];
    match plan {
        Plan::DirectCall => return direct_call(addr, target),
        Plan::Nop => fill_nops(&mut bytes),
        Plan::Inline(code) => {
            if code.len() > SITE_LEN {
                return Err(PatchError::TooLong);
            }
            bytes[..code.len()].copy_from_slice(code);
            fill_nops(&mut bytes[code.len()..]);
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_OPS: core::ops::Range<u16> = 0..26;
    const SITE: u64 = 0xffff_ffff_8010_2000;

    fn ops() -> impl Iterator<Item = Op> {
        ALL_OPS.map(|v| Op::try_from(v).unwrap())
    }

    #[test]
    fn native_irq_ops_become_their_instructions() {
        let native = |op| replacement(SITE, 6, plan(Backend::Native, op), 0).unwrap();
        assert_eq!(native(Op::IrqDisable), [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        assert_eq!(native(Op::IrqEnable), [0xfb, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        assert_eq!(native(Op::SaveFl), [0x9c, 0x58, 0x0f, 0x1f, 0x40, 0x00]);
        assert_eq!(native(Op::RestoreFl), [0x57, 0x9d, 0x0f, 0x1f, 0x40, 0x00]);
    }

    #[test]
    fn native_no_ops_become_one_nop() {
        for op in [Op::MakeTable, Op::LazyEnter, Op::LazyFlush, Op::LazyLeave] {
            assert_eq!(plan(Backend::Native, op), Plan::Nop);
            let b = replacement(SITE, 6, Plan::Nop, 0).unwrap();
            assert_eq!(b, [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        }
    }

    #[test]
    fn other_native_ops_and_every_xen_op_become_direct_calls() {
        let inline_or_nop = [
            Op::IrqDisable,
            Op::IrqEnable,
            Op::SaveFl,
            Op::RestoreFl,
            Op::MakeTable,
            Op::LazyEnter,
            Op::LazyFlush,
            Op::LazyLeave,
        ];
        for op in ops() {
            assert_eq!(plan(Backend::XenPv, op), Plan::DirectCall, "{op:?}");
            if !inline_or_nop.contains(&op) {
                assert_eq!(plan(Backend::Native, op), Plan::DirectCall, "{op:?}");
            }
        }
    }

    #[test]
    fn pvh_patches_like_native() {
        // Its Xen ops (time, console, shutdown) are direct calls natively too.
        for op in ops() {
            assert_eq!(plan(Backend::XenPvh, op), plan(Backend::Native, op), "{op:?}");
        }
    }

    #[test]
    fn direct_call_encodes_rel32_from_the_next_instruction() {
        assert_eq!(direct_call(0x1000, 0x2000), Ok([0xe8, 0xfb, 0x0f, 0x00, 0x00, 0x90]));
        // Backwards: 0x1000 - 0x2005 = -0x1005.
        assert_eq!(direct_call(0x2000, 0x1000), Ok([0xe8, 0xfb, 0xef, 0xff, 0xff, 0x90]));
        // Across the sign of the address space, as in the top 2 GiB where the kernel lives.
        let (site, target) = (0xffff_ffff_8010_0000, 0xffff_ffff_8013_0005);
        let b = replacement(site, 6, Plan::DirectCall, target).unwrap();
        assert_eq!(b, [0xe8, 0x00, 0x00, 0x03, 0x00, 0x90]);
    }

    #[test]
    fn direct_call_range_is_checked_at_both_ends() {
        let site = 0x1000_0000;
        let max = site + 5 + i32::MAX as u64;
        assert!(direct_call(site, max).is_ok());
        assert_eq!(direct_call(site, max + 1), Err(PatchError::OutOfRange));
        let min = (site + 5).wrapping_sub(1 << 31);
        assert!(direct_call(site, min).is_ok());
        assert_eq!(direct_call(site, min.wrapping_sub(1)), Err(PatchError::OutOfRange));
        assert_eq!(
            replacement(SITE, 6, Plan::DirectCall, 0xffff_c000_0000_0000),
            Err(PatchError::OutOfRange),
            "a kernel site cannot reach the rest of the upper half"
        );
    }

    #[test]
    fn indirect_call_is_what_pv_call_emits() {
        // `call *0x10(%rip)` at 0x1000 reads the slot at 0x1016.
        assert_eq!(indirect_call(0x1000, 0x1016), Ok([0xff, 0x15, 0x10, 0x00, 0x00, 0x00]));
        assert_eq!(indirect_call(0x1000, 0x1000), Ok([0xff, 0x15, 0xfa, 0xff, 0xff, 0xff]));
    }

    #[test]
    fn unexpected_site_lengths_are_refused() {
        for len in [0, 5, 7, 255] {
            for p in [Plan::Nop, Plan::DirectCall, Plan::Inline(CLI)] {
                assert_eq!(replacement(SITE, len, p, SITE), Err(PatchError::Length(len)));
            }
        }
        let long = Plan::Inline(&[0x90; 7]);
        assert_eq!(replacement(SITE, 6, long, 0), Err(PatchError::TooLong));
        assert_eq!(replacement(SITE, 6, Plan::Inline(&[0x90; 6]), 0), Ok([0x90; 6]));
    }

    #[test]
    fn nops_are_the_recommended_sequences() {
        for (i, nop) in NOPS.iter().enumerate() {
            assert_eq!(nop.len(), i + 1);
            let mut buf = vec![0xcc; i + 1];
            fill_nops(&mut buf);
            assert_eq!(&buf, nop, "one instruction fills {} bytes", i + 1);
        }
        let mut buf = [0xcc; 12];
        fill_nops(&mut buf);
        assert_eq!(buf[..9], *NOPS[8]);
        assert_eq!(buf[9..], *NOPS[2]);
        fill_nops(&mut []);
    }

    #[test]
    fn op_values_round_trip() {
        for op in ops() {
            assert_eq!(Op::try_from(op as u16), Ok(op));
        }
        assert_eq!(Op::try_from(ALL_OPS.end), Err(ALL_OPS.end));
    }
}
