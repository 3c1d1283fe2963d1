//! Four-level page tables, changed only through pv_ops (`set_pte`, `make_table`), so the
//! same code drives our own tables natively and Xen-validated ones under PV.

use crate::arch::{pfn_to_virt, PAGE_SIZE};
use crate::mm::frames::FrameError;
use crate::pvops;

pub const PTE_PRESENT: u64 = 1;
pub const PTE_WRITABLE: u64 = 1 << 1;
pub const PTE_USER: u64 = 1 << 2;
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

/// Maps a device's register page (physical frame `frame`) at `va`, writable and uncached
/// (PCD | PWT): its reads and writes must reach the device, in order.
///
/// # Safety
/// As for [`map_frame`]; the frame is a device's, not RAM that anything else maps.
pub unsafe fn map_mmio(va: u64, frame: u64) -> Result<(), MapError> {
    const PTE_PWT: u64 = 1 << 3;
    const PTE_PCD: u64 = 1 << 4;
    let e = entry(va, 1, true)?;
    // SAFETY: reading an entry of a live table.
    if unsafe { e.read_volatile() } & PTE_PRESENT != 0 {
        return Err(MapError::AlreadyMapped);
    }
    // SAFETY: the caller vouches for the frame; the slot was empty.
    unsafe {
        pvops::set_pte(e, (frame * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE | PTE_PCD | PTE_PWT)
    };
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

/// Removes the 4 KiB mapping at `va` whatever frame it names (ours or Xen's); a `va` with
/// no mapping is left as it is.
///
/// # Safety
/// Nothing may reference memory through `va` any more.
pub unsafe fn unmap_frame(va: u64) -> Result<(), MapError> {
    let e = entry(va, 1, false)?;
    // SAFETY: reading an entry of a live table.
    if unsafe { e.read_volatile() } & PTE_PRESENT != 0 {
        // SAFETY: the caller vouches that `va` is unused; the TLB entry goes with it.
        unsafe {
            pvops::set_pte(e, 0);
            pvops::flush_tlb_one(va);
        }
    }
    Ok(())
}

/// Unmaps the 4 KiB page of ours at `va`, splitting a 2 MiB page around it first, so that
/// any access to it faults. The frame stays ours, unused.
///
/// # Safety
/// Nothing may reference memory through `va` any more.
pub unsafe fn unmap_guard(va: u64) -> Result<(), MapError> {
    small_page_entry(va)?;
    // SAFETY: forwarded contract.
    unsafe { unmap(va) }.map(drop)
}

/// The 4 KiB entry for `va`, after splitting a 2 MiB page around it: for changes that must
/// touch `va`'s page alone.
fn small_page_entry(va: u64) -> Result<*mut u64, MapError> {
    match entry(va, 1, false) {
        Err(MapError::HugePage) => {
            split_huge(va)?;
            entry(va, 1, false)
        }
        e => e,
    }
}

/// Makes the 4 KiB page at `va` writable or read-only. A 2 MiB page around it is first
/// split into 4 KiB pages, since permissions are per page.
///
/// # Safety
/// With `writable == false`, nothing may write through `va` afterwards.
pub unsafe fn set_writable(va: u64, writable: bool) -> Result<(), MapError> {
    let e = small_page_entry(va)?;
    // SAFETY: reading an entry of a live table.
    let val = unsafe { e.read_volatile() };
    if val & PTE_PRESENT == 0 {
        return Err(MapError::NotMapped);
    }
    let new = if writable { val | PTE_WRITABLE } else { val & !PTE_WRITABLE };
    if new != val {
        // SAFETY: the same frame stays mapped; the caller vouches for the permission.
        unsafe {
            pvops::set_pte(e, new);
            pvops::flush_tlb_one(va);
        }
    }
    Ok(())
}

/// Whether the 4 KiB page at `va` is mapped writable.
pub fn is_writable(va: u64) -> Result<bool, MapError> {
    let e = entry(va, 1, false)?;
    // SAFETY: reading an entry of a live table.
    let val = unsafe { e.read_volatile() };
    if val & PTE_PRESENT == 0 {
        return Err(MapError::NotMapped);
    }
    Ok(val & PTE_WRITABLE != 0)
}

/// Replaces the 2 MiB mapping around `va` by a table of 512 4 KiB mappings of the same
/// frames with the same attributes.
fn split_huge(va: u64) -> Result<(), MapError> {
    const HUGE_PAT: u64 = 1 << 12;
    const SMALL_PAT: u64 = 1 << 7;
    const GLOBAL: u64 = 1 << 8;
    const NO_EXECUTE: u64 = 1 << 63;
    let l2e = entry(va, 2, false)?;
    // SAFETY: reading an entry of a live table.
    let val = unsafe { l2e.read_volatile() };
    if val & (PTE_PRESENT | PTE_HUGE) != PTE_PRESENT | PTE_HUGE {
        return Err(MapError::NotMapped);
    }
    let base = val & ADDR_MASK & !(512 * PAGE_SIZE - 1);
    // Bits 0-6 (present, writable, user, caching, accessed, dirty), global and NX mean the
    // same at both levels; PAT moves from bit 12 to bit 7.
    let mut flags = val & (0x7f | GLOBAL | NO_EXECUTE);
    if val & HUGE_PAT != 0 {
        flags |= SMALL_PAT;
    }
    let pfn = crate::mm::alloc_frame().map_err(MapError::NoMemory)?;
    let table = pfn_to_virt(pfn) as *mut u64;
    for i in 0..512 {
        // SAFETY: a fresh frame of ours, still an ordinary page, and i < 512.
        unsafe { table.add(i as usize).write((base + i * PAGE_SIZE) | flags) };
    }
    // No TLB flush: the new entries translate every address exactly as the old one did. A
    // later change to one of them flushes that page, which drops a cached 2 MiB entry too.
    // SAFETY: the filled table maps what the 2 MiB entry mapped, so hooking it in changes
    // no translation.
    unsafe {
        pvops::make_table(pfn);
        pvops::set_pte(
            l2e,
            (pvops::pfn_to_frame(pfn) * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE | (val & PTE_USER),
        );
    }
    Ok(())
}
