//! `HYPERVISOR_grant_table_op`: typed wrappers for the operations this guest issues.
//!
//! Most grant-table operations report failure twice: the hypercall's return value (the
//! arguments could not be read at all) and a `GNTST_*` status per operation (Xen read them
//! and refused). Both are checked; the checks and argument building are plain functions so
//! the host tests exercise them without Xen.

use hypercall::abi::xen_pfn_t;
use hypercall::raw::hypercall3;
use hypercall::Errno;
use xen_sys::__HYPERVISOR_grant_table_op;

use crate::abi::{
    op, DomId, GnttabCopy, GnttabMapGrantRef, GnttabQuerySize, GnttabSetupTable,
    GnttabUnmapGrantRef, GrantStatus, GNTMAP_HOST_MAP, GNTMAP_READONLY,
};
use crate::GrantError;
use crate::GrantRef;

/// Issues `cmd` on `count` argument structs at `arg`.
///
/// # Safety
/// `arg` points to `count` structs of the type `cmd` takes, and whatever Xen reads or writes
/// through them (frame lists, copy destinations) is memory Rust lets it access.
unsafe fn grant_table_op<T>(cmd: u32, arg: *mut T, count: u32) -> Result<(), GrantError> {
    // SAFETY: forwarded contract.
    let ret =
        unsafe { hypercall3(__HYPERVISOR_grant_table_op, cmd.into(), arg as u64, count.into()) };
    Errno::check(ret).map(drop).map_err(GrantError::Hypercall)
}

/// A count as Xen's `unsigned int` parameters take it. Xen refuses counts above `INT_MAX`
/// with `EINVAL`; a longer slice is refused the same way here rather than truncated.
fn count(len: usize) -> Result<u32, GrantError> {
    i32::try_from(len).map(|n| n as u32).map_err(|_| GrantError::Hypercall(Errno::EINVAL))
}

/// The `GNTST_*` code Xen wrote for operation `index` of a call.
fn status(index: usize, raw: i16) -> Result<(), GrantError> {
    match GrantStatus::try_from(raw) {
        Ok(GrantStatus::Okay) => Ok(()),
        Ok(status) => Err(GrantError::Status { index, status }),
        Err(raw) => Err(GrantError::UnknownStatus { index, raw }),
    }
}

fn setup_table_arg(frames: &mut [xen_pfn_t]) -> Result<GnttabSetupTable, GrantError> {
    Ok(GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: count(frames.len())?,
        status: GrantStatus::GeneralError as i16,
        frame_list: frames.as_mut_ptr(),
    })
}

/// `GNTTABOP_setup_table` for this domain: grows our grant table to `frames.len()` frames
/// (it never shrinks) and fills `frames` with their numbers, machine frames under PV. Xen
/// refuses more than `max_nr_frames` of [`query_size`].
pub fn setup_table(frames: &mut [xen_pfn_t]) -> Result<(), GrantError> {
    let mut arg = setup_table_arg(frames)?;
    // SAFETY: one gnttab_setup_table; Xen writes `nr_frames` frame numbers into `frames`,
    // which has exactly that many.
    unsafe { grant_table_op(op::SETUP_TABLE, &mut arg, 1) }?;
    status(0, arg.status)
}

/// `GNTTABOP_query_size` for this domain: (frames now, most frames Xen allows).
pub fn query_size() -> Result<(u32, u32), GrantError> {
    let mut arg = GnttabQuerySize {
        dom: DomId::SELF,
        status: GrantStatus::GeneralError as i16,
        ..Default::default()
    };
    // SAFETY: one gnttab_query_size, which holds no pointer.
    unsafe { grant_table_op(op::QUERY_SIZE, &mut arg, 1) }?;
    status(0, arg.status)?;
    Ok((arg.nr_frames, arg.max_nr_frames))
}

/// The first operation of a batch that Xen refused.
fn copy_status(ops: &[GnttabCopy]) -> Result<(), GrantError> {
    ops.iter().enumerate().try_for_each(|(i, c)| status(i, c.status))
}

/// `GNTTABOP_copy`: Xen performs every copy of `ops` in one hypercall.
///
/// Each operation's `GNTST_*` code is left in its `status` field; the result reports the
/// first that failed, by index ([`GrantError::Status`]). The others were still attempted,
/// so a caller that retries (e.g. on `GNTST_eagain`) looks at each status.
///
/// # Safety
/// For every operation whose destination is memory of this domain (one of our frames, or a
/// grant this domain issued, to itself included), the `len` bytes at `offset` in that page
/// are not covered by any live Rust reference: Xen writes them behind the compiler's back.
pub unsafe fn copy(ops: &mut [GnttabCopy]) -> Result<(), GrantError> {
    let n = count(ops.len())?;
    // Unprocessed entries must not read as successes if Xen stops early.
    for c in ops.iter_mut() {
        c.status = GrantStatus::GeneralError as i16;
    }
    // SAFETY: `n` gnttab_copy structs; the caller vouches for what Xen writes through them.
    unsafe { grant_table_op(op::COPY, ops.as_mut_ptr(), n) }?;
    copy_status(ops)
}

/// A grant mapped into our address space by [`map_grant_ref`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedGrant {
    pub host_addr: u64,
    pub handle: u32,
}

