//! Indirect descriptors: large reads and writes as one BLKIF_OP_INDIRECT request whose
//! segments lie in granted pages, used only when the backend offers them.

use blkfront::abi::{Op, MAX_SEGMENTS_PER_REQUEST};
use blkfront::DeviceError;
use blkfront::{BlkError, BlockDevice, Request, MAX_INDIRECT_SEGMENTS};

use crate::fake::{frontend_path, pattern, round_trips, Rig};

const KIB: usize = 1024;
const SECOND: u64 = 1_000_000_000;
const OFFER: (&str, &str) = ("feature-max-indirect-segments", "256");

/// (operation, nr_segments) of every request the backend took, in order; an indirect one
/// as (Indirect, its segment count).
fn shapes(rig: &Rig) -> Vec<(u8, usize)> {
    let w = rig.w();
    let mut indirect = w.indirect.iter();
    w.requests
        .iter()
        .map(|r| match Op::try_from(r.operation) {
            Ok(Op::Indirect) => (r.operation, indirect.next().unwrap().0.nr_segments as usize),
            _ => (r.operation, r.nr_segments as usize),
        })
        .collect()
}

const IND: u8 = Op::Indirect as u8;
const WR: u8 = Op::Write as u8;
const RD: u8 = Op::Read as u8;

#[test]
fn large_transfers_use_indirect_requests_when_offered() {
    let (rig, mut blk) = Rig::connected(&[OFFER, ("sectors", "16384")]);
    assert_eq!(blk.max_segments(), 256);
    // 75 pages from sector 7: one indirect write, one indirect read.
    let data: Vec<u8> = (0..300 * KIB).map(|i| (i as u8).wrapping_mul(31)).collect();
    blk.write(7, &data).unwrap();
    let mut back = vec![0; data.len()];
    blk.read(7, &mut back).unwrap();
    assert!(back == data);
    assert_eq!(shapes(&rig), [(IND, 75), (IND, 75)]);
    {
        let w = rig.w();
        let (req, segs) = &w.indirect[0];
        assert_eq!((req.indirect_op, req.sector_number, segs.len()), (WR, 7, 75));
        assert_eq!(w.indirect[1].0.indirect_op, RD);
        assert!(segs.iter().all(|s| (s.first_sect, s.last_sect) == (0, 7)));
        assert_eq!(w.disk[7 * 512..7 * 512 + data.len()], data[..]);
    }
    // 2 MiB and 3 sectors: two full indirect parts, then a direct tail of one segment.
    rig.w().requests.clear();
    rig.w().indirect.clear();
    let len = 2048 * KIB + 3 * 512;
    blk.write(100, &vec![4; len]).unwrap();
    assert_eq!(shapes(&rig), [(IND, 256), (IND, 256), (WR, 1)]);
    {
        let w = rig.w();
        assert_eq!(w.indirect[1].0.sector_number, 100 + 256 * 8);
        let tail = w.requests.last().unwrap();
        assert_eq!(tail.sector_number, 100 + 512 * 8);
        assert_eq!((tail.seg[0].first_sect, tail.seg[0].last_sect), (0, 2));
        assert!(w.disk[100 * 512..100 * 512 + len].iter().all(|&b| b == 4));
    }
    // Up to 11 pages stay direct; 12 go indirect.
    rig.w().requests.clear();
    rig.w().indirect.clear();
    let mut buf = vec![0; 12 * 4096];
    blk.read(0, &mut buf[..11 * 4096]).unwrap();
    blk.read(0, &mut buf).unwrap();
    assert!(buf[..] == rig.w().disk[..12 * 4096]);
    assert_eq!(shapes(&rig), [(RD, 11), (IND, 12)]);
    let w = rig.w();
    assert_eq!(w.exposed, 0, "an indirect or data page held more than its request's");
    assert_eq!(w.table.grants.len(), 1, "data and indirect pages all ended");
    assert_eq!(blk.stats(), Default::default());
}

#[test]
fn round_trips_with_indirect_requests() {
    let (rig, mut blk) = Rig::connected(&[OFFER]);
    let lengths = [512, 11 * 4096 + 512, 12 * 4096, 100 * KIB, 1024 * KIB, 1024 * KIB + 512];
    round_trips(&rig, &mut blk, &lengths, &[0, 1, 9, 1001], 17);
    let w = rig.w();
    assert!(w.indirect.iter().all(|(r, s)| r.nr_segments as usize == s.len()));
    assert!(w.indirect.iter().any(|(r, _)| r.nr_segments as usize == MAX_INDIRECT_SEGMENTS));
    assert_eq!(w.table.grants.len(), 1);
}

#[test]
fn without_the_feature_large_transfers_stay_direct() {
    // Not offered, or offered no more than a direct request carries.
    for extra in [&[][..], &[("feature-max-indirect-segments", "11")][..]] {
        let (rig, mut blk) = Rig::connected(extra);
        assert_eq!(blk.max_segments(), MAX_SEGMENTS_PER_REQUEST);
        let mut buf = vec![0; 300 * KIB];
        blk.read(8, &mut buf).unwrap();
        assert_eq!(buf, pattern(8 * 512, 300 * KIB));
        let w = rig.w();
        assert!(w.indirect.is_empty());
        assert_eq!(w.requests.len(), 7);
        assert!(w.requests.iter().all(|r| r.operation == RD));
    }
}

