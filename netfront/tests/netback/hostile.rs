//! A backend that lies: bogus and duplicate ids, data beyond the page, statuses and
//! extra-info types that do not exist, endless chains, runaway indices, grants it will
//! not let go of. The driver must drop what it must, keep serving the rest, never panic,
//! and never touch a page through the backend's word alone.

use netfront::abi::{
    Extra, NetifExtraInfo, NetifRxRequest, NetifTxResponse, RxFlags, RSP_DROPPED, RSP_ERROR,
    RSP_NULL, RSP_OKAY,
};
use netfront::DeviceError;
use netfront::{NetError, MAX_QUARANTINED, TX_KEPT_PAGES};

use crate::fake::{frame, Driver, Rig, RxFrame, RING_SIZE};
use crate::rx::rsp;

/// Takes the next receive buffer and fills it with `data`, as the backend would before
/// answering.
fn fill(rig: &Rig, data: &[u8]) -> NetifRxRequest {
    let mut w = rig.w();
    let req = w.take_rx().unwrap();
    w.write_rx(req.gref, 0, data);
    req
}

fn answer(rig: &Rig, id: u16, offset: u16, flags: RxFlags, status: i16) {
    let mut w = rig.w();
    w.respond_rx(rsp(id, offset, flags, status));
    w.publish_rx();
}

/// After the test's lies, an honest frame still arrives and every buffer is posted again.
fn still_works(rig: &Rig, net: &mut Driver) {
    rig.w().deliver(RxFrame { chunk: 1000, ..RxFrame::new(frame(3000, 0x5a)) });
    net.poll();
    assert_eq!(net.recv(), Some(frame(3000, 0x5a)));
    assert_eq!(net.rx_posted(), RING_SIZE);
    assert_eq!(rig.w().table.grants.len() - net.quarantined(), 2 + RING_SIZE);
}

#[test]
fn rx_responses_with_the_wrong_id_drop_their_frame() {
    let (rig, mut net) = Rig::connected(&[]);
    for bogus in [1000u16, 5, u16::MAX] {
        let req = fill(&rig, &frame(60, 1));
        assert_ne!(req.id, bogus);
        answer(&rig, bogus, 0, RxFlags::empty(), 60);
    }
    // The buffer a bad response stood for is not reused for the next one's data either.
    assert_eq!(net.poll(), 0);
    let s = net.stats();
    assert_eq!((s.rx_bad_responses, s.rx_dropped, s.rx_packets), (3, 3, 0));
    still_works(&rig, &mut net);
}

#[test]
fn a_duplicate_rx_id_is_bad() {
    let (rig, mut net) = Rig::connected(&[]);
    let a = fill(&rig, &frame(60, 1));
    let _b = fill(&rig, &frame(60, 2));
    answer(&rig, a.id, 0, RxFlags::empty(), 60);
    answer(&rig, a.id, 0, RxFlags::empty(), 60);
    assert_eq!(net.poll(), 1);
    assert_eq!(net.recv(), Some(frame(60, 1)));
    assert_eq!(net.stats().rx_bad_responses, 1);
    still_works(&rig, &mut net);
}

#[test]
fn rx_data_beyond_the_page_or_with_a_bad_status_is_dropped() {
    let (rig, mut net) = Rig::connected(&[]);
    for (offset, status) in
        [(4000, 97), (4095, 2), (0, 4097), (u16::MAX, 1), (0, -7), (0, i16::MIN)]
    {
        let req = fill(&rig, &frame(60, 1));
        answer(&rig, req.id, offset, RxFlags::empty(), status);
    }
    // The limits themselves are fine.
    let req = fill(&rig, &frame(4096, 2));
    answer(&rig, req.id, 0, RxFlags::empty(), 4096);
    assert_eq!(net.poll(), 1);
    assert_eq!(net.recv(), Some(frame(4096, 2)));
    let s = net.stats();
    assert_eq!((s.rx_bad_responses, s.rx_dropped, s.rx_errors), (6, 6, 0));
    still_works(&rig, &mut net);
}

#[test]
fn errors_the_backend_reports_drop_the_frame() {
    let (rig, mut net) = Rig::connected(&[]);
    for status in [RSP_ERROR, RSP_DROPPED] {
        let req = fill(&rig, &[]);
        answer(&rig, req.id, 0, RxFlags::empty(), status);
    }
    // An error in the middle of a frame drops all of it.
    let f = frame(3000, 3);
    let a = fill(&rig, &f[..1000]);
    answer(&rig, a.id, 0, RxFlags::MORE_DATA, 1000);
    let b = fill(&rig, &[]);
    answer(&rig, b.id, 0, RxFlags::MORE_DATA, RSP_ERROR);
    let c = fill(&rig, &f[1000..]);
    answer(&rig, c.id, 0, RxFlags::empty(), 2000);
    assert_eq!(net.poll(), 0);
    let s = net.stats();
    assert_eq!((s.rx_errors, s.rx_dropped, s.rx_bad_responses), (3, 3, 0));
    still_works(&rig, &mut net);
}

