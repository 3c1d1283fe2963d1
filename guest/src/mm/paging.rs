//! Four-level page tables, changed only through pv_ops (`set_pte`, `make_table`), so the
//! same code drives our own tables natively and Xen-validated ones under PV.

use crate::arch::{pfn_to_virt, PAGE_SIZE};
use crate::mm::frames::FrameError;
use crate::pvops;

pub const PTE_PRESENT: u64 = 1;
pub const PTE_WRITABLE: u64 = 1 << 1;
pub const PTE_HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    NoMemory(FrameError),
    /// The address lies inside a 2 MiB or 1 GiB page.
    HugePage,
    AlreadyMapped,
    NotMapped,
    /// A table entry names a frame that is not ours.
    ForeignFrame(u64),
}

fn table(frame: u64) -> Result<*mut u64, MapError> {
    match pvops::frame_to_pfn(frame) {
        pvops::INVALID_PFN => Err(MapError::ForeignFrame(frame)),
        pfn => Ok(pfn_to_virt(pfn) as *mut u64),
    }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

/// A zeroed page, prepared to become a page table.
fn new_table() -> Result<u64, MapError> {
    let pfn = crate::mm::alloc_zeroed_frames(1).map_err(MapError::NoMemory)?;
    // SAFETY: the page is zeroed and referenced by nothing yet.
    unsafe { pvops::make_table(pfn) };
    Ok(pfn)
}

/// The entry for `va` at `level` (1 = the 4 KiB PTE), creating missing tables above it when
/// `create` is set.
pub fn entry(va: u64, level: u32, create: bool) -> Result<*mut u64, MapError> {
    let mut frame = pvops::read_cr3();
    for l in (level + 1..=4).rev() {
        // SAFETY: `table` only returns direct-mapped pages of ours that are page tables,
        // and index() < 512.
        let e = unsafe { table(frame)?.add(index(va, l)) };
        // SAFETY: reading an entry of a live table.
        let val = unsafe { e.read_volatile() };
        if val & PTE_PRESENT == 0 {
            if !create {
                return Err(MapError::NotMapped);
            }
            let pfn = new_table()?;
            frame = pvops::pfn_to_frame(pfn);
            // SAFETY: hooking a fresh, empty table into an empty slot changes no mapping.
            unsafe { pvops::set_pte(e, (frame * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE) };
            // Later walks read this entry from memory: in lazy mode it must not wait.
            pvops::lazy_flush();
        } else if val & PTE_HUGE != 0 {
            return Err(MapError::HugePage);
        } else {
            frame = (val & ADDR_MASK) / PAGE_SIZE;
        }
    }
    // SAFETY: as above, for the table at the requested level.
    Ok(unsafe { table(frame)?.add(index(va, level)) })
}

/// The pfn `va` maps (4 KiB mappings only).
pub fn translate(va: u64) -> Result<u64, MapError> {
    let e = entry(va, 1, false)?;
    // SAFETY: reading an entry of a live table.
    let val = unsafe { e.read_volatile() };
    if val & PTE_PRESENT == 0 {
        return Err(MapError::NotMapped);
    }
    match pvops::frame_to_pfn((val & ADDR_MASK) / PAGE_SIZE) {
        pvops::INVALID_PFN => Err(MapError::ForeignFrame((val & ADDR_MASK) / PAGE_SIZE)),
        pfn => Ok(pfn),
    }
}

/// Maps our page `pfn` at `va` (4 KiB).
///
/// # Safety
/// `va` is not used by anything else, and if `pfn` is also mapped elsewhere, Rust code
/// does not hold exclusive references through either mapping while the other is used.
pub unsafe fn map(va: u64, pfn: u64, writable: bool) -> Result<(), MapError> {
    // SAFETY: forwarded contract; pfn_to_frame names our own page.
    unsafe { map_frame(va, pvops::pfn_to_frame(pfn), writable) }
}

/// Maps the frame hardware (or Xen) knows as `frame` at `va`: for pages that are not in our
/// pfn space, such as the grant table's.
///
/// # Safety
/// As for [`map`]; and the frame must be one we may access (Xen refuses others).
pub unsafe fn map_frame(va: u64, frame: u64, writable: bool) -> Result<(), MapError> {
    let e = entry(va, 1, true)?;
    // SAFETY: reading an entry of a live table.
    if unsafe { e.read_volatile() } & PTE_PRESENT != 0 {
        return Err(MapError::AlreadyMapped);
    }
    let rw = if writable { PTE_WRITABLE } else { 0 };
    // SAFETY: the caller vouches for the new alias; the slot was empty.
    unsafe { pvops::set_pte(e, (frame * PAGE_SIZE) | PTE_PRESENT | rw) };
    Ok(())
}

/// Removes the 4 KiB mapping at `va`; returns the pfn it mapped.
///
/// # Safety
/// Nothing may reference memory through `va` any more.
pub unsafe fn unmap(va: u64) -> Result<u64, MapError> {
    let pfn = translate(va)?;
    let e = entry(va, 1, false)?;
    // SAFETY: the caller vouches that `va` is unused; the TLB entry goes with it.
    unsafe {
        pvops::set_pte(e, 0);
        pvops::flush_tlb_one(va);
    }
    Ok(pfn)
}
