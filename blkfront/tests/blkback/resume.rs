//! After a restore or migration into a new domain: the old backend, its mappings and the
//! event channel are gone and a fresh backend waits. The driver reconnects, issues again
//! what had not completed, and fails, with the error a new request would get, what the new
//! backend can no longer take.

use blkfront::{BlkError, BlockDevice, DeviceError, Request, RequestId};

use crate::fake::{pattern, Driver, Rig, PORT};

const SECOND: u64 = 1_000_000_000;

/// Completes everything outstanding against the backend, as the blocking calls would.
fn settle(rig: &Rig, blk: &mut Driver) {
    for _ in 0..1000 {
        if blk.outstanding() == 0 {
            return;
        }
        rig.w().serve();
        blk.poll();
    }
    panic!("{} request(s) never completed", blk.outstanding());
}

fn reconnect(rig: &mut Rig, blk: &mut Driver) -> Result<(), BlkError> {
    let env = rig.env();
    blk.reconnect(&mut rig.xs, env, SECOND)
}

/// Writes of `len` bytes at sectors 0, 1000, 2000..., submitted while the backend holds
/// them on the ring: in flight when the domain goes.
fn writes_in_flight(rig: &Rig, blk: &mut Driver, n: u64, len: usize) -> Vec<(RequestId, Vec<u8>)> {
    rig.w().hold = true;
    let out: Vec<_> = (0..n)
        .map(|i| {
            let data = vec![0x40 + i as u8; len];
            (blk.submit(Request::Write { sector: i * 1000, data: data.clone() }).unwrap(), data)
        })
        .collect();
    blk.poll();
    assert!(blk.in_flight() > 0);
    out
}

#[test]
fn writes_in_flight_are_issued_again_on_the_new_ring() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    // Some of several ring requests each, one part of one already taken by the old backend.
    let writes = writes_in_flight(&rig, &mut blk, 3, 100 * 1024);
    rig.w().take_requests();
    rig.new_domain(&[]);
    reconnect(&mut rig, &mut blk).unwrap();
    assert_ne!(blk.port(), PORT, "a new event channel");
    assert!(rig.w().ports.gone.contains(&PORT));
    rig.w().hold = false;
    settle(&rig, &mut blk);
    for (id, data) in &writes {
        let c = blk.take_completion_of(*id).expect("completed");
        assert_eq!(c.result, Ok(()));
        assert_eq!(&c.data, data, "the buffer comes back");
    }
    {
        let w = rig.w();
        for (i, (_, data)) in writes.iter().enumerate() {
            let at = i * 1000 * 512;
            assert!(w.disk[at..at + data.len()] == data[..], "write {i} reached the disk");
        }
        assert_eq!(w.table.rings_freed, 1, "the old ring went back to the guest");
        assert!(w.table.held.is_empty());
    }
    // And the device goes on as before.
    let mut back = vec![0; 4096];
    blk.read(3007, &mut back).unwrap();
    assert!(back == pattern(3007 * 512, 4096));
    let (closed, _) = blk.close(&mut rig.xs, SECOND);
    closed.unwrap();
    assert_eq!(rig.w().pages_out(), 0, "nothing of either connection pinned");
}

#[test]
fn reads_in_flight_come_back_with_the_data() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    rig.w().hold = true;
    let ids: Vec<_> = (0..4u64)
        .map(|i| blk.submit(Request::Read { sector: i * 64, len: 60 * 1024 }).unwrap())
        .collect();
    blk.poll();
    rig.new_domain(&[]);
    reconnect(&mut rig, &mut blk).unwrap();
    rig.w().hold = false;
    settle(&rig, &mut blk);
    for (i, id) in ids.into_iter().enumerate() {
        let c = blk.take_completion_of(id).unwrap();
        assert_eq!(c.result, Ok(()));
        assert!(c.data == pattern(i * 64 * 512, 60 * 1024), "read {i}");
    }
}

