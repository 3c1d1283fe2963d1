use super::{check, Outcome, Test, XorShift};
use crate::arch::{pfn_to_virt, PAGE_SIZE};
use crate::mm::{self, frames::FrameError, paging};
use alloc::vec::Vec;

pub const TESTS: &[Test] = &[
    Test { name: "mem::heap_stress", run: heap_stress },
    Test { name: "mem::frame_alloc", run: frame_alloc },
    Test { name: "mem::map_page", run: map_page },
    Test { name: "mem::lazy_mmu_batching", run: lazy_mmu_batching },
    Test { name: "mem::heap_grows_and_gives_back", run: heap_grows_and_gives_back },
    Test { name: "mem::balloon_round_trip", run: balloon_round_trip },
    Test { name: "mem::balloon_spares_granted_pages", run: balloon_spares_granted_pages },
];

/// With a page granted, the balloon's source of pages offers every free one down to its
/// reserve, each once, and never the granted page (nor any page in use).
fn balloon_spares_granted_pages() -> Outcome {
    use crate::mm::balloon::Reservation;
    use crate::xen::gnttab;
    super::xen_only!();
    let domid = match hypercall::ops::own_domid() {
        Ok(d) => grant::DomId(d),
        Err(e) => return Outcome::Fail(alloc::format!("own domid: {e}")),
    };
    let Ok(granted) = mm::alloc_frame() else {
        return Outcome::Skip("no free frame to grant");
    };
    let gref = match gnttab::grant_access(domid, crate::pvops::pfn_to_frame(granted), false) {
        Ok(r) => r,
        Err(e) => {
            let _ = mm::free_frame(granted);
            return Outcome::Fail(alloc::format!("grant_access: {e}"));
        }
    };
    let mut platform = crate::xen::balloon::Platform;
    let mut taken = Vec::new();
    let mut bookkeeping = Ok(());
    while let Some(pfn) = platform.take_unused() {
        if taken.try_reserve(1).is_err() {
            platform.put_unused(pfn);
            bookkeeping = Err(taken.len());
            break;
        }
        taken.push(pfn);
    }
    let left = mm::frame_stats().0;
    taken.sort_unstable();
    let distinct = taken.windows(2).all(|w| w[0] != w[1]);
    let has_granted = taken.binary_search(&granted).is_ok();
    for &pfn in &taken {
        platform.put_unused(pfn);
    }
    let ended = gnttab::end_access(gref);
    let _ = mm::free_frame(granted);
    if let Err(n) = bookkeeping {
        return Outcome::Skip(if n == 0 {
            "no heap for the list"
        } else {
            "heap ran out listing pages"
        });
    }
    check!(!has_granted, "the granted pfn {granted:#x} was offered to the balloon");
    check!(distinct, "a pfn was offered twice");
    let reserve = crate::xen::balloon::RESERVE_FRAMES;
    check!(left <= reserve, "{left} free frames left, above the reserve of {reserve}");
    check!(ended.is_ok(), "end_access: {ended:?}");
    Outcome::Pass
}

/// Blocks of 64 KiB, allocated until the heap adds a region from the frame allocator, each
/// holding its bytes; once they are freed, trimming gives that region's frames back.
fn heap_grows_and_gives_back() -> Outcome {
    const BLOCK: usize = 64 << 10;
    mm::trim_heap();
    let (_, heap_free) = mm::heap_stats();
    let (frames_free, _) = mm::frame_stats();
    let regions = mm::heap_regions();
    // The heap's free space, then a region's worth: the growth must come within it.
    let most = heap_free / BLOCK + (4 << 20) / BLOCK;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    if blocks.try_reserve_exact(most).is_err() {
        return Outcome::Skip("no heap for the list of blocks");
    }
    while mm::heap_regions() == regions && blocks.len() < most {
        let mut block = Vec::new();
        if block.try_reserve_exact(BLOCK).is_err() {
            break;
        }
        block.resize(BLOCK, blocks.len() as u8);
        blocks.push(block);
    }
    if mm::heap_regions() == regions {
        let n = blocks.len();
        drop(blocks);
        mm::trim_heap();
        if frames_free < 1024 {
            return Outcome::Skip("not enough free frames for the heap to grow by a region");
        }
        return Outcome::Fail(alloc::format!(
            "{n} blocks of 64 KiB with {heap_free} bytes free and {frames_free} free frames: no region added"
        ));
    }
    check!(mm::frame_stats().0 < frames_free, "the heap grew without taking frames");
    for (i, block) in blocks.iter().enumerate() {
        check!(block.iter().all(|&b| b == i as u8), "block {i} did not hold its bytes");
    }
    drop(blocks);
    let given = mm::trim_heap();
    check!(given > 0, "trimming gave nothing back");
    check!(
        mm::heap_regions() == regions,
        "{} regions after trimming, {regions} before",
        mm::heap_regions()
    );
    check!(
        mm::frame_stats().0 == frames_free,
        "free frames {frames_free} -> {}",
        mm::frame_stats().0
    );
    Outcome::Pass
}

