//! Boot-time patching of the pv_ops call sites, and write protection of the kernel's code.
//! What each site becomes is decided in [`crate::pvpatch`]; this module checks each
//! recorded site, writes its bytes, and makes the code read-only afterwards.
//!
//! How the code is mapped when we get here: under Xen PV, in the domain builder's 4 KiB
//! bootstrap tables (Xen validates them; we change them by hypercall through `set_pte`);
//! natively, in the PVH entry's 2 MiB pages (arch/entry.S). Both map it writable. The code
//! pages are made writable explicitly for the patch all the same (which changes nothing
//! unless someone protected them), then read-only for good. Natively that splits the 2 MiB
//! page holding the image into 4 KiB pages, because the data after the code must stay
//! writable. Clearing CR0.WP around the patch instead would only help if the code were
//! read-only to begin with, and has no counterpart in Xen's ring 3.

use super::{backend, sites, slot_target, table_addr, Op, PatchSite};
use crate::pvpatch::{self, PatchError, Plan, SiteBytes};
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

static PATCHED: AtomicBool = AtomicBool::new(false);

/// The kernel's code as the patcher needs it, handed in by boot: pv_ops sits below the
/// memory and CPU code, which know where the code is, how it is mapped and how to make the
/// CPU see new instruction bytes.
pub struct KernelText {
    /// Where the code is: every site must lie inside.
    pub range: Range<u64>,
    /// Makes the 4 KiB page at `va` writable or read-only; the error says why not.
    ///
    /// # Safety
    /// With `writable == false`, nothing may write through `va` afterwards.
    pub set_writable: unsafe fn(va: u64, writable: bool) -> Result<(), &'static str>,
    /// A serializing instruction: no CPU runs stale bytes of a rewritten site after it.
    pub serialize: fn(),
}

static TEXT: spin::Once<KernelText> = spin::Once::new();

const PAGE_SIZE: u64 = 4096;

/// Whether boot patched the sites (not with `nopvpatch`).
pub fn patched() -> bool {
    PATCHED.load(Ordering::Relaxed)
}

fn op_of(site: &PatchSite) -> Result<Op, PatchError> {
    Op::try_from(site.op).map_err(PatchError::UnknownOp)
}

/// The site as `pv_call!` emitted it: the indirect call through its op's slot.
pub fn original(site: &PatchSite) -> Result<SiteBytes, PatchError> {
    let op = op_of(site)?;
    let len = pvpatch::checked_len(op, site.len)?;
    pvpatch::indirect_call(site.addr, len, table_addr() + op.slot() as u64)
}

/// What the site becomes on the running backend.
pub fn replacement(site: &PatchSite) -> Result<(Plan, SiteBytes), PatchError> {
    let op = op_of(site)?;
    let plan = pvpatch::plan(backend(), op, crate::arch::xen_common::vcpu_info_at_gs());
    Ok((plan, pvpatch::replacement(site.addr, op, site.len, plan, slot_target(op))?))
}

/// What the site holds now: its replacement once patched, unless patching refused it.
pub fn expected(site: &PatchSite) -> Result<SiteBytes, PatchError> {
    match replacement(site) {
        Ok((_, bytes)) if patched() => Ok(bytes),
        _ => original(site),
    }
}

/// The site's current bytes.
pub fn read(site: &PatchSite) -> Result<SiteBytes, PatchError> {
    let len = pvpatch::checked_len(op_of(site)?, site.len)?;
    let Some(text) = TEXT.get().map(|t| &t.range) else { return Err(PatchError::OutsideText) };
    if site.addr < text.start || site.addr > text.end - len as u64 {
        return Err(PatchError::OutsideText);
    }
    let mut bytes = [0; pvpatch::MAX_SITE_LEN];
    for (i, b) in bytes[..len].iter_mut().enumerate() {
        // SAFETY: the range lies inside the kernel's code, which is mapped for good.
        *b = unsafe { (site.addr as *const u8).add(i).read_volatile() };
    }
    Ok(SiteBytes::new(&bytes[..len]))
}

