//! blkfront's ring consumer against a blkback that lies: a connected frontend with requests
//! in flight, then responses with any id, operation and status, duplicates, stale ones, a
//! `rsp_prod` anywhere, grants kept mapped; between them the driver polls, completes,
//! abandons, submits more and runs blocking calls that time out; the backend may keep data
//! or indirect pages mapped, the ring may span several pages, and the toolstack may take the
//! disk away in the middle.

use blkfront::abi::{BlkifResponse, Op, Status};
use blkfront::{BlockDevice, Request, RequestId};

use crate::blkback::{Rig, Taken};
use crate::input::{Input, Script};

/// Backend features, one bit of the first byte each.
const FEATURES: &[&[(&str, &str)]] = &[
    &[("feature-max-indirect-segments", "64")],
    &[("feature-persistent", "1")],
    &[("feature-flush-cache", "-"), ("feature-barrier", "1")],
    &[("feature-discard", "-")],
    &[("sector-size", "4096")],
    &[("info", "4")],
];

/// Sectors of the fake disk.
const SECTORS: u64 = 256;

fn request(input: &mut Input) -> Request {
    // Mostly in range and aligned, so that they reach the ring.
    let sector = u64::from(input.u16()) % SECTORS / 8 * 8;
    // Mostly a page or two: the ring's bookkeeping is the same, and copying the data was
    // most of an input's time. One in four up to 24 pages (indirect past 11 segments).
    let pages = match input.u8() {
        b @ 0..192 => 1 + b % 2,
        b => 1 + b % 24,
    };
    let len = 4096 * usize::from(pages);
    match input.u8() % 4 {
        0 => Request::Read { sector, len },
        1 => Request::Write { sector, data: vec![input.u8(); len] },
        2 => Request::Flush,
        _ => Request::Discard { sector, sectors: 8 * u64::from(1 + input.u8() % 8) },
    }
}

fn operation(input: &mut Input) -> u8 {
    match input.u8() % 8 {
        0 => Op::Read as u8,
        1 => Op::Write as u8,
        2 => Op::FlushDiskcache as u8,
        3 => Op::WriteBarrier as u8,
        4 => Op::Discard as u8,
        5 => Op::Indirect as u8,
        _ => input.u8(),
    }
}

fn status(input: &mut Input) -> i16 {
    match input.u8() % 5 {
        0 => Status::Okay as i16,
        1 => Status::Error as i16,
        2 => Status::EOpNotSupp as i16,
        _ => input.u16() as i16,
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let bits = input.u8();
    // A small disk: building the fake's larger default one would take most of the time.
    let mut extra = vec![("sectors", "256")];
    extra.extend(
        FEATURES
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .flat_map(|(_, keys)| keys.iter().copied()),
    );
    let mut rig = Rig::new(&extra);
    // Bit 6: a guest that gives multi-page rings (blkback offers order 4, we ask for 2).
    if bits & 0x40 != 0 {
        rig.w().table.max_ring_pages = 4;
    }
    let Ok(mut blk) = rig.connect() else { return };
    blk.set_timeout(1_000_000);
    rig.w().hold = true;
    let mut ids: Vec<RequestId> = Vec::new();
    let mut taken: Vec<Taken> = Vec::new();
    // Responses written since the connection: the true `rsp_prod`, for lies close to it.
    let mut produced = 0u32;
    while !input.is_empty() {
        match input.u8() % 15 {
            0 => ids.extend(blk.submit(request(&mut input))),
            1 => taken.extend(rig.w().take_requests()),
            // An answer to a request the backend took, honest or edited.
            2 if !taken.is_empty() => {
                let t = &taken[usize::from(input.u8()) % taken.len()];
                let mut rsp = rig.w().answer(t);
                match input.u8() % 5 {
                    0 => rsp.id ^= 1 << (input.u8() % 64),
                    1 => rsp.operation = operation(&mut input),
                    2 => rsp.status = status(&mut input),
                    _ => {}
                }
                rig.w().respond(rsp);
                produced = produced.wrapping_add(1);
            }
            // A response out of nowhere.
            3 => {
                let mut rsp = BlkifResponse::default();
                rsp.id = input.u64();
                rsp.operation = operation(&mut input);
                rsp.status = status(&mut input);
                rig.w().respond(rsp);
                produced = produced.wrapping_add(1);
            }
            4 => rig.w().publish(),
            5 => {
                let v = match input.u8() % 3 {
                    0 => produced.wrapping_add(i32::from(input.u8() as i8) as u32),
                    1 => produced.wrapping_add(u32::from(input.u16())),
                    _ => input.u32(),
                };
                rig.w().set_rsp_prod(v);
            }
            6 => {
                blk.poll();
                while blk.take_completion().is_some() {}
            }
            7 if !ids.is_empty() => blk.abandon(ids[usize::from(input.u8()) % ids.len()]),
            // The backend keeps a request's pages mapped: a data page, or an indirect
            // request's page of segments.
            8 if !taken.is_empty() => {
                let t = &taken[usize::from(input.u8()) % taken.len()];
                let gref = if t.req.operation == Op::Indirect as u8 {
                    t.indirect.indirect_grefs[0]
                } else {
                    t.req.seg[0].gref
                };
                rig.w().table.held.insert(gref.0);
            }
            9 => rig.w().table.held.clear(),
            // An honest stretch: the backend answers what is on the ring.
            10 => {
                let mut w = rig.w();
                w.hold = false;
                produced = produced.wrapping_add(w.serve() as u32);
                w.hold = true;
            }
            // Blocking calls: their waits serve nothing, so they time out.
            11 => {
                let sector = u64::from(input.u16()) % SECTORS;
                let mut buf = vec![0; 512 * usize::from(1 + input.u8() % 16)];
                let _ =
                    if input.bool() { blk.read(sector, &mut buf) } else { blk.write(sector, &buf) };
            }
            12 => drop(blk.flush()),
            // The toolstack takes the disk away in the middle of the I/O.
            13 => rig.w().ports.backend_closing = true,
            _ => drop(blk.discard(u64::from(input.u16()), u64::from(input.u8()))),
        }
    }
    blk.poll();
    let (_, completions) = blk.close(&mut rig.xs, 1_000_000);
    drop(completions);
}

pub fn seeds() -> Vec<Vec<u8>> {
    let answered = |features: u8, edit: &[u8]| {
        Script::default()
            .u8(features)
            // Three reads, taken by the backend.
            .bytes(&[0, 0, 0, 0, 0])
            .bytes(&[0, 16, 0, 2, 0])
            .bytes(&[0, 32, 0, 30, 0])
            .u8(1)
            // Answers, edited as given, published, polled.
            .bytes(&[2, 0])
            .bytes(edit)
            .bytes(&[2, 1, 4, 2, 2, 4, 4, 6])
            .0
    };
    vec![
        answered(0, &[4]),
        answered(1, &[0, 40]),
        answered(2, &[1, 1]),
        answered(3, &[2, 4]),
        answered(0x10, &[2, 2]),
        // Runaway rsp_prod.
        Script::default().u8(0).bytes(&[0, 0, 0, 0, 0, 1, 5, 1]).u16(300).u8(6).0,
        // A forged response, a kept grant, writes, discards, flush, blocking calls.
        Script::default()
            .u8(0x0b)
            .bytes(&[0, 8, 0, 1, 1, 9, 0, 3, 3])
            .bytes(&[
                1, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 1, 2, 0, 4, 6, 10, 6, 11, 0, 0, 3, 1, 12,
                13, 8, 0, 8,
            ])
            .0,
    ]
}
