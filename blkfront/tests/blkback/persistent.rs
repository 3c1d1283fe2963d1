//! Persistent grants: when both sides announce `feature-persistent`, the pages the backend
//! keeps mapped keep their (writable) grant across requests, up to
//! [`MAX_PERSISTENT_GRANTS`]; the rest are granted per request, writable too.

use blkfront::DeviceError;
use blkfront::{BlkError, BlockDevice, Request, MAX_PERSISTENT_GRANTS};

use crate::fake::{frontend_path, round_trips, Rig, MAX_PGRANTS};

const SECOND: u64 = 1_000_000_000;
const PERSISTENT: (&str, &str) = ("feature-persistent", "1");
const INDIRECT: (&str, &str) = ("feature-max-indirect-segments", "256");

#[test]
fn pages_keep_their_grants_across_requests() {
    let (rig, mut blk) = Rig::connected(&[PERSISTENT]);
    assert_eq!(
        rig.store_get(&format!("{}/feature-persistent", frontend_path())).as_deref(),
        Some("1")
    );
    assert!(rig.w().persistent);
    round_trips(&rig, &mut blk, &[512, 4096, 11 * 4096], &[0, 3, 17], 5);
    let w = rig.w();
    // One request at a time of at most 11 pages: 11 pages, granted once each, all still
    // granted, writable, and mapped by the backend; nothing was mapped per request.
    assert_eq!(blk.stats().persistent_grants, 11);
    assert_eq!(w.table.grants.len(), 1 + 11, "the ring's grant and the persistent pages'");
    assert!(w.table.grants.values().all(|g| !g.readonly));
    assert_eq!(w.table.held.len(), 11);
    assert_eq!(w.transient_maps, 0);
}

#[test]
fn indirect_pages_are_persistent_too() {
    let (rig, mut blk) = Rig::connected(&[PERSISTENT, INDIRECT, ("sectors", "16384")]);
    round_trips(&rig, &mut blk, &[300 * 1024, 1024 * 1024], &[0, 9], 3);
    let w = rig.w();
    // 256 data pages and one indirect page at most at a time.
    assert_eq!(blk.stats().persistent_grants, 257);
    assert_eq!(w.transient_maps, 0);
    assert!(w.table.grants.values().all(|g| !g.readonly));
}

#[test]
fn beyond_the_limit_pages_are_granted_per_request() {
    let (rig, mut blk) = Rig::connected(&[PERSISTENT, INDIRECT, ("sectors", "65536")]);
    // Eight 1 MiB writes at once need 8 * 257 pages: blkback keeps the first 1056 it maps,
    // and those become persistent.
    let data = |i: usize| vec![i as u8 + 1; 1024 * 1024];
    let ids: Vec<_> = (0..8)
        .map(|i| blk.submit(Request::Write { sector: i as u64 * 2048, data: data(i) }).unwrap())
        .collect();
    assert_eq!(blk.in_flight(), 8);
    rig.w().serve();
    assert_eq!(blk.poll(), 8);
    for id in ids {
        assert_eq!(blk.take_completion_of(id).map(|c| c.result), Some(Ok(())));
    }
    {
        let w = rig.w();
        assert_eq!(blk.stats().persistent_grants, MAX_PGRANTS as u64);
        assert_eq!(w.transient_maps, 8 * 257 - MAX_PGRANTS);
        // Only the persistent pages (and the ring) stay granted.
        assert_eq!(w.table.grants.len(), 1 + MAX_PGRANTS);
        assert_eq!(blk.stats().quarantined, 0);
        for i in 0..8 {
            assert!(w.disk[i * 1024 * 1024..][..1024 * 1024].iter().all(|&b| b == i as u8 + 1));
        }
    }
    let mut back = vec![0; 1024 * 1024];
    blk.read(7 * 2048, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 8));
    assert_eq!(rig.w().exposed, 0);
}

#[test]
fn pages_a_backend_holds_beyond_the_limit_are_quarantined() {
    let (rig, mut blk) = Rig::connected(&[PERSISTENT, INDIRECT, ("sectors", "65536")]);
    // A backend that keeps every grant it maps, beyond its own announced limit.
    let ids: Vec<_> = (0..8)
        .map(|i| blk.submit(Request::Read { sector: i * 2048, len: 1024 * 1024 }).unwrap())
        .collect();
    {
        let mut w = rig.w();
        let taken = w.take_requests();
        let all: Vec<u32> = w.table.grants.keys().copied().collect();
        w.table.held.extend(all);
        for t in &taken {
            let rsp = w.answer(t);
            w.respond(rsp);
        }
        w.publish();
    }
    assert_eq!(blk.poll(), 8);
    let results: Vec<_> =
        ids.iter().map(|&id| blk.take_completion_of(id).unwrap().result).collect();
    // Reads whose pages were quarantined cannot be trusted; the others completed.
    assert!(results.contains(&Err(BlkError::BadResponse)));
    assert!(results.iter().any(|r| r.is_ok()));
    let s = blk.stats();
    assert_eq!(s.persistent_grants, MAX_PERSISTENT_GRANTS as u64);
    assert_eq!(s.quarantined, 8 * 257 - MAX_PERSISTENT_GRANTS as u64);
    assert_eq!(blk.quarantined(), 8 * 257 - MAX_PERSISTENT_GRANTS);
    // Far past what a backend may hold against the protocol: the device is broken.
    let mut buf = [0; 512];
    assert_eq!(blk.read(0, &mut buf), Err(BlkError::Device(DeviceError::Broken)));
}

#[test]
fn not_used_unless_the_backend_offers_it() {
    let (rig, mut blk) = Rig::connected(&[INDIRECT, ("sectors", "16384")]);
    round_trips(&rig, &mut blk, &[4096, 300 * 1024], &[0], 9);
    let w = rig.w();
    assert!(!w.persistent);
    assert_eq!(blk.stats().persistent_grants, 0);
    assert_eq!(w.table.grants.len(), 1, "every data grant ended after its request");
}

#[test]
fn close_ends_persistent_grants_and_frees_the_pages() {
    let (mut rig, mut blk) = Rig::connected(&[PERSISTENT]);
    blk.write(0, &[7; 8192]).unwrap();
    let (result, failed) = blk.close(&mut rig.xs, SECOND);
    assert_eq!((result, failed.len()), (Ok(()), 0));
    let w = rig.w();
    assert!(w.table.grants.is_empty(), "every grant ended");
    assert_eq!(w.pages_out(), 0, "every page returned");
}

#[test]
fn pages_a_backend_keeps_mapped_after_closing_are_leaked_not_freed() {
    let (mut rig, mut blk) = Rig::connected(&[PERSISTENT]);
    blk.write(0, &[7; 8192]).unwrap();
    rig.w().keep_mappings = true;
    let (result, _) = blk.close(&mut rig.xs, SECOND);
    assert_eq!(result, Ok(()));
    let w = rig.w();
    // The two persistent pages stay granted and out of the allocator's hands.
    assert_eq!(w.table.grants.len(), 2);
    assert_eq!(w.pages_out(), 2);
    assert!(w.table.grants.keys().all(|r| w.table.held.contains(r)));
}

#[test]
fn a_read_only_disk_with_persistent_grants_still_refuses_writes() {
    let (rig, mut blk) = Rig::connected(&[PERSISTENT, ("info", "4")]);
    assert_eq!(blk.write(0, &[1; 512]), Err(BlkError::ReadOnly));
    let mut buf = vec![0; 4096];
    blk.read(0, &mut buf).unwrap();
    assert!(buf[..] == rig.w().disk[..4096]);
}
