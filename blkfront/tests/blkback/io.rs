//! Reads, writes, flushes and discards against an honest backend.

use blkfront::abi::{Op, MAX_SEGMENTS_PER_REQUEST};
use blkfront::DeviceError;
use blkfront::{BlkError, BlockDevice, Completion, Request};

use crate::fake::{pattern, round_trips, Rig, RING_SIZE};

const KIB: usize = 1024;

#[test]
fn reads_see_the_disk() {
    let (rig, mut blk) = Rig::connected(&[]);
    for (sector, len) in [(0, 512), (1, 512), (7, 4096), (100, 45 * KIB), (3000, 300 * KIB)] {
        let mut buf = vec![0; len];
        blk.read(sector, &mut buf).unwrap();
        assert_eq!(buf, pattern(sector as usize * 512, len), "sector {sector} len {len}");
    }
    assert_eq!(rig.w().exposed, 0);
}

#[test]
fn a_read_too_large_for_memory_is_an_error_not_a_panic() {
    // The backend says the disk has 2^52 sectors (2 EiB): a read of most of it passes the
    // range check (2^60 bytes, half the disk), and no buffer that size can be had.
    let (rig, mut blk) = Rig::connected(&[("sectors", "4503599627370496")]);
    let len = 1usize << 60;
    assert_eq!(
        blk.submit(Request::Read { sector: 0, len }).err(),
        Some(BlkError::Device(DeviceError::NoMemory))
    );
    let mut buf = vec![0; 4096];
    blk.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(0, 4096), "the driver goes on after the refusal");
    assert_eq!(rig.w().exposed, 0);
}

#[test]
fn round_trips_at_many_offsets_and_lengths() {
    let (rig, mut blk) = Rig::connected(&[]);
    let part = MAX_SEGMENTS_PER_REQUEST * 4096;
    let lengths = [
        512,
        1024,
        4096 - 512,
        4096,
        4096 + 512,
        3 * 4096 + 1536,
        part - 512,
        part,
        part + 512,
        2 * part,
        100 * KIB,
        300 * KIB,
        600 * KIB,
    ];
    round_trips(&rig, &mut blk, &lengths, &[0, 1, 7, 8, 9, 87, 88, 89, 1001], 13);
    let w = rig.w();
    // Big transfers were split into ring requests of at most 11 segments.
    assert!(w.requests.iter().all(|r| r.nr_segments as usize <= MAX_SEGMENTS_PER_REQUEST));
    assert!(w.requests.iter().any(|r| r.nr_segments as usize == MAX_SEGMENTS_PER_REQUEST));
    // Only the ring stays granted between requests; pages are reused, not hoarded.
    assert_eq!(w.table.grants.len(), 1);
    assert!(w.pages_out() <= 1 + RING_SIZE as usize * MAX_SEGMENTS_PER_REQUEST);
    assert_eq!(blk.stats(), Default::default());
}

#[test]
fn a_split_request_lays_out_segments_like_blkif() {
    let (rig, mut blk) = Rig::connected(&[]);
    // 12 pages and 3 sectors from sector 5: one full request, then 1 page + 3 sectors.
    let len = 12 * 4096 + 3 * 512;
    blk.write(5, &vec![9; len]).unwrap();
    let w = rig.w();
    let reqs: Vec<_> = w.requests.iter().filter(|r| r.operation == Op::Write as u8).collect();
    assert_eq!(reqs.len(), 2);
    assert_eq!((reqs[0].sector_number, reqs[0].nr_segments), (5, 11));
    assert!(reqs[0].seg.iter().all(|s| (s.first_sect, s.last_sect) == (0, 7)));
    assert_eq!((reqs[1].sector_number, reqs[1].nr_segments), (5 + 88, 2));
    assert_eq!((reqs[1].seg[0].first_sect, reqs[1].seg[0].last_sect), (0, 7));
    assert_eq!((reqs[1].seg[1].first_sect, reqs[1].seg[1].last_sect), (0, 2));
    assert_eq!(w.disk[5 * 512..5 * 512 + len], vec![9; len][..]);
}

#[test]
fn out_of_range_is_refused_before_the_ring() {
    let (rig, mut blk) = Rig::connected(&[]);
    let mut buf = vec![0; 1024];
    assert_eq!(blk.read(4095, &mut buf), Err(BlkError::OutOfRange));
    assert_eq!(blk.read(4096, &mut buf[..512]), Err(BlkError::OutOfRange));
    assert_eq!(blk.read(u64::MAX, &mut buf[..512]), Err(BlkError::OutOfRange));
    assert_eq!(blk.write(u64::MAX - 1, &buf), Err(BlkError::OutOfRange));
    assert_eq!(blk.discard(4000, 97), Err(BlkError::OutOfRange));
    assert_eq!(blk.discard(0, u64::MAX), Err(BlkError::OutOfRange));
    assert_eq!(blk.read(0, &mut []), Err(BlkError::Misaligned));
    assert_eq!(blk.read(0, &mut buf[..100]), Err(BlkError::Misaligned));
    assert_eq!(blk.write(0, &buf[..513]), Err(BlkError::Misaligned));
    assert!(rig.w().requests.is_empty());
    // The last sector is fine.
    blk.read(4095, &mut buf[..512]).unwrap();
}

