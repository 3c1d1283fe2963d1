//! Multi-page rings: `ring-page-order` and `ring-ref0..N` when the backend offers
//! `max-ring-page-order` and the guest can provide the pages; one page otherwise.

use blkfront::{BlockDevice, Request, RING_PAGE_ORDER};

use crate::fake::{frontend_path, pattern, Rig, RING_SIZE};

const SECOND: u64 = 1_000_000_000;

/// A rig whose guest grants rings of up to `limit` order, backend offering `offer`.
fn rig_with(limit: u32, offer: Option<u32>) -> Rig {
    let rig = Rig::new(&[]);
    rig.w().table.max_ring_pages = 1 << limit;
    rig.w().offer_ring_order = offer;
    rig
}

fn key(rig: &Rig, k: &str) -> Option<String> {
    rig.store_get(&format!("{}/{k}", frontend_path()))
}

#[test]
fn a_four_page_ring_is_negotiated_and_filled() {
    let mut rig = rig_with(4, Some(4));
    let mut blk = rig.connect().unwrap();
    assert_eq!(RING_PAGE_ORDER, 2);
    assert_eq!(rig.w().table.ring_requests, [4]);
    assert_eq!(key(&rig, "ring-page-order").as_deref(), Some("2"));
    assert_eq!(key(&rig, "ring-ref"), None);
    let refs: Vec<u32> =
        (0..4).map(|i| key(&rig, &format!("ring-ref{i}")).unwrap().parse().unwrap()).collect();
    assert_eq!(key(&rig, "ring-ref4"), None);
    {
        let w = rig.w();
        assert_eq!(w.table.grants.keys().copied().collect::<Vec<_>>(), refs);
        assert!(w.table.grants.values().all(|g| !g.readonly));
    }
    {
        // ring-page-order, 4 refs, event-channel, protocol and feature-persistent in one
        // transaction.
        let s = rig.store.lock().unwrap();
        let tx: Vec<_> = s
            .requests
            .iter()
            .filter(|h| h.ty == xenbus::XsType::Write as u32 && h.tx_id != 0)
            .map(|h| h.tx_id)
            .collect();
        assert_eq!(tx.len(), 8);
        assert!(tx.iter().all(|&t| t == tx[0]));
    }
    // 128 requests in flight at once, the rest queued.
    rig.w().hold = true;
    let ids: Vec<_> = (0..200u64)
        .map(|i| blk.submit(Request::Read { sector: i * 8, len: 4096 }).unwrap())
        .collect();
    assert_eq!(blk.in_flight(), 4 * RING_SIZE as usize);
    assert_eq!(rig.w().pending_requests(), 4 * RING_SIZE);
    rig.w().hold = false;
    let mut done = 0;
    while done < ids.len() {
        assert!(rig.w().serve() > 0, "stalled after {done}");
        blk.poll();
        while let Some(c) = blk.take_completion() {
            let i = ids.iter().position(|&id| id == c.id).unwrap();
            assert_eq!((c.result, c.data), (Ok(()), pattern(i * 8 * 512, 4096)));
            done += 1;
        }
    }
    // Closing gives every ring page back.
    let (result, failed) = blk.close(&mut rig.xs, SECOND);
    assert_eq!((result, failed.len()), (Ok(()), 0));
    let w = rig.w();
    assert!((w.table.rings_freed > 0) && w.table.grants.is_empty());
    assert_eq!(w.pages_out(), 0);
}

#[test]
fn the_ring_is_no_larger_than_the_backend_offers() {
    let mut rig = rig_with(4, Some(1));
    let mut blk = rig.connect().unwrap();
    assert_eq!(rig.w().table.ring_requests, [2]);
    assert_eq!(key(&rig, "ring-page-order").as_deref(), Some("1"));
    assert!(key(&rig, "ring-ref1").is_some() && key(&rig, "ring-ref2").is_none());
    rig.w().hold = true;
    for i in 0..100 {
        blk.submit(Request::Read { sector: i * 8, len: 512 }).unwrap();
    }
    assert_eq!(blk.in_flight(), 2 * RING_SIZE as usize);
    // No offer at all: one page, the classic `ring-ref`.
    let mut rig = rig_with(4, None);
    let mut blk = rig.connect().unwrap();
    assert_eq!(rig.w().table.ring_requests, [1]);
    assert_eq!(key(&rig, "ring-page-order"), None);
    assert!(key(&rig, "ring-ref").is_some() && key(&rig, "ring-ref0").is_none());
    let mut buf = [0; 512];
    blk.read(3, &mut buf).unwrap();
    assert_eq!(buf[..], pattern(3 * 512, 512)[..]);
}

#[test]
fn a_guest_without_multi_page_rings_falls_back_to_one_page() {
    // alloc_ring refuses the order (NotSupported), or has no room for it (NoMemory).
    for (limit, pages) in [(0, usize::MAX), (4, 2)] {
        let mut rig = rig_with(limit, Some(4));
        rig.w().table.page_limit = pages;
        let mut blk = rig.connect().unwrap();
        rig.w().table.page_limit = usize::MAX;
        assert_eq!(rig.w().table.ring_requests, [4, 1]);
        assert_eq!(key(&rig, "ring-page-order"), None);
        let ring_ref: u32 = key(&rig, "ring-ref").unwrap().parse().unwrap();
        assert_eq!(rig.w().table.grants.keys().copied().collect::<Vec<_>>(), [ring_ref]);
        rig.w().hold = true;
        for i in 0..40 {
            blk.submit(Request::Read { sector: i * 8, len: 512 }).unwrap();
        }
        assert_eq!(blk.in_flight(), RING_SIZE as usize);
    }
}
