//! A backend that lies: bogus ids, duplicates, wrong operations and statuses, a runaway
//! `rsp_prod`, grants it will not let go of. The driver must fail what it must, keep
//! serving the rest, never panic, and never touch another request's pages.

use blkfront::abi::{BlkifResponse, Op, Status};
use blkfront::DeviceError;
use blkfront::{BlkError, BlockDevice, Request, RequestId, MAX_QUARANTINED};

use crate::fake::{pattern, Driver, Rig, Taken};

/// Submits reads of sectors `0, 8, 16, ...` (4 KiB each) while the backend holds, and
/// returns their ids with the requests as the backend took them.
fn reads(rig: &Rig, blk: &mut Driver, n: u64) -> (Vec<RequestId>, Vec<Taken>) {
    rig.w().hold = true;
    let ids =
        (0..n).map(|i| blk.submit(Request::Read { sector: i * 8, len: 4096 }).unwrap()).collect();
    let taken = rig.w().take_requests();
    rig.w().hold = false;
    (ids, taken)
}

fn answer(rig: &Rig, t: &Taken, edit: impl FnOnce(&mut BlkifResponse)) {
    let mut w = rig.w();
    let mut rsp = w.answer(t);
    edit(&mut rsp);
    w.respond(rsp);
    w.publish();
}

#[test]
fn unknown_ids_touch_nothing() {
    let (rig, mut blk) = Rig::connected(&[]);
    let (ids, taken) = reads(&rig, &mut blk, 6);
    let grants_before = rig.w().table.grants.len();
    // A slot index beyond the table; a busy slot with the wrong generation; a free slot.
    for bogus in [1000, taken[0].req.id + (1 << 32), 10] {
        answer(&rig, &taken[1], |r| r.id = bogus);
    }
    assert_eq!(blk.poll(), 0);
    assert_eq!(blk.stats().unknown_responses, 3);
    assert_eq!(rig.w().table.grants.len(), grants_before, "no grant ended for a bogus id");
    assert_eq!(blk.in_flight(), 6);
    // The real answers still complete their requests, with the right data.
    answer(&rig, &taken[1], |_| {});
    answer(&rig, &taken[0], |_| {});
    assert_eq!(blk.poll(), 2);
    for (i, id) in ids[..2].iter().enumerate() {
        let c = blk.take_completion_of(*id).unwrap();
        assert_eq!((c.result, c.data), (Ok(()), pattern(i * 8 * 512, 4096)));
    }
    assert_eq!(blk.in_flight(), 4);
}

#[test]
fn a_duplicate_response_is_dropped() {
    let (rig, mut blk) = Rig::connected(&[]);
    let (ids, taken) = reads(&rig, &mut blk, 3);
    answer(&rig, &taken[0], |_| {});
    answer(&rig, &taken[0], |_| {});
    answer(&rig, &taken[1], |_| {});
    assert_eq!(blk.poll(), 2);
    assert_eq!(blk.stats().unknown_responses, 1);
    assert_eq!(blk.take_completion_of(ids[0]).map(|c| c.result), Some(Ok(())));
    assert_eq!(blk.take_completion_of(ids[1]).map(|c| c.result), Some(Ok(())));
    // The third request's pages are still granted: the duplicate did not free them.
    assert_eq!((blk.in_flight(), rig.w().table.grants.len()), (1, 2));
    // The device goes on.
    let mut buf = [0; 512];
    blk.read(64, &mut buf).unwrap();
    assert_eq!(buf[..], pattern(64 * 512, 512)[..]);
}

#[test]
fn a_bad_response_fails_only_its_request() {
    let (rig, mut blk) = Rig::connected(&[]);
    let (ids, taken) = reads(&rig, &mut blk, 5);
    answer(&rig, &taken[0], |r| r.operation = Op::Write as u8);
    answer(&rig, &taken[1], |r| r.status = 7);
    answer(&rig, &taken[2], |r| r.status = Status::EOpNotSupp as i16);
    answer(&rig, &taken[3], |r| r.status = Status::Error as i16);
    answer(&rig, &taken[4], |_| {});
    assert_eq!(blk.poll(), 5);
    let results: Vec<_> =
        ids.iter().map(|&id| blk.take_completion_of(id).unwrap().result).collect();
    assert_eq!(
        results,
        [
            Err(BlkError::BadResponse),
            Err(BlkError::BadResponse),
            Err(BlkError::NotSupported),
            Err(BlkError::Io),
            Ok(())
        ]
    );
    assert_eq!(blk.stats().bad_responses, 2);
    // Every page came back: only the ring is granted.
    assert_eq!(rig.w().table.grants.len(), 1);
    // A lying backend through the blocking interface.
    rig.w().tamper = Some(Box::new(|_, r| r.status = Status::Error as i16));
    assert_eq!(blk.write(0, &[5; 4096]), Err(BlkError::Io));
    rig.w().tamper = None;
    blk.write(0, &[5; 4096]).unwrap();
}