#[test]
fn read_only_disk_refuses_writes_before_the_ring() {
    let (rig, mut blk) = Rig::connected(&[("info", "4")]);
    assert!(blk.info().read_only());
    assert_eq!(blk.write(0, &[1; 512]), Err(BlkError::ReadOnly));
    assert_eq!(blk.discard(0, 8), Err(BlkError::ReadOnly));
    assert!(rig.w().requests.is_empty());
    let mut buf = [0; 512];
    blk.read(0, &mut buf).unwrap();
    assert_eq!(buf[..], pattern(0, 512)[..]);
}

#[test]
fn large_logical_sectors_need_aligned_transfers() {
    let (rig, mut blk) = Rig::connected(&[("sector-size", "4096")]);
    let mut buf = vec![0; 8192];
    assert_eq!(blk.read(1, &mut buf), Err(BlkError::Misaligned));
    assert_eq!(blk.read(8, &mut buf[..512]), Err(BlkError::Misaligned));
    assert!(rig.w().requests.is_empty());
    blk.read(8, &mut buf).unwrap();
    assert_eq!(buf, pattern(8 * 512, 8192));
}

#[test]
fn more_requests_than_the_ring_holds_are_queued() {
    let (rig, mut blk) = Rig::connected(&[]);
    rig.w().hold = true;
    let n = 3 * RING_SIZE as usize;
    let mut ids = Vec::new();
    // Writes of 1..=3 pages to disjoint places, then reads of them back, all at once.
    for i in 0..n {
        let data = vec![i as u8 + 1; 4096 * (1 + i % 3)];
        ids.push(blk.submit(Request::Write { sector: i as u64 * 24, data }).unwrap());
    }
    assert_eq!(blk.in_flight(), RING_SIZE as usize);
    assert_eq!(rig.w().pending_requests(), RING_SIZE);
    assert_eq!(blk.outstanding(), n);
    rig.w().hold = false;
    let mut done = 0;
    while done < n {
        assert!(rig.w().serve() > 0, "stalled after {done}");
        blk.poll();
        while let Some(c) = blk.take_completion() {
            assert_eq!(c.result, Ok(()));
            done += 1;
        }
    }
    let mut reads = Vec::new();
    for i in 0..n {
        let len = 4096 * (1 + i % 3);
        reads.push(blk.submit(Request::Read { sector: i as u64 * 24, len }).unwrap());
    }
    let mut got = 0;
    while got < n {
        rig.w().serve();
        blk.poll();
        while let Some(c) = blk.take_completion() {
            let i = reads.iter().position(|&r| r == c.id).unwrap();
            assert_eq!(c.result, Ok(()));
            assert!(c.data.iter().all(|&b| b == i as u8 + 1), "request {i}");
            assert_eq!(c.data.len(), 4096 * (1 + i % 3));
            got += 1;
        }
    }
    assert_eq!(blk.outstanding(), 0);
    assert_eq!(rig.w().exposed, 0);
}

#[test]
fn flush_uses_what_the_backend_offers() {
    let (rig, mut blk) = Rig::connected(&[]);
    blk.flush().unwrap();
    assert_eq!(rig.w().requests.last().map(|r| r.operation), Some(Op::FlushDiskcache as u8));
    let (rig, mut blk) = Rig::connected(&[("feature-flush-cache", "-"), ("feature-barrier", "1")]);
    blk.flush().unwrap();
    assert_eq!(rig.w().requests.last().map(|r| r.operation), Some(Op::WriteBarrier as u8));
    // Neither: the backend has no cache to flush; nothing goes on the ring.
    let (rig, mut blk) = Rig::connected(&[("feature-flush-cache", "0")]);
    blk.flush().unwrap();
    assert!(rig.w().requests.is_empty());
    assert_eq!(rig.w().flushes, 0);
}

#[test]
fn discard_zeroes_on_this_backend_and_needs_the_feature() {
    let (rig, mut blk) = Rig::connected(&[]);
    blk.discard(16, 24).unwrap();
    assert!(rig.w().disk[16 * 512..40 * 512].iter().all(|&b| b == 0));
    assert_eq!(rig.w().disk[40 * 512..41 * 512], pattern(40 * 512, 512)[..]);
    let (rig, mut blk) = Rig::connected(&[("feature-discard", "-")]);
    assert_eq!(blk.discard(0, 8), Err(BlkError::NotSupported));
    assert!(rig.w().requests.is_empty());
}

#[test]
fn a_silent_backend_times_out_and_the_late_answer_is_dropped() {
    let (rig, mut blk) = Rig::connected(&[]);
    blk.set_timeout(1_000_000);
    rig.w().hold = true;
    let mut buf = vec![0; 8192];
    assert_eq!(blk.read(0, &mut buf), Err(BlkError::Timeout));
    // Still owned by the driver: its pages stay granted until the backend answers.
    assert_eq!(blk.in_flight(), 1);
    assert_eq!(rig.w().table.grants.len(), 3);
    rig.w().hold = false;
    rig.w().serve();
    assert_eq!(blk.poll(), 0, "no completion for an abandoned request");
    assert_eq!((blk.in_flight(), blk.outstanding()), (0, 0));
    assert_eq!(rig.w().table.grants.len(), 1);
    blk.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(0, 8192));
}

