//! Sending to an honest backend: one and several pages per frame, lengths refused, a full
//! ring, errors the backend reports, memory running out.

use netfront::abi::{TxFlags, RSP_DROPPED, RSP_ERROR};
use netfront::DeviceError;
use netfront::{NetError, TX_KEPT_PAGES};

use crate::fake::{frame, Rig, PORT, RING_SIZE};

#[test]
fn a_single_page_frame_goes_out() {
    let (rig, mut net) = Rig::connected(&[]);
    for len in [14, 60, 1514, 4096] {
        net.send(&frame(len, 1)).unwrap();
        assert_eq!(net.tx_in_flight(), 1);
        let r = rig.w().tx_requests.len();
        rig.w().serve();
        let w = rig.w();
        let req = w.tx_requests[r];
        assert_eq!((req.offset, req.flags, req.size as usize), (0, 0, len));
        drop(w);
        assert_eq!(rig.w().sent.pop_front(), Some(frame(len, 1)));
        net.poll();
        assert_eq!(net.tx_in_flight(), 0);
    }
    let s = net.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (4, 14 + 60 + 1514 + 4096));
    let w = rig.w();
    assert_eq!(w.exposed, 0, "nothing but the frame in a granted page");
    // The rings, the receive buffers and one transmit page, granted once for every frame.
    assert_eq!(w.table.grants.len(), 2 + RING_SIZE + 1);
    assert_eq!(w.pages_out(), 2 + RING_SIZE + 1);
    assert!(w.tx_requests.iter().all(|r| r.gref == w.tx_requests[0].gref));
    // The backend asked to be told of each request, and was.
    assert_eq!(w.ports.notifies[&PORT], 4);
}

#[test]
fn transmit_pages_stay_granted_up_to_the_limit_and_no_longer_than_the_device() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().hold_tx = true;
    // Three pages each, more of them in flight than are kept granted.
    let frames = TX_KEPT_PAGES / 3 + 10;
    for i in 0..frames {
        net.send(&frame(9000, i as u8)).unwrap();
    }
    rig.w().hold_tx = false;
    rig.w().serve();
    net.poll();
    assert_eq!(net.tx_in_flight(), 0);
    assert_eq!(rig.w().table.grants.len(), 2 + RING_SIZE + TX_KEPT_PAGES);
    assert_eq!(rig.w().exposed, 0);
    // The next frames reuse the kept pages: no grant is made for them.
    let grants_made = rig.w().table.grants_made();
    for i in 0..10 {
        net.send(&frame(9000, i)).unwrap();
        rig.w().serve();
        assert_eq!(rig.w().sent.pop_back(), Some(frame(9000, i)));
        net.poll();
    }
    assert_eq!(rig.w().table.grants_made(), grants_made);
    assert_eq!(rig.w().exposed, 0, "a kept page shows only frames the backend had");
    // A device that stops ends them.
    rig.w().set_tx_rsp_prod(9999);
    net.poll();
    assert!(net.is_broken());
    assert_eq!(rig.w().table.grants.len(), 2, "only the rings stay granted");
}

#[test]
fn a_frame_over_several_pages_goes_out_in_slots() {
    let (rig, mut net) = Rig::connected(&[]);
    for len in [4097, 9000, 65535] {
        let r = rig.w().tx_requests.len();
        net.send(&frame(len, 2)).unwrap();
        rig.w().serve();
        let w = rig.w();
        let reqs = &w.tx_requests[r..];
        assert_eq!(reqs.len(), len.div_ceil(4096));
        // The first slot announces the whole frame, the others their own share.
        assert_eq!(reqs[0].size as usize, len);
        for (i, req) in reqs.iter().enumerate() {
            let more = TxFlags::from_bits_retain(req.flags).contains(TxFlags::MORE_DATA);
            assert_eq!(more, i + 1 < reqs.len());
            if i > 0 {
                assert_eq!(req.size as usize, (len - 4096 * i).min(4096));
            }
        }
        drop(w);
        assert_eq!(rig.w().sent.pop_front(), Some(frame(len, 2)), "{len}");
        net.poll();
    }
    assert_eq!(net.stats().tx_packets, 3);
    assert_eq!(net.tx_in_flight(), 0);
    assert_eq!(rig.w().exposed, 0);
}

