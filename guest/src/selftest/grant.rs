use super::{check, xen_only, Outcome, Test};
use crate::arch::{pfn_to_virt, PAGE_SIZE};
use crate::mm;
use crate::xen::gnttab;
use alloc::vec::Vec;
use grant::abi::{CopyTarget, GnttabCopy};
use grant::{DomId, GrantError};

pub const TESTS: &[Test] = &[
    Test { name: "grant::copy_through_self_grant", run: copy_through_self_grant },
    Test { name: "grant::exhaustion_recovers", run: exhaustion_recovers },
    Test { name: "grant::end_refused_while_mapped", run: end_refused_while_mapped },
];

/// We grant a page to ourselves and have Xen copy it, through the grant, into another page
/// with one batched GNTTABOP_copy of two halves.
fn copy_through_self_grant() -> Outcome {
    xen_only!();
    let domid = match hypercall::ops::own_domid() {
        Ok(d) => DomId(d),
        Err(e) => return Outcome::Fail(alloc::format!("own domid: {e}")),
    };
    let (src, dst) = match (mm::alloc_frame(), mm::alloc_frame()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Outcome::Fail("no frames".into()),
    };
    let (src_page, dst_page) = (pfn_to_virt(src) as *mut u64, pfn_to_virt(dst) as *mut u64);
    for i in 0..PAGE_SIZE / 8 {
        // SAFETY: both frames are ours, direct-mapped, and referenced by nothing else.
        unsafe {
            src_page.add(i as usize).write_volatile(0x9a9a_0000_0000 | i);
            dst_page.add(i as usize).write_volatile(0);
        }
    }
    let outcome = (|| {
        let gref = match gnttab::grant_access(domid, crate::pvops::pfn_to_frame(src), true) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(alloc::format!("grant_access: {e}")),
        };
        let half = (PAGE_SIZE / 2) as u16;
        let op = |offset: u16| {
            GnttabCopy::new(
                CopyTarget::Grant { gref, domid: DomId::SELF, offset },
                CopyTarget::Frame {
                    gmfn: crate::pvops::pfn_to_frame(dst),
                    domid: DomId::SELF,
                    offset,
                },
                half,
            )
        };
        let mut ops = [op(0), op(half)];
        let before = hypercall::raw::count();
        // SAFETY: the destination frame is ours and nothing references it while Xen writes.
        let r = unsafe { grant::ops::copy(&mut ops) };
        let calls = hypercall::raw::count() - before;
        let ended = gnttab::end_access(gref);
        check!(r.is_ok(), "GNTTABOP_copy: {r:?}");
        check!(calls == 1, "{calls} hypercalls for one batch of two copies");
        check!(ended.is_ok(), "end_access after the copy: {ended:?}");
        for i in 0..PAGE_SIZE / 8 {
            // SAFETY: as above; Xen has finished writing.
            let v = unsafe { dst_page.add(i as usize).read_volatile() };
            check!(v == 0x9a9a_0000_0000 | i, "word {i} copied as {v:#x}");
        }
        Outcome::Pass
    })();
    let _ = (mm::free_frame(src), mm::free_frame(dst));
    outcome
}