/// 64 free pages through the balloon's platform: given back, Xen counts 64 fewer pages and
/// (PV) the p2m and the direct map no longer name them; populated again, Xen counts them,
/// they are mapped and hold what is written; then they go back to the allocator.
fn balloon_round_trip() -> Outcome {
    use crate::mm::balloon::Reservation;
    super::xen_only!();
    const PAGES: usize = 64;
    let before = match hypercall::ops::current_reservation() {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("XENMEM_current_reservation: {e}")),
    };
    let mut platform = crate::xen::balloon::Platform;
    let mut pfns = Vec::new();
    while pfns.len() < PAGES {
        match platform.take_unused() {
            Some(pfn) => pfns.push(pfn),
            None => break,
        }
    }
    let put_back = |platform: &mut crate::xen::balloon::Platform, pfns: &[u64]| {
        for &pfn in pfns {
            platform.put_unused(pfn);
        }
    };
    if pfns.len() < PAGES {
        put_back(&mut platform, &pfns);
        return Outcome::Skip("fewer than 64 free pages above the balloon's reserve");
    }
    let pv = crate::pvops::is_xen_pv();
    for &pfn in &pfns {
        // Touched first, so that each is a page Xen has given (populate-on-demand leaves the
        // untouched ones empty, and giving one of those back changes no count).
        // SAFETY: the frame is out of the allocator, ours alone, and direct-mapped.
        unsafe { (pfn_to_virt(pfn) as *mut u64).write_volatile(pfn) };
    }
    // SAFETY: the frames came from take_unused above and were not put back.
    let gave = unsafe { platform.give_back(&pfns) };
    if gave != PAGES {
        let got = platform.populate(&pfns[..gave]);
        put_back(&mut platform, &pfns[..got]);
        return Outcome::Fail(alloc::format!("Xen took {gave} of {PAGES} pages"));
    }
    let during = hypercall::ops::current_reservation().unwrap_or(0);
    let p2m_cleared = !pv
        || pfns.iter().all(|&pfn| {
            crate::arch::xen_pv::pfn_to_mfn(pfn) == crate::arch::xen_pv::INVALID_MFN
                && paging::translate(pfn_to_virt(pfn)).is_err()
        });
    let got = platform.populate(&pfns);
    if got != PAGES {
        // What Xen would not give back stays out: leaked to Xen, never to a reader.
        put_back(&mut platform, &pfns[..got]);
        return Outcome::Fail(alloc::format!("Xen populated {got} of {PAGES} pages again"));
    }
    let after = hypercall::ops::current_reservation().unwrap_or(0);
    for &pfn in &pfns {
        let page = pfn_to_virt(pfn) as *mut u64;
        // SAFETY: the frame is out of the allocator (ours alone) and mapped again.
        unsafe { page.write_volatile(pfn ^ 0xa5a5) };
        // SAFETY: as above.
        let v = unsafe { page.read_volatile() };
        if v != pfn ^ 0xa5a5 {
            put_back(&mut platform, &pfns);
            return Outcome::Fail(alloc::format!("pfn {pfn:#x} populated again reads {v:#x}"));
        }
    }
    put_back(&mut platform, &pfns);
    check!(during + PAGES as u64 == before, "Xen counted {before} pages, {during} with 64 out");
    check!(p2m_cleared, "a page given back was still in the p2m or the direct map");
    check!(after == before, "Xen counts {after} pages after the round trip, {before} before");
    Outcome::Pass
}