#[test]
fn lengths_that_cannot_be_sent_are_refused() {
    let (rig, mut net) = Rig::connected(&[]);
    assert_eq!(net.send(&[0; 13]), Err(NetError::BadLength));
    assert_eq!(net.send(&vec![0; 65536]), Err(NetError::BadLength));
    assert_eq!(net.tx_in_flight(), 0);
    // Without feature-sg, only what fits a page.
    let (rig2, mut net2) = Rig::connected(&[("feature-sg", "0")]);
    assert_eq!(net2.send(&frame(4097, 0)), Err(NetError::BadLength));
    net2.send(&frame(4096, 0)).unwrap();
    rig2.w().serve();
    assert_eq!(rig2.w().sent.len(), 1);
    assert!(rig.w().tx_requests.is_empty());
}

#[test]
fn a_full_ring_is_busy_until_the_backend_answers() {
    let (rig, mut net) = Rig::connected(&[]);
    rig.w().hold_tx = true;
    for i in 0..RING_SIZE {
        net.send(&frame(60, i as u8)).unwrap();
    }
    assert_eq!(net.send(&frame(60, 0)), Err(NetError::Busy));
    assert_eq!(net.stats().tx_busy, 1);
    // Answers arrive: `send` takes them in itself.
    rig.w().hold_tx = false;
    rig.w().serve();
    net.send(&frame(60, 0)).unwrap();
    // A three-page frame needs three slots at once: nothing goes out in part.
    rig.w().hold_tx = true;
    for i in 0..RING_SIZE - 3 {
        net.send(&frame(60, i as u8)).unwrap();
    }
    assert_eq!(net.tx_in_flight(), RING_SIZE - 2);
    assert_eq!(net.send(&frame(9000, 7)), Err(NetError::Busy));
    assert_eq!(net.tx_in_flight(), RING_SIZE - 2);
    net.send(&frame(8192, 7)).unwrap();
    rig.w().hold_tx = false;
    rig.w().serve();
    net.poll();
    assert_eq!(net.tx_in_flight(), 0);
    let w = rig.w();
    assert_eq!(w.sent.len(), 2 * RING_SIZE - 1);
    assert_eq!(w.sent.back(), Some(&frame(8192, 7)));
}

#[test]
fn errors_the_backend_reports_are_counted() {
    let (rig, mut net) = Rig::connected(&[]);
    for status in [RSP_ERROR, RSP_DROPPED] {
        rig.w().tx_status = status;
        net.send(&frame(5000, 1)).unwrap();
        rig.w().serve();
        net.poll();
    }
    let s = net.stats();
    // Counted once per frame, not per slot.
    assert_eq!((s.tx_errors, s.tx_packets, s.tx_bad_responses), (2, 0, 0));
    assert_eq!(net.tx_in_flight(), 0);
    assert_eq!(rig.w().table.grants.len(), 2 + RING_SIZE + 2, "their two pages came back");
    assert_eq!(rig.w().pages_out(), 2 + RING_SIZE + 2);
}

#[test]
fn running_out_of_pages_sends_nothing() {
    let (rig, mut net) = Rig::connected(&[]);
    let out = rig.w().pages_out();
    rig.w().table.page_limit = out + 1;
    assert_eq!(net.send(&frame(9000, 1)), Err(NetError::Device(DeviceError::NoMemory)));
    assert_eq!(net.tx_in_flight(), 0);
    assert!(rig.w().tx_requests.is_empty() && rig.w().take_tx().is_empty());
    // The page it got is kept for the next frame.
    net.send(&frame(1000, 1)).unwrap();
    rig.w().serve();
    assert_eq!(rig.w().sent.pop_front(), Some(frame(1000, 1)));
}
