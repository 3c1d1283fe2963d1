//! pv_ops binary patching, the pure half: what bytes a call site becomes for an op on a
//! backend. The kernel half (`pvops::patch`) finds the sites, writes the bytes and guards
//! the text; everything it decides comes from here, so the encodings are unit-tested on
//! the host.
//!
//! Every site starts as the 6-byte `call *slot(%rip)` that `pv_call!` emits, with the C
//! ABI's clobbers declared, then NOPs up to its op's [`site_len`]. It becomes one of:
//! - the op's own instructions, padded with NOPs, where they fit and honour the site's
//!   register contract (natively the irq ops: `cli`, `sti`, `pushfq; pop rax`,
//!   `push rdi; popfq`; under Xen PV irq_disable and save_fl as a store to and a load from
//!   the event mask in the vCPU's own `vcpu_info`, at a fixed `%gs:` offset);
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

/// The call `pv_call!` emits at every site: `ff 15` and a 32-bit displacement.
pub const CALL_LEN: usize = 6;

/// The longest site.
pub const MAX_SITE_LEN: usize = 15;

/// How long `op`'s sites are: the call, and room for Xen PV's inline forms where there are
/// some ([`XEN_PV_IRQ_DISABLE`], [`XEN_PV_SAVE_FL`]).
pub const fn site_len(op: Op) -> usize {
    match op {
        Op::IrqDisable => XEN_PV_IRQ_DISABLE.len(),
        Op::SaveFl => XEN_PV_SAVE_FL.len(),
        _ => CALL_LEN,
    }
}

/// A site's bytes: as many as its record says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SiteBytes {
    len: u8,
    buf: [u8; MAX_SITE_LEN],
}