/// Thousands of allocations of random sizes and alignments, freed in random order, each
/// filled with its own pattern: no overlap, no corruption, and the heap returns to its level.
fn heap_stress() -> Outcome {
    let (used_before, _) = mm::heap_stats();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(Vec<u8>, u8)> = Vec::new();
    for round in 0..4000u32 {
        if live.len() > 200 || (!live.is_empty() && rng.below(3) == 0) {
            let (buf, tag) = live.swap_remove(rng.below(live.len() as u64) as usize);
            check!(
                buf.iter().all(|&b| b == tag),
                "round {round}: a {}-byte block was overwritten",
                buf.len()
            );
        } else {
            let len = match rng.below(10) {
                0 => rng.below(64 * 1024) as usize + 1,
                _ => rng.below(512) as usize + 1,
            };
            let tag = rng.next_u64() as u8;
            let mut buf = Vec::new();
            if buf.try_reserve_exact(len).is_err() {
                return Outcome::Fail(alloc::format!(
                    "round {round}: allocating {len} bytes failed"
                ));
            }
            buf.resize(len, tag);
            live.push((buf, tag));
        }
    }
    for (buf, tag) in &live {
        check!(buf.iter().all(|b| b == tag), "a {}-byte block was overwritten", buf.len());
    }
    drop(live);
    let (used_after, _) = mm::heap_stats();
    check!(used_after == used_before, "heap use {used_before} -> {used_after}: a leak");
    Outcome::Pass
}

/// Frames are distinct, usable memory; freeing returns them; a double free is refused.
fn frame_alloc() -> Outcome {
    let (free_before, total) = mm::frame_stats();
    let mut got = Vec::new();
    for _ in 0..256 {
        match mm::alloc_frame() {
            Ok(pfn) => got.push(pfn),
            Err(e) => return Outcome::Fail(alloc::format!("alloc after {}: {e:?}", got.len())),
        }
    }
    for &pfn in &got {
        check!(pfn < total, "pfn {pfn:#x} beyond {total:#x}");
        let page = pfn_to_virt(pfn) as *mut u64;
        for i in 0..PAGE_SIZE / 8 {
            // SAFETY: the frame is ours and direct-mapped.
            unsafe { page.add(i as usize).write_volatile(pfn << 12 | i) };
        }
    }
    for &pfn in &got {
        let page = pfn_to_virt(pfn) as *const u64;
        for i in 0..PAGE_SIZE / 8 {
            // SAFETY: as above.
            let v = unsafe { page.add(i as usize).read_volatile() };
            check!(v == pfn << 12 | i, "pfn {pfn:#x} word {i}: {v:#x} (frames overlap?)");
        }
    }
    check!(mm::frame_stats().0 == free_before - 256, "free count off");
    for &pfn in &got {
        check!(mm::free_frame(pfn).is_ok(), "free {pfn:#x}");
    }
    check!(mm::free_frame(got[0]) == Err(FrameError::DoubleFree(got[0])), "double free accepted");
    check!(mm::frame_stats().0 == free_before, "free count not restored");
    let run = match mm::alloc_frames(64) {
        Ok(first) => first,
        Err(e) => return Outcome::Fail(alloc::format!("64 contiguous frames: {e:?}")),
    };
    for pfn in run..run + 64 {
        check!(mm::free_frame(pfn).is_ok(), "free run frame {pfn:#x}");
    }
    Outcome::Pass
}