#[test]
fn a_runaway_rsp_prod_breaks_the_device() {
    let (rig, mut blk) = Rig::connected(&[]);
    let (ids, _taken) = reads(&rig, &mut blk, 3);
    rig.w().set_rsp_prod(100);
    assert_eq!(blk.poll(), 3);
    for id in ids {
        assert_eq!(
            blk.take_completion_of(id).map(|c| c.result),
            Some(Err(BlkError::Device(DeviceError::Broken)))
        );
    }
    assert_eq!(rig.w().table.grants.len(), 1, "the failed requests' grants ended");
    assert_eq!(blk.submit(Request::Flush), Err(BlkError::Device(DeviceError::Broken)));
    let mut buf = [0; 512];
    assert_eq!(blk.read(0, &mut buf), Err(BlkError::Device(DeviceError::Broken)));
    assert_eq!(blk.poll(), 0);
}

#[test]
fn a_grant_the_backend_keeps_quarantines_its_page() {
    let (rig, mut blk) = Rig::connected(&[]);
    let (ids, taken) = reads(&rig, &mut blk, 1);
    let gref = taken[0].req.seg[0].gref.0;
    rig.w().table.held.insert(gref);
    answer(&rig, &taken[0], |_| {});
    assert_eq!(blk.poll(), 1);
    // The backend could still be writing the page: the read fails rather than return it.
    let c = blk.take_completion_of(ids[0]).unwrap();
    assert_eq!(c.result, Err(BlkError::BadResponse));
    assert!(c.data.iter().all(|&b| b == 0), "nothing copied out of a page the backend holds");
    assert_eq!((blk.quarantined(), blk.stats().quarantined), (1, 1));
    // Heavy traffic never reuses the page: the fake table refuses to grant a page twice.
    let mut buf = vec![0; 64 * 1024];
    for s in 0..8 {
        blk.read(s * 128, &mut buf).unwrap();
    }
    assert!(rig.w().table.grants.contains_key(&gref));
    // Once the backend lets go, the page comes back into use.
    rig.w().table.held.clear();
    blk.poll();
    assert_eq!(blk.quarantined(), 0);
    assert!(!rig.w().table.grants.contains_key(&gref));
}

#[test]
fn a_backend_that_keeps_every_grant_breaks_the_device_at_the_cap() {
    let (rig, mut blk) = Rig::connected(&[]);
    let mut answered = 0;
    while blk.stopped().is_none() {
        assert!(answered <= MAX_QUARANTINED, "still taking requests after {answered} held pages");
        let (_, taken) = reads(&rig, &mut blk, 1);
        let all: Vec<u32> = rig.w().table.grants.keys().copied().collect();
        rig.w().table.held.extend(all);
        answer(&rig, &taken[0], |_| {});
        blk.poll();
        answered += 1;
    }
    // One page past the cap, and no more: the device takes nothing new.
    assert_eq!(blk.stopped(), Some(BlkError::Device(DeviceError::Broken)));
    assert_eq!((answered, blk.quarantined()), (MAX_QUARANTINED + 1, MAX_QUARANTINED + 1));
    let grants = rig.w().table.grants.len();
    let mut buf = vec![0; 4096];
    assert_eq!(blk.read(0, &mut buf), Err(BlkError::Device(DeviceError::Broken)));
    assert_eq!(
        blk.submit(Request::Read { sector: 0, len: 4096 }),
        Err(BlkError::Device(DeviceError::Broken))
    );
    assert_eq!(rig.w().table.grants.len(), grants, "nothing more granted to that backend");
}