#[test]
fn the_new_backends_features_are_the_ones_used() {
    let old = [("feature-persistent", "1"), ("feature-max-indirect-segments", "256")];
    let mut rig = Rig::new(&old);
    rig.w().table.max_ring_pages = 4;
    let mut blk = rig.connect().unwrap();
    assert!(blk.info().features.persistent);
    assert_eq!(blk.max_segments(), 256);
    let writes = writes_in_flight(&rig, &mut blk, 2, 512 * 1024);
    // The new one: no persistent grants, no indirect requests, a one-page ring, no flush.
    let new = [("max-ring-page-order", "-"), ("feature-flush-cache", "-")];
    rig.new_domain(&new);
    rig.w().offer_ring_order = None;
    reconnect(&mut rig, &mut blk).unwrap();
    assert!(!blk.info().features.persistent);
    assert_eq!(blk.max_segments(), blkfront::abi::MAX_SEGMENTS_PER_REQUEST);
    rig.w().hold = false;
    settle(&rig, &mut blk);
    for (id, _) in &writes {
        assert_eq!(blk.take_completion_of(*id).unwrap().result, Ok(()));
    }
    let w = rig.w();
    let mut replayed = w.requests.iter().rev().take(10);
    assert!(replayed.clone().all(|r| r.operation == blkfront::abi::Op::Write as u8));
    assert!(replayed.all(|r| r.nr_segments <= 11), "direct requests only");
    assert!(w.table.held.is_empty(), "no persistent grants with the new backend");
    assert_eq!(*w.table.ring_requests.last().unwrap(), 1, "a one-page ring");
    drop(w);
    // A flush now has nothing to flush; it completes without reaching the ring.
    let flushes = rig.w().flushes;
    blk.flush().unwrap();
    assert_eq!(rig.w().flushes, flushes);
}

#[test]
fn what_the_new_disk_cannot_take_fails_with_a_clear_error() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    rig.w().hold = true;
    let beyond = blk.submit(Request::Write { sector: 3000, data: vec![1; 4096] }).unwrap();
    let inside = blk.submit(Request::Read { sector: 8, len: 4096 }).unwrap();
    let discard = blk.submit(Request::Discard { sector: 16, sectors: 8 }).unwrap();
    blk.poll();
    // Half the size, and no discard.
    rig.new_domain(&[("sectors", "2048"), ("feature-discard", "-")]);
    reconnect(&mut rig, &mut blk).unwrap();
    assert_eq!(blk.take_completion_of(beyond).unwrap().result, Err(BlkError::OutOfRange));
    assert_eq!(blk.take_completion_of(discard).unwrap().result, Err(BlkError::NotSupported));
    rig.w().hold = false;
    settle(&rig, &mut blk);
    assert_eq!(blk.take_completion_of(inside).unwrap().result, Ok(()));
    assert_eq!(rig.w().disk[3000 * 512], pattern(3000 * 512, 1)[0], "nothing written beyond");
}

#[test]
fn writes_to_a_disk_now_read_only_fail() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    let writes = writes_in_flight(&rig, &mut blk, 2, 4096);
    rig.new_domain(&[("mode", "r"), ("info", "4")]);
    reconnect(&mut rig, &mut blk).unwrap();
    assert!(blk.info().read_only());
    for (id, _) in writes {
        assert_eq!(blk.take_completion_of(id).unwrap().result, Err(BlkError::ReadOnly));
    }
    assert_eq!(blk.outstanding(), 0);
}

#[test]
fn failed_and_abandoned_requests_are_not_issued_again() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    let writes = writes_in_flight(&rig, &mut blk, 3, 4096);
    blk.abandon(writes[1].0);
    let before = rig.w().requests.len();
    rig.new_domain(&[]);
    reconnect(&mut rig, &mut blk).unwrap();
    rig.w().hold = false;
    settle(&rig, &mut blk);
    assert_eq!(rig.w().requests.len() - before, 2, "the abandoned write stays behind");
    assert!(blk.take_completion_of(writes[1].0).is_none());
    assert_eq!(blk.take_completion_of(writes[0].0).unwrap().result, Ok(()));
    assert_eq!(blk.take_completion_of(writes[2].0).unwrap().result, Ok(()));
}

#[test]
fn a_reconnect_that_fails_fails_every_request_and_the_device() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    let writes = writes_in_flight(&rig, &mut blk, 2, 4096);
    // The new backend never connects: its disk has no size.
    rig.new_domain(&[("sectors", "-")]);
    let e = reconnect(&mut rig, &mut blk).unwrap_err();
    assert!(matches!(e, BlkError::Device(DeviceError::BadBackendValue { .. })), "{e:?}");
    for (id, _) in writes {
        assert_eq!(blk.take_completion_of(id).unwrap().result, Err(e));
    }
    assert_eq!(blk.stopped(), Some(e));
    assert_eq!(blk.read(0, &mut [0; 512]), Err(e));
    // Closing still hands everything back.
    let (_, left) = blk.close(&mut rig.xs, SECOND);
    assert!(left.is_empty());
    assert_eq!(rig.w().pages_out(), 0);
}

#[test]
fn a_device_stopped_before_the_suspend_works_again() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    rig.w().ports.backend_closing = true;
    blk.poll();
    assert!(blk.stopped().is_some());
    rig.new_domain(&[]);
    reconnect(&mut rig, &mut blk).unwrap();
    assert_eq!(blk.stopped(), None);
    blk.write(0, &[5; 512]).unwrap();
    assert_eq!(rig.w().disk[..512], [5; 512]);
}