/// Granting until Xen's table limit runs out of references is an error, not a hang or a
/// panic; freeing one reference makes granting work again.
fn exhaustion_recovers() -> Outcome {
    xen_only!();
    let domid = match hypercall::ops::own_domid() {
        Ok(d) => DomId(d),
        Err(e) => return Outcome::Fail(alloc::format!("own domid: {e}")),
    };
    let frame = match mm::alloc_frame() {
        Ok(pfn) => crate::pvops::pfn_to_frame(pfn),
        Err(e) => return Outcome::Fail(alloc::format!("alloc: {e:?}")),
    };
    let mut refs = Vec::new();
    let exhausted = loop {
        match gnttab::grant_access(domid, frame, true) {
            Ok(r) => refs.push(r),
            Err(e) => break e,
        }
        if refs.len() > 1 << 20 {
            break GrantError::TableFull;
        }
    };
    let (frames, _) = gnttab::stats();
    let again = gnttab::grant_access(domid, frame, true);
    let freed = refs.pop().map(gnttab::end_access);
    let after_free = gnttab::grant_access(domid, frame, true);
    if let Ok(r) = after_free {
        refs.push(r);
    }
    let ended = refs.iter().map(|&r| gnttab::end_access(r)).filter(Result::is_err).count();
    let _ = mm::free_frame(crate::pvops::frame_to_pfn(frame));
    check!(exhausted == GrantError::Exhausted, "granting stopped with {exhausted:?}");
    check!(again == Err(GrantError::Exhausted), "granting past exhaustion gave {again:?}");
    check!(matches!(freed, Some(Ok(()))), "end_access: {freed:?}");
    check!(after_free.is_ok(), "granting after a free gave {after_free:?}");
    check!(ended == 0, "{ended} grants could not be ended");
    log::info!("grant table: {} references in {frames} frames before exhaustion", refs.len());
    Outcome::Pass
}

/// While the grantee (here: we ourselves, through GNTTABOP_map_grant_ref) has the page
/// mapped, ending the grant is refused and the grant stays; after the unmap it ends.
fn end_refused_while_mapped() -> Outcome {
    xen_only!();
    // PV maps at a virtual address; PVH at a guest frame, chosen in the hole above RAM (as
    // Linux maps grants into unpopulated frames) and read through the direct map.
    let (host_addr, va) = if crate::pvops::is_xen_pv() {
        const VA: u64 = 0xffff_c000_6000_0000;
        (VA, VA)
    } else {
        let (_, ram_frames) = mm::frame_stats();
        let hole = ram_frames + 1;
        check!(hole < crate::arch::DIRECT_MAP_PAGES, "no hole above RAM in the direct map");
        (hole * PAGE_SIZE, pfn_to_virt(hole))
    };
    let domid = match hypercall::ops::own_domid() {
        Ok(d) => DomId(d),
        Err(e) => return Outcome::Fail(alloc::format!("own domid: {e}")),
    };
    let pfn = match mm::alloc_frame() {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("alloc: {e:?}")),
    };
    // SAFETY: our frame, direct-mapped.
    unsafe { (pfn_to_virt(pfn) as *mut u64).write_volatile(0x6a6a_6a6a) };
    let outcome = (|| {
        // PV: Xen maps into an existing L1 table: make sure there is one.
        if crate::pvops::is_xen_pv() {
            check!(crate::mm::paging::entry(va, 1, true).is_ok(), "no page table for {va:#x}");
        }
        let gref = match gnttab::grant_access(domid, crate::pvops::pfn_to_frame(pfn), true) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(alloc::format!("grant_access: {e}")),
        };
        // SAFETY: a scratch address (PV) or a frame with no memory (PVH) nothing else uses.
        let mapped = match unsafe { grant::ops::map_grant_ref(host_addr, domid, gref, true) } {
            Ok(m) => m,
            Err(e) => {
                let _ = gnttab::end_access(gref);
                return Outcome::Fail(alloc::format!("map_grant_ref: {e}"));
            }
        };
        // SAFETY: Xen mapped our granted page read-only at `va`.
        let seen = unsafe { (va as *const u64).read_volatile() };
        let refused = gnttab::end_access(gref);
        // SAFETY: nothing uses the mapping any more.
        let unmapped = unsafe { grant::ops::unmap_grant_ref(mapped) };
        let ended = gnttab::end_access(gref);
        check!(seen == 0x6a6a_6a6a, "the mapped grant shows {seen:#x}");
        check!(refused == Err(GrantError::InUse(gref)), "end_access while mapped: {refused:?}");
        check!(unmapped.is_ok(), "unmap_grant_ref: {unmapped:?}");
        check!(ended.is_ok(), "end_access after the unmap: {ended:?}");
        Outcome::Pass
    })();
    let _ = mm::free_frame(pfn);
    outcome
}
