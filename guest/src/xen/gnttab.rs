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
        crate::arch::xen_pvh::grant_table_frame(n as u64 - 1)?
    };
    // SAFETY: frame n-1 is mapped read-write at `va` for good, and only the table uses it.
    unsafe { table.add_frame(NonNull::new_unchecked(va)) }
}

/// Frame `n - 1` of a PV guest's table, which Xen hands out by machine frame, mapped after
/// the others.
fn map_pv_frame(n: usize) -> Result<*mut u8, GrantError> {
    let mut frames = [0; MAX_FRAMES];
    // Xen returns the frames of the whole (grown) table, the old ones unchanged.
    grant::ops::setup_table(&mut frames[..n])?;
    let va = TABLE_VA + (n as u64 - 1) * PAGE_SIZE;
    // SAFETY: the slot for frame n-1 in our reserved range is unused, and Xen shares the
    // table frames with us for writing.
    if let Err(e) = unsafe { paging::map_frame(va, frames[n - 1], true) } {
        log::error!("cannot map grant table frame {}: {e:?}", n - 1);
        return Err(GrantError::TableFull);
    }
    Ok(va as *mut u8)
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