/// A frame mapped at a fresh address through pv_ops aliases its direct-map page, and is
/// gone after unmap.
fn map_page() -> Outcome {
    const VA: u64 = 0xffff_c000_0000_0000;
    let pfn = match mm::alloc_frame() {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(alloc::format!("alloc: {e:?}")),
    };
    let direct = pfn_to_virt(pfn) as *mut u64;
    let outcome = (|| {
        // SAFETY: our frame, direct-mapped.
        unsafe { direct.write_volatile(0x1234_5678) };
        // SAFETY: VA is a scratch address nothing else uses.
        let r = unsafe { paging::map(VA, pfn, true) };
        check!(r.is_ok(), "map: {r:?}");
        check!(paging::translate(VA) == Ok(pfn), "translate: {:?}", paging::translate(VA));
        // SAFETY: VA maps our frame; no Rust reference to it exists.
        unsafe {
            check!(
                (VA as *const u64).read_volatile() == 0x1234_5678,
                "new mapping does not show the page"
            );
            (VA as *mut u64).add(1).write_volatile(0xfeed);
            check!(
                direct.add(1).read_volatile() == 0xfeed,
                "write through the new mapping not seen"
            );
        }
        // SAFETY: nothing uses VA any more.
        let r = unsafe { paging::unmap(VA) };
        check!(r == Ok(pfn), "unmap: {r:?}");
        check!(
            paging::translate(VA) == Err(paging::MapError::NotMapped),
            "still mapped after unmap"
        );
        // SAFETY: as above.
        let again = unsafe { paging::unmap(VA) };
        check!(again == Err(paging::MapError::NotMapped), "second unmap: {again:?}");
        Outcome::Pass
    })();
    let _ = mm::free_frame(pfn);
    outcome
}

/// 256 pages mapped, then unmapped, in lazy-MMU sections: a handful of hypercalls each
/// under Xen (not one per page), and the mappings right afterwards.
fn lazy_mmu_batching() -> Outcome {
    const PAGES: u64 = 256;
    const BASE: u64 = 0xffff_c000_2000_0000;
    // Under Xen: the batch flushes plus the page tables a fresh region needs.
    const MAX_HYPERCALLS: u64 = 8;
    let first = match mm::alloc_frames(PAGES) {
        Ok(f) => f,
        Err(e) => return Outcome::Fail(alloc::format!("{PAGES} frames: {e:?}")),
    };
    for i in 0..PAGES {
        // SAFETY: our frames, direct-mapped.
        unsafe { (pfn_to_virt(first + i) as *mut u64).write_volatile(0x1a2e_0000 + i) };
    }
    let outcome = (|| {
        let before = hypercall::raw::count();
        {
            let _lazy = crate::pvops::lazy_mmu();
            for i in 0..PAGES {
                // SAFETY: BASE.. is a scratch range nothing else uses.
                let r = unsafe { paging::map(BASE + i * PAGE_SIZE, first + i, false) };
                check!(r.is_ok(), "map page {i}: {r:?}");
            }
        }
        let mapping = hypercall::raw::count() - before;
        for i in 0..PAGES {
            // SAFETY: mapped above, read-only alias of our frame.
            let v = unsafe { ((BASE + i * PAGE_SIZE) as *const u64).read_volatile() };
            check!(v == 0x1a2e_0000 + i, "page {i} reads {v:#x} after the lazy section");
        }
        let before = hypercall::raw::count();
        {
            let _lazy = crate::pvops::lazy_mmu();
            for i in 0..PAGES {
                // SAFETY: nothing uses the scratch range any more.
                let r = unsafe { paging::unmap(BASE + i * PAGE_SIZE) };
                check!(r == Ok(first + i), "unmap page {i}: {r:?}");
            }
        }
        let unmapping = hypercall::raw::count() - before;
        for i in 0..PAGES {
            let t = paging::translate(BASE + i * PAGE_SIZE);
            check!(t == Err(paging::MapError::NotMapped), "page {i} still mapped: {t:?}");
        }
        if crate::pvops::is_xen_pv() {
            check!(
                mapping <= MAX_HYPERCALLS && unmapping <= MAX_HYPERCALLS,
                "{mapping} hypercalls to map and {unmapping} to unmap {PAGES} pages"
            );
            log::info!("lazy MMU: {PAGES} pages mapped with {mapping}, unmapped with {unmapping} hypercalls");
        }
        Outcome::Pass
    })();
    for i in 0..PAGES {
        let _ = mm::free_frame(first + i);
    }
    outcome
}