#[test]
fn the_backends_limit_caps_indirect_requests() {
    // 64 offered: 75 pages are an indirect request of 64 and a direct one of 11.
    let (rig, mut blk) = Rig::connected(&[("feature-max-indirect-segments", "64")]);
    assert_eq!(blk.max_segments(), 64);
    blk.write(0, &vec![1; 300 * KIB]).unwrap();
    assert_eq!(shapes(&rig), [(IND, 64), (WR, 11)]);
    // More offered than we use: capped at ours.
    let (_rig, blk) = Rig::connected(&[("feature-max-indirect-segments", "4096")]);
    assert_eq!(blk.max_segments(), MAX_INDIRECT_SEGMENTS);
}

#[test]
fn an_indirect_request_is_answered_with_its_indirect_op() {
    let (rig, mut blk) = Rig::connected(&[OFFER]);
    let mut buf = vec![0; 64 * KIB];
    // Blkback echoes READ/WRITE; an answer naming INDIRECT, or the other direction, is bad.
    for (bogus, expect) in [(IND, RD), (WR, RD)] {
        rig.w().tamper = Some(Box::new(move |_, r| r.operation = bogus));
        assert_eq!(blk.read(0, &mut buf), Err(BlkError::BadResponse), "{bogus} for {expect}");
    }
    rig.w().tamper = Some(Box::new(|_, r| r.operation = RD));
    // The backend wrote it, then lied about what it did.
    assert_eq!(blk.write(0, &vec![9; 64 * KIB]), Err(BlkError::BadResponse));
    assert_eq!(blk.stats().bad_responses, 3);
    assert_eq!(rig.w().table.grants.len(), 1, "every data and indirect page came back");
    rig.w().tamper = None;
    blk.read(0, &mut buf).unwrap();
    assert_eq!(buf, vec![9; 64 * KIB]);
    assert_eq!(rig.w().indirect.len(), 4);
}

#[test]
fn an_indirect_page_the_backend_keeps_is_quarantined() {
    let (rig, mut blk) = Rig::connected(&[OFFER]);
    rig.w().hold = true;
    let id = blk.submit(Request::Read { sector: 0, len: 64 * KIB }).unwrap();
    let taken = rig.w().take_requests();
    let page = taken[0].indirect.indirect_grefs[0].0;
    assert!(rig.w().table.grants[&page].readonly, "indirect pages are granted read-only");
    rig.w().table.held.insert(page);
    {
        let mut w = rig.w();
        let rsp = w.answer(&taken[0]);
        w.respond(rsp);
        w.publish();
        w.hold = false;
    }
    assert_eq!(blk.poll(), 1);
    let c = blk.take_completion_of(id).unwrap();
    assert_eq!((c.result, c.data), (Ok(()), pattern(0, 64 * KIB)));
    assert_eq!((blk.quarantined(), blk.stats().quarantined), (1, 1));
    // The 16 data pages came back; the indirect page stays granted and out of use.
    assert_eq!(rig.w().table.grants.len(), 2);
    let mut buf = vec![0; 1024 * KIB];
    for s in 0..2 {
        blk.read(s * 2048, &mut buf).unwrap();
    }
    assert!(rig.w().table.grants.contains_key(&page));
    rig.w().table.held.clear();
    blk.poll();
    assert_eq!(blk.quarantined(), 0);
    assert_eq!(rig.w().table.grants.len(), 1);
}

#[test]
fn no_page_for_the_segment_list_gives_way_to_direct_requests() {
    let (rig, mut blk) = Rig::connected(&[OFFER]);
    rig.w().table.page_limit = 1 + 12; // the ring and 12 data pages, no indirect page
    let mut buf = vec![0; 12 * 4096];
    blk.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(0, 12 * 4096));
    assert_eq!(blk.max_segments(), 11);
    let w = rig.w();
    assert_eq!(w.table.grants.len(), 1, "the data pages' grants ended");
    let sizes: Vec<_> = w.requests.iter().map(|r| (r.operation, r.nr_segments)).collect();
    assert_eq!(sizes, [(Op::Read as u8, 11), (Op::Read as u8, 1)]);
    assert!(w.indirect.is_empty());
}

/// A grant table shared with other devices: 40 references free, far fewer than a 1 MiB
/// indirect request needs. The write goes out as direct requests, a few at a time, waiting
/// for answers to give references back, and arrives whole.
#[test]
fn too_few_grant_references_for_an_indirect_request() {
    let (rig, mut blk) = Rig::connected(&[OFFER]);
    rig.w().table.grant_limit = 1 + 40;
    let data: Vec<u8> = (0..1024 * KIB).map(|i| (i / 4096) as u8 ^ i as u8).collect();
    blk.write(64, &data).unwrap();
    assert_eq!(blk.max_segments(), 11);
    let mut back = vec![0; 1024 * KIB];
    blk.read(64, &mut back).unwrap();
    assert!(back == data);
    let w = rig.w();
    assert!(w.requests.iter().all(|r| r.operation != Op::Indirect as u8 && r.nr_segments <= 11));
    assert_eq!(w.table.grants.len(), 1);
}

#[test]
fn close_ends_indirect_grants_in_flight() {
    let (mut rig, mut blk) = Rig::connected(&[OFFER]);
    rig.w().hold = true;
    let id = blk.submit(Request::Write { sector: 0, data: vec![7; 512 * KIB] }).unwrap();
    assert_eq!(rig.w().table.grants.len(), 1 + 128 + 1);
    let (result, failed) = blk.close(&mut rig.xs, SECOND);
    assert_eq!(result, Ok(()));
    assert_eq!(
        failed.iter().map(|c| (c.id, c.result)).collect::<Vec<_>>(),
        [(id, Err(BlkError::Device(DeviceError::NotConnected)))]
    );
    let w = rig.w();
    assert!(w.table.grants.is_empty());
    assert_eq!(w.pages_out(), 0);
    drop(w);
    assert_eq!(rig.store_get(&format!("{}/state", frontend_path())).as_deref(), Some("6"));
}
