use super::{check, xen_only, Outcome, Test};
use crate::blk::{self, Disk};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use blkfront::DeviceError;
use blkfront::{BlkError, BlockDevice, Request};

pub const TESTS: &[Test] = &[
    Test { name: "blk::patterns_round_trip", run: patterns_round_trip },
    Test { name: "blk::out_of_range_rejected", run: out_of_range_rejected },
    Test { name: "blk::many_in_flight", run: many_in_flight },
    Test { name: "blk::read_only_refuses_writes", run: read_only_refuses_writes },
    Test { name: "blk::discard", run: discard },
];

/// The disks the tests may use, as the command line names them: nothing else is touched.
#[derive(Clone, Copy)]
enum Role {
    /// `scratch=`: its contents are destroyed.
    Scratch,
    /// `rodisk=`: attached read-only by the toolstack; only read.
    ReadOnly,
}

/// Connects the disk the command line names for `role`, once the toolstack has given it to
/// us, runs `f`, disconnects.
fn with_disk(role: Role, f: impl FnOnce(&mut Disk) -> Outcome) -> Outcome {
    let options = crate::boot::options();
    let named = match role {
        Role::Scratch => options.scratch,
        Role::ReadOnly => options.rodisk,
    };
    let Some(id) = named else {
        return Outcome::Skip(match role {
            Role::Scratch => "overwrites a disk: name one it may destroy with scratch=xvdX",
            Role::ReadOnly => "needs a disk attached read-only, named with rodisk=xvdX",
        });
    };
    if !blk::wait_for_disk(id) {
        log::info!(
            "{}: named on the command line, not given by the toolstack within {} s",
            blk::name(id),
            blk::APPEAR_TIMEOUT_NS / 1_000_000_000
        );
        return Outcome::Skip("the disk named on the command line never appeared");
    }
    let mut disk = match blk::connect(id) {
        Ok(d) => d,
        // The backend's fault, not ours: the driver refused the device as it should, and
        // the tests that need it cannot run.
        Err(
            e @ (BlkError::Device(DeviceError::BadBackendValue { .. })
            | BlkError::Device(DeviceError::BackendClosed)),
        ) => {
            log::error!("{}: {e}: device refused", blk::name(id));
            return Outcome::Skip("the backend's disk was refused (see the ERROR line)");
        }
        // The toolstack removed it while we connected (its directory went with it).
        Err(e) if !blk::disk_ids().contains(&id) => {
            log::error!("{}: {e}: the disk went away", blk::name(id));
            return Outcome::Skip("the disk went away (see the ERROR line)");
        }
        Err(e) => return Outcome::Fail(format!("connecting disk {id}: {e}")),
    };
    let outcome = match (f(&mut disk), disk.stopped()) {
        // Taken away in the middle of the test (xl block-detach): the driver failed what
        // was left, as it should, and the test cannot tell more.
        (Outcome::Fail(why), Some(e @ BlkError::Device(DeviceError::BackendClosed))) => {
            log::error!("{}: {e} during the test: {why}", blk::name(id));
            Outcome::Skip("the backend closed the disk during the test (see the ERROR line)")
        }
        (outcome, _) => outcome,
    };
    if let Err(e) = blk::close(disk) {
        return Outcome::Fail(format!("closing disk {id}: {e}"));
    }
    outcome
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = super::XorShift(seed | 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Writes then reads back patterns at many offsets and lengths: one sector, partial and
/// whole pages, a full 11-segment request, requests split in two and in many (1 MiB); with
/// persistent grants when the backend offers them.
fn patterns_round_trip() -> Outcome {
    xen_only!();
    with_disk(Role::Scratch, |disk| {
        let info = disk.info();
        check!(info.sector_size == 512, "sector size {}", info.sector_size);
        check!(!info.read_only(), "the scratch disk is read-only");
        let cases: [(u64, usize); 8] = [
            (0, 512),
            (1, 512),
            (3, 3 * 512),
            (7, 4096),
            (16, 11 * 4096),
            (200, 11 * 4096 + 512),
            (1000, 64 * 1024),
            (4096, 1 << 20),
        ];
        for (sector, len) in cases {
            check!((sector * 512 + len as u64) <= info.capacity_bytes(), "disk too small");
            let data = pattern(sector * 7919 + len as u64, len);
            let w = disk.write(sector, &data);
            check!(w.is_ok(), "write {len} bytes at sector {sector}: {w:?}");
            let f = disk.flush();
            check!(f.is_ok(), "flush: {f:?}");
            let mut back = vec![0u8; len];
            let r = disk.read(sector, &mut back);
            check!(r.is_ok(), "read {len} bytes at sector {sector}: {r:?}");
            check!(back == data, "{len} bytes at sector {sector} read back differently");
        }
        let stats = disk.stats();
        let clean = stats.quarantined == 0 && stats.bad_responses == 0;
        check!(clean && stats.unknown_responses == 0, "backend misbehaved: {stats:?}");
        // Linux's blkback keeps the pages it maps when both sides announce the feature.
        let kept = stats.persistent_grants > 0;
        check!(kept || !info.features.persistent, "persistent grants offered, none kept");
        Outcome::Pass
    })
}

/// I/O beyond the end of the disk is refused before it reaches the ring.
fn out_of_range_rejected() -> Outcome {
    xen_only!();
    with_disk(Role::Scratch, |disk| {
        let end = disk.info().sectors;
        let mut buf = [0u8; 1024];
        let r = disk.read(end - 1, &mut buf);
        check!(r == Err(BlkError::OutOfRange), "read across the end: {r:?}");
        let w = disk.write(end, &[0u8; 512]);
        check!(w == Err(BlkError::OutOfRange), "write past the end: {w:?}");
        let r = disk.read(u64::MAX - 1, &mut buf[..512]);
        check!(r == Err(BlkError::OutOfRange), "read at a wrapping sector: {r:?}");
        check!(disk.read(end - 1, &mut buf[..512]).is_ok(), "the last sector itself");
        Outcome::Pass
    })
}

/// Runs the requests all at once (far more than the ring's 32 slots) and waits for all.
fn run_all(disk: &mut Disk, requests: Vec<Request>) -> Result<Vec<Vec<u8>>, Outcome> {
    let mut ids = Vec::new();
    for r in requests {
        ids.push(disk.submit(r).map_err(|e| Outcome::Fail(format!("submit: {e}")))?);
    }
    let deadline = crate::pvops::clock_ns() + blk::TIMEOUT_NS;
    let mut results: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
    let mut left = ids.len();
    while left > 0 {
        disk.poll();
        while let Some(c) = disk.take_completion() {
            let Some(i) = ids.iter().position(|&id| id == c.id) else {
                return Err(Outcome::Fail("a completion for a request we did not submit".into()));
            };
            if let Err(e) = c.result {
                return Err(Outcome::Fail(format!("request {i}: {e}")));
            }
            results[i] = Some(c.data);
            left -= 1;
        }
        if left > 0 && !crate::xen::frontend::wait(disk.port(), deadline) {
            return Err(Outcome::Fail(format!("{left} requests still outstanding")));
        }
    }
    Ok(results.into_iter().map(Option::unwrap_or_default).collect())
}

/// 256 writes, then 256 reads, each batch in flight together, with the right data.
fn many_in_flight() -> Outcome {
    xen_only!();
    const N: u64 = 256;
    with_disk(Role::Scratch, |disk| {
        let writes =
            (0..N).map(|i| Request::Write { sector: 8192 + i * 8, data: pattern(i, 4096) });
        if let Err(outcome) = run_all(disk, writes.collect()) {
            return outcome;
        }
        let reads = (0..N).map(|i| Request::Read { sector: 8192 + i * 8, len: 4096 });
        let data = match run_all(disk, reads.collect()) {
            Ok(d) => d,
            Err(outcome) => return outcome,
        };
        for (i, d) in data.iter().enumerate() {
            check!(*d == pattern(i as u64, 4096), "request {i} read back differently");
        }
        Outcome::Pass
    })
}

/// A disk attached read-only refuses writes (before the ring) and serves reads.
fn read_only_refuses_writes() -> Outcome {
    xen_only!();
    with_disk(Role::ReadOnly, |disk| {
        check!(disk.info().read_only(), "the backend does not report the disk read-only");
        let w = disk.write(0, &[0u8; 512]);
        check!(w == Err(BlkError::ReadOnly), "write: {w:?}");
        let mut buf = [0u8; 4096];
        let r = disk.read(0, &mut buf);
        check!(r.is_ok(), "read: {r:?}");
        Outcome::Pass
    })
}

/// Discard, where the backend offers it, succeeds and leaves the disk usable; out-of-range
/// discards are refused before the ring.
fn discard() -> Outcome {
    xen_only!();
    with_disk(Role::Scratch, |disk| {
        let info = disk.info();
        if !info.features.discard {
            let r = disk.discard(0, 8);
            check!(r == Err(BlkError::NotSupported), "discard without the feature: {r:?}");
            return Outcome::Skip("the backend does not offer discard");
        }
        let r = disk.discard(2048, 2048);
        check!(r.is_ok(), "discard of 1 MiB: {r:?}");
        let r = disk.discard(info.sectors - 8, 16);
        check!(r == Err(BlkError::OutOfRange), "discard past the end: {r:?}");
        let data = pattern(99, 4096);
        check!(disk.write(2048, &data).is_ok(), "write after discard");
        let mut back = vec![0u8; 4096];
        check!(disk.read(2048, &mut back).is_ok() && back == data, "read after discard");
        Outcome::Pass
    })
}