impl SiteBytes {
    /// `bytes`, which must not be longer than [`MAX_SITE_LEN`].
    pub fn new(bytes: &[u8]) -> Self {
        let mut buf = [0; MAX_SITE_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        SiteBytes { len: bytes.len() as u8, buf }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for SiteBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// As `objdump` shows code: `fa 0f 1f 44 00 00`.
impl core::fmt::Display for SiteBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, b) in self.as_slice().iter().enumerate() {
            write!(f, "{}{b:02x}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

impl PartialEq<[u8]> for SiteBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for SiteBytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

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

/// Where the calling vCPU's event mask is, `%gs:`-relative: `vcpu_info.evtchn_upcall_mask`
/// (offset 1) of the vcpu_info at offset 64 of the per-CPU area (`smp::PerCpu`).
pub const GS_UPCALL_MASK: u8 = 64 + 1;

/// `movb $1, %gs:GS_UPCALL_MASK`: Xen PV's irq_disable, as Linux's `xen_irq_disable_direct`.
pub const XEN_PV_IRQ_DISABLE: &[u8] =
    &[0x65, 0xc6, 0x04, 0x25, GS_UPCALL_MASK, 0x00, 0x00, 0x00, 0x01];

/// `movzbl %gs:GS_UPCALL_MASK, %eax; xor $1, %eax; shl $9, %eax`: Xen PV's save_fl, IF
/// (0x200) in rax exactly when the mask is clear (the guest and Xen only write 0 and 1).
pub const XEN_PV_SAVE_FL: &[u8] = &[
    0x65,
    0x0f,
    0xb6,
    0x04,
    0x25,
    GS_UPCALL_MASK,
    0x00,
    0x00,
    0x00, // movzbl %gs:65, %eax
    0x83,
    0xf0,
    0x01, // xor $1, %eax
    0xc1,
    0xe0,
    0x09, // shl $9, %eax
];

/// The patch plan of `op` on `backend`; `vcpu_info_at_gs`: under Xen, every vCPU's
/// vcpu_info is in its per-CPU area (see [`GS_UPCALL_MASK`]).
///
/// Under Xen PV the kernel runs in ring 3, where `cli`, `sti` and `popfq` cannot touch
/// IF: interrupts are the event mask byte in vcpu_info. With each vCPU's own at a fixed
/// `%gs:` offset, irq_disable and save_fl are one store and one load (sites long enough
/// for them: [`site_len`]); irq_enable and restore_fl must also check for an event that
/// came while masked, so they, like every other Xen op, become direct calls.
pub fn plan(backend: Backend, op: Op, vcpu_info_at_gs: bool) -> Plan {
    match backend {
        Backend::XenPv if vcpu_info_at_gs && op == Op::IrqDisable => {
            Plan::Inline(XEN_PV_IRQ_DISABLE)
        }
        Backend::XenPv if vcpu_info_at_gs && op == Op::SaveFl => Plan::Inline(XEN_PV_SAVE_FL),
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
    /// The record gives a length other than the one `pv_call!` emits for its op.
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
            PatchError::Length(n) => write!(f, "recorded length {n}, not its op's"),
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

/// `call *slot(%rip)` at `site`, then NOPs to `len`: what `pv_call!` emits.
pub fn indirect_call(site: u64, len: usize, slot: u64) -> Result<SiteBytes, PatchError> {
    let d = rel32(site, CALL_LEN as u64, slot)?;
    padded(&[0xff, 0x15, d[0], d[1], d[2], d[3]], len)
}

/// `call target` at `site`, then NOPs to `len`.
pub fn direct_call(site: u64, len: usize, target: u64) -> Result<SiteBytes, PatchError> {
    let d = rel32(site, 5, target)?;
    padded(&[0xe8, d[0], d[1], d[2], d[3]], len)
}

/// `code`, then NOPs to `len` bytes.
fn padded(code: &[u8], len: usize) -> Result<SiteBytes, PatchError> {
    if code.len() > len {
        return Err(PatchError::TooLong);
    }
    let mut buf = [0; MAX_SITE_LEN];
    let buf = &mut buf[..len];
    buf[..code.len()].copy_from_slice(code);
    fill_nops(&mut buf[code.len()..]);
    Ok(SiteBytes::new(buf))
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

/// A site's length as its record gives it, checked against what `pv_call!` emits for `op`.
pub fn checked_len(op: Op, len: u8) -> Result<usize, PatchError> {
    if usize::from(len) == site_len(op) {
        Ok(usize::from(len))
    } else {
        Err(PatchError::Length(len))
    }
}

/// The bytes a site of `op` becomes: `addr` and `len` from its record, `plan` for its op,
/// and `target` the function a direct call goes to.
pub fn replacement(
    addr: u64,
    op: Op,
    len: u8,
    plan: Plan,
    target: u64,
) -> Result<SiteBytes, PatchError> {
    let len = checked_len(op, len)?;
    match plan {
        Plan::DirectCall => direct_call(addr, len, target),
        Plan::Nop => padded(&[], len),
        Plan::Inline(code) => padded(code, len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_OPS: core::ops::Range<u16> = 0..26;
    const SITE: u64 = 0xffff_ffff_8010_2000;

    fn ops() -> impl Iterator<Item = Op> {
        ALL_OPS.map(|v| Op::try_from(v).unwrap())
    }

    /// What a site of `op` becomes on `backend` (vCPU info at `%gs:` or not).
    fn patched(backend: Backend, op: Op, at_gs: bool, target: u64) -> SiteBytes {
        let len = site_len(op) as u8;
        replacement(SITE, op, len, plan(backend, op, at_gs), target).unwrap()
    }

    #[test]
    fn native_irq_ops_become_their_instructions() {
        let native = |op| patched(Backend::Native, op, false, 0);
        assert_eq!(native(Op::IrqDisable), [0xfa, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0]);
        assert_eq!(native(Op::IrqEnable), [0xfb, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        assert_eq!(
            native(Op::SaveFl),
            [0x9c, 0x58, 0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0, 0x0f, 0x1f, 0x40, 0x00][..]
        );
        assert_eq!(native(Op::RestoreFl), [0x57, 0x9d, 0x0f, 0x1f, 0x40, 0x00]);
    }

    #[test]
    fn native_no_ops_become_one_nop() {
        for op in [Op::MakeTable, Op::LazyEnter, Op::LazyFlush, Op::LazyLeave] {
            assert_eq!(plan(Backend::Native, op, false), Plan::Nop);
            assert_eq!(patched(Backend::Native, op, false, 0), [0x66, 0x0f, 0x1f, 0x44, 0, 0]);
        }
    }

    #[test]
    fn xen_pv_masks_events_inline_through_gs() {
        let pv = |op| patched(Backend::XenPv, op, true, SITE);
        // movb $1, %gs:0x41
        assert_eq!(pv(Op::IrqDisable), [0x65, 0xc6, 0x04, 0x25, 0x41, 0, 0, 0, 0x01]);
        // movzbl %gs:0x41, %eax; xor $1, %eax; shl $9, %eax
        assert_eq!(
            pv(Op::SaveFl),
            [0x65, 0x0f, 0xb6, 0x04, 0x25, 0x41, 0, 0, 0, 0x83, 0xf0, 0x01, 0xc1, 0xe0, 0x09][..]
        );
        // Enabling must look for an event that came while masked: a call.
        assert_eq!(plan(Backend::XenPv, Op::IrqEnable, true), Plan::DirectCall);
        assert_eq!(plan(Backend::XenPv, Op::RestoreFl, true), Plan::DirectCall);
    }

    #[test]
    fn xen_pv_save_fl_computes_if_from_the_mask() {
        // The inline save_fl's arithmetic, for the two values the mask takes.
        for (mask, flags) in [(0u32, 0x200u32), (1, 0)] {
            assert_eq!((mask ^ 1) << 9, flags);
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
            // Without vcpu_info at %gs: (Xen refused to place it) every PV op is a call.
            assert_eq!(plan(Backend::XenPv, op, false), Plan::DirectCall, "{op:?}");
            if ![Op::IrqDisable, Op::SaveFl].contains(&op) {
                assert_eq!(plan(Backend::XenPv, op, true), Plan::DirectCall, "{op:?}");
            }
            if !inline_or_nop.contains(&op) {
                assert_eq!(plan(Backend::Native, op, false), Plan::DirectCall, "{op:?}");
            }
        }
    }

    #[test]
    fn pvh_patches_like_native() {
        // Its Xen ops (time, console, shutdown) are direct calls natively too, and its irq
        // ops are the native ones wherever vcpu_info is.
        for op in ops() {
            for at_gs in [false, true] {
                assert_eq!(
                    plan(Backend::XenPvh, op, at_gs),
                    plan(Backend::Native, op, false),
                    "{op:?}"
                );
            }
        }
    }

    #[test]
    fn every_inline_form_fits_its_site() {
        for op in ops() {
            assert!((CALL_LEN..=MAX_SITE_LEN).contains(&site_len(op)), "{op:?}");
            for backend in [Backend::Native, Backend::XenPv, Backend::XenPvh] {
                for at_gs in [false, true] {
                    if let Plan::Inline(code) = plan(backend, op, at_gs) {
                        assert!(code.len() <= site_len(op), "{op:?} on {backend:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn direct_call_encodes_rel32_from_the_next_instruction() {
        assert_eq!(
            direct_call(0x1000, 6, 0x2000),
            Ok(SiteBytes::new(&[0xe8, 0xfb, 0x0f, 0, 0, 0x90]))
        );
        // Backwards: 0x1000 - 0x2005 = -0x1005.
        assert_eq!(
            direct_call(0x2000, 6, 0x1000),
            Ok(SiteBytes::new(&[0xe8, 0xfb, 0xef, 0xff, 0xff, 0x90]))
        );
        // Across the sign of the address space, as in the top 2 GiB where the kernel lives.
        let (site, target) = (0xffff_ffff_8010_0000, 0xffff_ffff_8013_0005);
        let b = replacement(site, Op::ClockNs, 6, Plan::DirectCall, target).unwrap();
        assert_eq!(b, [0xe8, 0x00, 0x00, 0x03, 0x00, 0x90]);
        // A longer site pads the call with one NOP.
        let b = direct_call(0x1000, 9, 0x2000).unwrap();
        assert_eq!(b, [0xe8, 0xfb, 0x0f, 0, 0, 0x0f, 0x1f, 0x40, 0x00]);
    }

    #[test]
    fn direct_call_range_is_checked_at_both_ends() {
        let site = 0x1000_0000;
        let max = site + 5 + i32::MAX as u64;
        assert!(direct_call(site, 6, max).is_ok());
        assert_eq!(direct_call(site, 6, max + 1), Err(PatchError::OutOfRange));
        let min = (site + 5).wrapping_sub(1 << 31);
        assert!(direct_call(site, 6, min).is_ok());
        assert_eq!(direct_call(site, 6, min.wrapping_sub(1)), Err(PatchError::OutOfRange));
        assert_eq!(
            replacement(SITE, Op::ClockNs, 6, Plan::DirectCall, 0xffff_c000_0000_0000),
            Err(PatchError::OutOfRange),
            "a kernel site cannot reach the rest of the upper half"
        );
    }

    #[test]
    fn indirect_call_is_what_pv_call_emits() {
        // `call *0x10(%rip)` at 0x1000 reads the slot at 0x1016.
        assert_eq!(
            indirect_call(0x1000, 6, 0x1016),
            Ok(SiteBytes::new(&[0xff, 0x15, 0x10, 0, 0, 0]))
        );
        assert_eq!(
            indirect_call(0x1000, 6, 0x1000),
            Ok(SiteBytes::new(&[0xff, 0x15, 0xfa, 0xff, 0xff, 0xff]))
        );
        // The displacement counts from the call's end, not the padded site's.
        let b = indirect_call(0x1000, 9, 0x1016).unwrap();
        assert_eq!(b, [0xff, 0x15, 0x10, 0, 0, 0, 0x0f, 0x1f, 0x00]);
    }

    #[test]
    fn unexpected_site_lengths_are_refused() {
        for len in [0, 5, 7, 9, 255] {
            for p in [Plan::Nop, Plan::DirectCall, Plan::Inline(CLI)] {
                assert_eq!(
                    replacement(SITE, Op::ClockNs, len, p, SITE),
                    Err(PatchError::Length(len))
                );
            }
        }
        assert_eq!(
            replacement(SITE, Op::IrqDisable, 6, Plan::Inline(CLI), SITE),
            Err(PatchError::Length(6)),
            "an irq_disable site without room for the PV store"
        );
        let long = Plan::Inline(&[0x90; 7]);
        assert_eq!(replacement(SITE, Op::ClockNs, 6, long, 0), Err(PatchError::TooLong));
        assert_eq!(
            replacement(SITE, Op::ClockNs, 6, Plan::Inline(&[0x90; 6]), 0),
            Ok(SiteBytes::new(&[0x90; 6]))
        );
    }

    #[test]
    fn site_bytes_print_as_objdump_does() {
        assert_eq!(format!("{}", SiteBytes::new(&[0xfa, 0x0f, 0x1f, 0x00])), "fa 0f 1f 00");
        assert_eq!(format!("{:02x?}", SiteBytes::new(&[0xfa, 0x0f])), "[fa, 0f]");
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