/// `GNTTABOP_map_grant_ref` with `GNTMAP_host_map`: Xen maps `dom`'s grant `gref` at
/// `host_addr` (PV: a virtual address, in our page tables, whose L1 for that address must
/// already exist; HVM/PVH: a guest physical address, best one with no memory behind it).
/// `dom` is a real domain id: Xen refuses DOMID_SELF here, even for our own grants.
///
/// # Safety
/// `host_addr` is a page-aligned address nothing in this domain uses, and it stays unused
/// by anything else until [`unmap_grant_ref`].
pub unsafe fn map_grant_ref(
    host_addr: u64,
    dom: DomId,
    gref: GrantRef,
    readonly: bool,
) -> Result<MappedGrant, GrantError> {
    let flags = GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 };
    let mut arg = GnttabMapGrantRef {
        host_addr,
        flags,
        gref,
        dom,
        status: GrantStatus::GeneralError as i16,
        handle: 0,
        dev_bus_addr: 0,
    };
    // SAFETY: one gnttab_map_grant_ref; the caller vouches for the address Xen maps at.
    unsafe { grant_table_op(op::MAP_GRANT_REF, &mut arg, 1) }?;
    status(0, arg.status)?;
    Ok(MappedGrant { host_addr, handle: arg.handle })
}

/// `GNTTABOP_unmap_grant_ref`: undoes [`map_grant_ref`].
///
/// # Safety
/// Nothing may access the mapping any more.
pub unsafe fn unmap_grant_ref(mapped: MappedGrant) -> Result<(), GrantError> {
    let mut arg = GnttabUnmapGrantRef {
        host_addr: mapped.host_addr,
        dev_bus_addr: 0,
        handle: mapped.handle,
        status: GrantStatus::GeneralError as i16,
    };
    // SAFETY: one gnttab_unmap_grant_ref; the caller vouches the mapping is unused.
    unsafe { grant_table_op(op::UNMAP_GRANT_REF, &mut arg, 1) }?;
    status(0, arg.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{CopyTarget, GrantRef};

    #[test]
    fn statuses_map_to_errors() {
        assert_eq!(status(0, 0), Ok(()));
        assert_eq!(
            status(3, -8),
            Err(GrantError::Status { index: 3, status: GrantStatus::PermissionDenied })
        );
        assert_eq!(
            status(0, -1),
            Err(GrantError::Status { index: 0, status: GrantStatus::GeneralError })
        );
        // Codes the header does not define are reported as received.
        assert_eq!(status(1, -14), Err(GrantError::UnknownStatus { index: 1, raw: -14 }));
        assert_eq!(status(1, 5), Err(GrantError::UnknownStatus { index: 1, raw: 5 }));
    }

    fn copy_op(status: i16) -> GnttabCopy {
        let g = CopyTarget::Grant { gref: GrantRef(9), domid: DomId::SELF, offset: 0 };
        let f = CopyTarget::Frame { gmfn: 0x1234, domid: DomId::SELF, offset: 0 };
        GnttabCopy { status, ..GnttabCopy::new(g, f, 64) }
    }

    #[test]
    fn copy_batch_reports_the_first_failure_by_index() {
        assert_eq!(copy_status(&[]), Ok(()));
        assert_eq!(copy_status(&[copy_op(0), copy_op(0), copy_op(0)]), Ok(()));
        assert_eq!(
            copy_status(&[copy_op(0), copy_op(-10), copy_op(-3)]),
            Err(GrantError::Status { index: 1, status: GrantStatus::BadCopyArg })
        );
        assert_eq!(
            copy_status(&[copy_op(0), copy_op(0), copy_op(-12)]),
            Err(GrantError::Status { index: 2, status: GrantStatus::Eagain })
        );
        assert_eq!(
            copy_status(&[copy_op(-99)]),
            Err(GrantError::UnknownStatus { index: 0, raw: -99 })
        );
    }

    #[test]
    fn setup_table_argument() {
        let mut frames = [0; 3];
        let arg = setup_table_arg(&mut frames).unwrap();
        assert_eq!((arg.dom, arg.nr_frames), (DomId(0x7ff0), 3));
        assert_eq!(arg.frame_list, frames.as_mut_ptr());
        // Nothing but Xen's answer may turn the status into a success.
        assert_eq!(
            status(0, arg.status),
            Err(GrantError::Status { index: 0, status: GrantStatus::GeneralError })
        );
    }

    #[test]
    fn counts_follow_xens_limit() {
        assert_eq!(count(0), Ok(0));
        assert_eq!(count(i32::MAX as usize), Ok(i32::MAX as u32));
        assert_eq!(count(i32::MAX as usize + 1), Err(GrantError::Hypercall(Errno::EINVAL)));
        assert_eq!(count(usize::MAX), Err(GrantError::Hypercall(Errno::EINVAL)));
    }

    #[test]
    fn without_xen_every_op_fails_cleanly() {
        // No hypercall page is registered on the host: ENOSYS, not a jump to nowhere.
        let mut frames = [0; 1];
        assert_eq!(setup_table(&mut frames), Err(GrantError::Hypercall(Errno::ENOSYS)));
        assert_eq!(query_size(), Err(GrantError::Hypercall(Errno::ENOSYS)));
        let mut ops = [copy_op(0)];
        // SAFETY: nothing is issued without a hypercall page.
        assert_eq!(unsafe { copy(&mut ops) }, Err(GrantError::Hypercall(Errno::ENOSYS)));
        // The statuses do not claim success for a copy that never happened.
        assert_eq!(ops[0].status, GrantStatus::GeneralError as i16);
    }
}
