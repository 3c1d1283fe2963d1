//! The grant table (Xen only): Xen's table frames (PV: mapped at [`TABLE_VA`]; PVH: placed
//! over pages of ours), references handed out by `grant::GrantTable`, and the table grown a
//! frame at a time when they run out.

use crate::arch::PAGE_SIZE;
use crate::mm::paging;
use crate::sync::IrqMutex;
use core::ptr::NonNull;
use grant::{DomId, GrantError, GrantRef, GrantTable, MAX_FRAMES};

/// Where the table frames are mapped, one after the other.
const TABLE_VA: u64 = 0xffff_c100_0000_0000;

static TABLE: IrqMutex<GrantTable> = IrqMutex::new(GrantTable::new());
/// PVH: the pfn behind each table frame, in order, to place them again after a resume.
static PVH_FRAMES: IrqMutex<alloc::vec::Vec<u64>> = IrqMutex::new(alloc::vec::Vec::new());

/// Learns Xen's limit and maps the first frame.
pub fn init() -> Result<(), GrantError> {
    let (_, max_frames) = grant::ops::query_size()?;
    let mut table = TABLE.lock();
    table.set_max_frames(max_frames);
    grow(&mut table)?;
    log::debug!("grant table: {} of up to {} frames", table.frames(), table.max_frames());
    Ok(())
}

/// Asks Xen for one more table frame and maps it.
fn grow(table: &mut GrantTable) -> Result<(), GrantError> {
    let n = table.frames() + 1;
    if n > table.max_frames() {
        return Err(GrantError::Exhausted);
    }
    let va = if crate::pvops::is_xen_pv() {
        map_pv_frame(n)?
    } else {
        let pfn = crate::arch::xen_pvh::grant_table_frame(n as u64 - 1)?;
        PVH_FRAMES.lock().push(pfn);
        crate::arch::pfn_to_virt(pfn) as *mut u8
    };
    // SAFETY: frame n-1 is mapped read-write at `va` for good, and only the table uses it.
    unsafe { table.add_frame(NonNull::new_unchecked(va)) }
}

/// Frame `n - 1` of a PV guest's table, which Xen hands out by machine frame, mapped after
/// the others.
fn map_pv_frame(n: usize) -> Result<*mut u8, GrantError> {
    map_pv_frames(n - 1, n)?;
    Ok((TABLE_VA + (n as u64 - 1) * PAGE_SIZE) as *mut u8)
}

/// Maps frames `from..to` of a PV guest's table (of `to` frames) at their slots.
fn map_pv_frames(from: usize, to: usize) -> Result<(), GrantError> {
    let mut frames = [0; MAX_FRAMES];
    // Xen returns the frames of the whole (grown) table, the old ones unchanged.
    grant::ops::setup_table(&mut frames[..to])?;
    for (i, &frame) in frames.iter().enumerate().take(to).skip(from) {
        let va = TABLE_VA + i as u64 * PAGE_SIZE;
        // SAFETY: slot i of our reserved range is unused (never mapped, or unmapped by
        // `suspend`), and Xen shares the table frames with us for writing.
        if let Err(e) = unsafe { paging::map_frame(va, frame, true) } {
            log::error!("cannot map grant table frame {i}: {e:?}");
            return Err(GrantError::TableFull);
        }
    }
    Ok(())
}

/// Before a suspend (PV): the table's frames are Xen's, not ours, and a save refuses page
/// tables that map frames outside the domain's memory. The table is unusable until
/// [`resume`]; the caller holds events masked and grants nothing meanwhile.
pub fn suspend() {
    if !crate::pvops::is_xen_pv() {
        return;
    }
    let table = TABLE.lock();
    for i in 0..table.frames() {
        // SAFETY: the slot maps a table frame that only the table reaches, and nothing
        // uses the table until `resume` maps it again.
        if let Err(e) = unsafe { paging::unmap_frame(TABLE_VA + i as u64 * PAGE_SIZE) } {
            log::error!("cannot unmap grant table frame {i}: {e:?}");
        }
    }
}

/// After a suspend: maps (PV) or places (PVH) the table's frames again, as many as before,
/// at the same addresses. In a new domain their entries are blank: whatever was granted
/// there went with the old domain's backends, and the drivers grant afresh as they
/// reconnect.
pub fn resume(new_domain: bool) -> Result<(), GrantError> {
    let table = TABLE.lock();
    if crate::pvops::is_xen_pv() {
        return map_pv_frames(0, table.frames());
    }
    if new_domain {
        for (i, &pfn) in PVH_FRAMES.lock().iter().enumerate() {
            // SAFETY: the frame has been the table's alone since `grow` placed it; placing
            // it again keeps it so.
            unsafe {
                hypercall::ops::add_to_physmap(
                    hypercall::abi::XENMAPSPACE_GRANT_TABLE,
                    i as u64,
                    pfn,
                )
            }
            .map_err(GrantError::Hypercall)?;
        }
    }
    Ok(())
}

/// Lets `domid` access our frame (`frame` as the other domain sees it: a machine frame
/// under PV, a guest frame under PVH); grows the table when references run out.
pub fn grant_access(domid: DomId, frame: u64, readonly: bool) -> Result<GrantRef, GrantError> {
    let mut table = TABLE.lock();
    match table.grant_access(domid, frame, readonly) {
        Err(GrantError::Exhausted) if table.needs_frames() => {
            grow(&mut table)?;
            table.grant_access(domid, frame, readonly)
        }
        result => result,
    }
}

/// Revokes a grant; refused (`InUse`) while the grantee has the page mapped.
pub fn end_access(r: GrantRef) -> Result<(), GrantError> {
    TABLE.lock().end_access(r)
}

/// (frames mapped, references free).
pub fn stats() -> (usize, usize) {
    let table = TABLE.lock();
    (table.frames(), table.available())
}