/// A site that can be patched: the replacement, and the site's own check that it still
/// holds the indirect call its record describes (which also refuses a site twice).
fn check(site: &PatchSite) -> Result<(Plan, SiteBytes), PatchError> {
    let patch = replacement(site)?;
    if read(site)? != original(site)? {
        return Err(PatchError::NotIndirect);
    }
    Ok(patch)
}

/// The one place code is written.
///
/// # Safety
/// `addr` is a checked call site in the kernel's code, mapped writable, and no CPU
/// executes it until the caller serializes.
unsafe fn write_site(addr: u64, bytes: &SiteBytes) {
    for (i, &b) in bytes.as_slice().iter().enumerate() {
        // SAFETY: forwarded contract: the site's bytes. Volatile writes: to the compiler
        // these bytes are code, not data it may reason about.
        unsafe { (addr as *mut u8).add(i).write_volatile(b) };
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    inline: usize,
    direct: usize,
    nop: usize,
    refused: usize,
}

/// Patches every call site for the running backend, unless `patch` is false
/// (`nopvpatch`), then makes the code (`text`) read-only; logs what it did.
///
/// # Safety
/// Called once at boot, on the only CPU that runs, with interrupts (events) disabled: no
/// site may run while it is rewritten. `text` describes the kernel's code truly.
pub unsafe fn apply(patch: bool, text: KernelText) {
    let text = TEXT.call_once(|| text);
    let name = backend().name();
    let total = sites().len();
    if !patch {
        log::info!("pv_ops: {name}, {total} sites left indirect (nopvpatch)");
    } else {
        // SAFETY: forwarded contract.
        match unsafe { patch_sites(text) } {
            Ok(c) => {
                log::info!(
                    "pv_ops: {name}, {} sites patched ({} inline, {} direct, {} nop)",
                    c.inline + c.direct + c.nop,
                    c.inline,
                    c.direct,
                    c.nop
                );
                if c.refused > 0 {
                    log::warn!("pv_ops: {} sites left indirect", c.refused);
                }
            }
            Err(e) => {
                log::warn!("pv_ops: {name}, {total} sites left indirect: code not writable: {e}")
            }
        }
    }
    // SAFETY: nothing writes to the code after patching.
    if let Err(e) = unsafe { set_text_writable(text, false) } {
        log::warn!("pv_ops: the code stays writable: {e}");
    }
}

/// # Safety
/// As for [`apply`].
unsafe fn patch_sites(text: &KernelText) -> Result<Counts, &'static str> {
    // SAFETY: the code is about to be written, and then protected again by `apply`.
    unsafe { set_text_writable(text, true)? };
    let mut counts = Counts::default();
    // No logging in the loop: it would run sites this loop may just have rewritten before
    // the serializing instruction below.
    let mut refused = [None; 4];
    for site in sites() {
        match check(site) {
            Ok((plan, bytes)) => {
                // SAFETY: checked above; the code is writable; apply's contract keeps every
                // site idle, and we serialize before running any.
                unsafe { write_site(site.addr, &bytes) };
                match plan {
                    Plan::Inline(_) => counts.inline += 1,
                    Plan::DirectCall => counts.direct += 1,
                    Plan::Nop => counts.nop += 1,
                }
            }
            Err(e) => {
                if let Some(slot) = refused.get_mut(counts.refused) {
                    *slot = Some((site.addr, site.op, e));
                }
                counts.refused += 1;
            }
        }
    }
    (text.serialize)();
    PATCHED.store(true, Ordering::Relaxed);
    for (addr, op, e) in refused.iter().flatten() {
        log::warn!("pv_ops: site {addr:#x} (op {op}) left indirect: {e}");
    }
    Ok(counts)
}

/// Makes every page of the kernel's code writable or read-only.
///
/// # Safety
/// With `writable == false`, nothing may write to the code afterwards.
unsafe fn set_text_writable(text: &KernelText, writable: bool) -> Result<(), &'static str> {
    // Under Xen, one multicall for all the pages instead of a hypercall each.
    let _lazy = super::lazy_mmu();
    for va in text.range.clone().step_by(PAGE_SIZE as usize) {
        // SAFETY: forwarded contract; the pages stay mapped, to the same frames.
        unsafe { (text.set_writable)(va, writable)? };
    }
    Ok(())
}