#[test]
fn unknown_extra_info_drops_the_frame() {
    let (rig, mut net) = Rig::connected(&[]);
    let bad = NetifExtraInfo { ty: 0, flags: 0, u: [0; 3] };
    let worse = NetifExtraInfo { ty: 9, flags: 0, u: [0; 3] };
    for x in [bad, worse] {
        rig.w().deliver(RxFrame { extras: vec![x], ..RxFrame::new(frame(60, 1)) });
    }
    assert_eq!(net.poll(), 0);
    let s = net.stats();
    assert_eq!((s.rx_bad_responses, s.rx_dropped, s.rx_extra_info), (2, 2, 2));
    still_works(&rig, &mut net);
}

#[test]
fn an_endless_extra_info_chain_is_bounded() {
    let (rig, mut net) = Rig::connected(&[]);
    let more = NetifExtraInfo::new(Extra::Hash { ty: 1, algorithm: 1, value: [0; 4] }, true);
    let last = NetifExtraInfo::new(Extra::Hash { ty: 1, algorithm: 1, value: [0; 4] }, false);
    let mut extras = vec![more; 100];
    extras.push(last);
    rig.w().deliver(RxFrame { extras, ..RxFrame::new(frame(60, 1)) });
    // A poll takes at most a ring's worth of slots, whatever the backend publishes.
    net.poll();
    assert_eq!(net.recv(), None);
    let s = net.stats();
    assert_eq!((s.rx_extra_info, s.rx_dropped, s.rx_bad_responses), (101, 1, 97));
    still_works(&rig, &mut net);
}

#[test]
fn a_frame_that_never_ends_is_taken_poll_by_poll() {
    let (rig, mut net) = Rig::connected(&[]);
    for round in 0..3 {
        for _ in 0..RING_SIZE {
            let req = fill(&rig, &frame(60, 1));
            answer(&rig, req.id, 0, RxFlags::MORE_DATA, 60);
        }
        assert_eq!(net.poll(), 0, "round {round}");
        assert_eq!(net.rx_posted(), RING_SIZE);
    }
    // It ends at last: dropped as too long.
    let req = fill(&rig, &frame(60, 1));
    answer(&rig, req.id, 0, RxFlags::empty(), 60);
    assert_eq!(net.poll(), 0);
    assert_eq!(net.stats().rx_dropped, 1);
    still_works(&rig, &mut net);
}

#[test]
fn a_runaway_rx_rsp_prod_breaks_the_device() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().deliver(RxFrame::new(frame(60, 1)));
    rig.w().set_rx_rsp_prod(RING_SIZE as u32 + 2);
    assert_eq!(net.poll(), 0);
    assert!(net.is_broken());
    // Every buffer's grant ended; only the rings stay granted.
    assert_eq!(rig.w().table.grants.len(), 2);
    assert_eq!(net.rx_posted(), 0);
    assert_eq!(net.send(&frame(60, 1)), Err(NetError::Device(DeviceError::Broken)));
    assert_eq!(net.recv(), None);
}

#[test]
fn a_runaway_tx_rsp_prod_breaks_the_device() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().hold_tx = true;
    net.send(&frame(9000, 1)).unwrap();
    rig.w().set_tx_rsp_prod(4);
    assert_eq!(net.poll(), 0);
    assert!(net.is_broken());
    assert_eq!(net.tx_in_flight(), 0);
    assert_eq!(rig.w().table.grants.len(), 2);
    assert_eq!(net.send(&frame(60, 1)), Err(NetError::Device(DeviceError::Broken)));
    // Frames received before the break can still be taken.
}

#[test]
fn frames_received_before_a_break_can_still_be_taken() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().deliver(RxFrame::new(frame(60, 1)));
    assert_eq!(net.poll(), 1);
    rig.w().hold_tx = true;
    net.send(&frame(60, 2)).unwrap();
    rig.w().set_tx_rsp_prod(9);
    net.poll();
    assert!(net.is_broken());
    assert_eq!(net.recv(), Some(frame(60, 1)));
}