#[test]
fn out_of_pages_fails_the_request_not_the_device() {
    let (rig, mut blk) = Rig::connected(&[]);
    rig.w().table.page_limit = 3; // the ring and two pages
    let mut buf = vec![0; 3 * 4096];
    assert_eq!(blk.read(0, &mut buf), Err(BlkError::Device(DeviceError::NoMemory)));
    assert_eq!(rig.w().table.grants.len(), 1);
    blk.read(0, &mut buf[..8192]).unwrap();
    assert_eq!(buf[..8192], pattern(0, 8192)[..]);
}

/// Serves and polls until `n` completions are in, returning them by id.
fn complete_all(rig: &Rig, blk: &mut crate::fake::Driver, n: usize) -> Vec<Completion> {
    let mut done = Vec::new();
    for _ in 0..1000 {
        rig.w().serve();
        blk.poll();
        while let Some(c) = blk.take_completion() {
            done.push(c);
        }
        if done.len() == n {
            done.sort_by_key(|c| c.id);
            return done;
        }
    }
    panic!("only {} of {n} requests completed", done.len());
}

#[test]
fn short_of_pages_requests_wait_for_those_in_flight() {
    let (rig, mut blk) = Rig::connected(&[]);
    rig.w().table.page_limit = 1 + MAX_SEGMENTS_PER_REQUEST; // the ring and one full request
                                                             // 63 pages in all, at ascending places; 15 and 22 pages take two ring requests each,
                                                             // the second of which waits for the first's pages.
    let pages = [3usize, 5, 11, 2, 15, 1, 22, 4];
    let mut at = 0;
    let spans: Vec<(u64, usize)> = pages
        .iter()
        .map(|&n| {
            let span = (at, n * 4096);
            at += n as u64 * 8 + 1;
            span
        })
        .collect();
    let data = |i: usize, len: usize| -> Vec<u8> {
        (0..len).map(|b| (b as u8).wrapping_mul(31).wrapping_add(i as u8 * 17 + 1)).collect()
    };
    let ids: Vec<_> = spans
        .iter()
        .enumerate()
        .map(|(i, &(sector, len))| blk.submit(Request::Write { sector, data: data(i, len) }))
        .collect::<Result<_, _>>()
        .unwrap();
    // Only what the pages allow is on the ring; the rest waits, none failed.
    assert!(blk.in_flight() < ids.len());
    assert_eq!(blk.outstanding(), ids.len());
    assert_eq!(blk.take_completion(), None);
    let done = complete_all(&rig, &mut blk, ids.len());
    assert_eq!(done.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    assert!(done.iter().all(|c| c.result == Ok(())), "{done:?}");

    let ids: Vec<_> = spans
        .iter()
        .map(|&(sector, len)| blk.submit(Request::Read { sector, len }))
        .collect::<Result<_, _>>()
        .unwrap();
    let done = complete_all(&rig, &mut blk, ids.len());
    for (i, (c, &(sector, len))) in done.iter().zip(&spans).enumerate() {
        assert_eq!(c.result, Ok(()), "read {i}");
        assert!(c.data == data(i, len), "read {i} at sector {sector}");
    }

    let w = rig.w();
    // First come, first served: ring requests went out in submission order.
    let sectors: Vec<u64> = w.requests.iter().map(|r| r.sector_number).collect();
    let half = sectors.len() / 2;
    assert!(sectors[..half].is_sorted() && sectors[half..].is_sorted(), "{sectors:?}");
    assert!(w.pages_out() <= 1 + MAX_SEGMENTS_PER_REQUEST);
    assert_eq!(w.table.grants.len(), 1);
    assert_eq!(w.exposed, 0);
}

#[test]
fn a_request_larger_than_all_pages_fails_once_nothing_is_in_flight() {
    let (rig, mut blk) = Rig::connected(&[]);
    rig.w().table.page_limit = 3; // the ring and two pages
    let small = blk.submit(Request::Read { sector: 0, len: 8192 }).unwrap();
    let big = blk.submit(Request::Read { sector: 0, len: 3 * 4096 }).unwrap();
    // The big one waits: the small one's pages may be enough.
    assert_eq!((blk.in_flight(), blk.outstanding()), (1, 2));
    let done = complete_all(&rig, &mut blk, 2);
    assert_eq!((done[0].id, done[0].result), (small, Ok(())));
    assert_eq!(done[0].data, pattern(0, 8192));
    // They were not: with nothing left in flight it fails instead of waiting forever.
    assert_eq!((done[1].id, done[1].result), (big, Err(BlkError::Device(DeviceError::NoMemory))));
    assert_eq!((blk.in_flight(), blk.outstanding()), (0, 0));
    assert_eq!(rig.w().table.grants.len(), 1);
}