#[test]
fn tx_responses_naming_nothing_in_flight_touch_nothing() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().hold_tx = true;
    // Enough requests in flight that the ring takes every bogus response below (it never
    // takes more responses than requests).
    for i in 0..8 {
        net.send(&frame(60, i)).unwrap();
    }
    let reqs = rig.w().take_tx();
    let grants = rig.w().table.grants.len();
    {
        let mut w = rig.w();
        // A free slot; a busy slot's index with another generation, twice; then the real
        // answer twice.
        let (a, b) = (reqs[0].id, reqs[1].id);
        for id in [200, a + 256, b.wrapping_add(0xff00), a, a] {
            w.respond_tx(NetifTxResponse { id, status: RSP_OKAY });
        }
        w.publish_tx();
    }
    net.poll();
    let s = net.stats();
    assert_eq!((s.tx_bad_responses, s.tx_packets), (4, 1));
    assert_eq!(net.tx_in_flight(), 7);
    assert_eq!(rig.w().table.grants.len(), grants, "no grant ended: the page is kept granted");
    // A slot reused after its answer gets a new id: the stale one does not complete it.
    net.send(&frame(60, 9)).unwrap();
    let again = rig.w().take_tx();
    assert_eq!(again[0].id & 0xff, reqs[0].id & 0xff);
    assert_ne!(again[0].id, reqs[0].id);
    {
        let mut w = rig.w();
        w.respond_tx(NetifTxResponse { id: reqs[0].id, status: RSP_OKAY });
        w.respond_tx(NetifTxResponse { id: reqs[1].id, status: RSP_NULL });
        w.respond_tx(NetifTxResponse { id: again[0].id, status: 5 });
        w.publish_tx();
    }
    net.poll();
    let s = net.stats();
    // The stale id and an unknown status (its slot is freed all the same); a NULL response
    // answers an extra-info slot, whatever id it carries: it frees nothing.
    assert_eq!((s.tx_bad_responses, s.tx_packets, s.tx_errors), (6, 1, 0));
    assert_eq!(net.tx_in_flight(), 7);
    assert!(!net.is_broken());
}

#[test]
fn an_rx_buffer_the_backend_keeps_is_quarantined() {
    let (rig, mut net) = Rig::connected(&[]);
    let req = fill(&rig, &frame(60, 1));
    rig.w().table.held.insert(req.gref.0);
    answer(&rig, req.id, 0, RxFlags::empty(), 60);
    // The backend could still be writing the page: the frame is dropped, not read.
    assert_eq!(net.poll(), 0);
    assert_eq!((net.quarantined(), net.stats().quarantined, net.stats().rx_dropped), (1, 1, 1));
    // Traffic never reuses the page: the fake table refuses to grant a page twice.
    for i in 0..600 {
        rig.w().deliver(RxFrame::new(frame(60, i as u8)));
        net.poll();
        assert!(net.recv().is_some());
    }
    assert!(rig.w().table.grants.contains_key(&req.gref.0));
    // Once the backend lets go, the page comes back into use.
    rig.w().table.held.clear();
    net.poll();
    assert_eq!(net.quarantined(), 0);
    assert!(!rig.w().table.grants.contains_key(&req.gref.0));
    still_works(&rig, &mut net);
}

#[test]
fn a_tx_page_past_the_kept_ones_that_the_backend_keeps_is_quarantined() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().hold_tx = true;
    for i in 0..=TX_KEPT_PAGES {
        net.send(&frame(60, i as u8)).unwrap();
    }
    let reqs = rig.w().take_tx();
    // The backend keeps every page mapped; only the one past the kept pages had its grant
    // to end.
    let req = reqs[TX_KEPT_PAGES];
    {
        let mut w = rig.w();
        w.table.held.extend(reqs.iter().map(|r| r.gref.0));
        for r in &reqs {
            w.respond_tx(NetifTxResponse { id: r.id, status: RSP_OKAY });
        }
        w.publish_tx();
    }
    net.poll();
    assert_eq!((net.quarantined(), net.tx_in_flight()), (1, 0));
    rig.w().hold_tx = false;
    for i in 0..10 {
        net.send(&frame(60, i)).unwrap();
        rig.w().serve();
        net.poll();
    }
    assert!(rig.w().table.grants.contains_key(&req.gref.0), "never regranted");
    rig.w().table.held.clear();
    net.poll();
    assert_eq!(net.quarantined(), 0);
}

#[test]
fn a_backend_that_keeps_every_rx_buffer_breaks_the_device_at_the_cap() {
    let (rig, mut net) = Rig::connected(&[]);
    let mut answered = 0;
    while !net.is_broken() {
        assert!(answered <= MAX_QUARANTINED, "still receiving after {answered} held pages");
        let req = fill(&rig, &frame(60, answered as u8));
        rig.w().table.held.insert(req.gref.0);
        answer(&rig, req.id, 0, RxFlags::empty(), 60);
        net.poll();
        answered += 1;
    }
    assert_eq!((answered, net.quarantined()), (MAX_QUARANTINED + 1, MAX_QUARANTINED + 1));
    let grants = rig.w().table.grants.len();
    assert_eq!(net.send(&frame(60, 1)), Err(NetError::Device(DeviceError::Broken)));
    net.poll();
    assert_eq!(rig.w().table.grants.len(), grants, "nothing more granted to that backend");
}
