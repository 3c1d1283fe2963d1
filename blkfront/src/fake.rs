//! A fake blkback for the host tests and the fuzz targets (feature `test-utils`): a
//! [`World`] that plays blkback (a disk, the back end of the ring, its side of the
//! handshake through the fake xenstored) over the frontend core's fake guest ([`Env`]), with
//! the knobs a test turns to make it misbehave.

use std::cell::RefCell;

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use frontend::fake::{
    any_nonzero, extend_cycle, FakeDevice, FakeEnv, FakeGrantTable, FakePorts, SharedMem,
};
use grant::{DomId, GrantRef};
use ring::shared::ring_size;
use xenbus::fake::{self as xenstored, Client, Fake, Idle};

use crate::abi::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    Op, Status, SEGMENTS_PER_INDIRECT_PAGE,
};

use crate::{BlkError, Blkfront};

/// The backend's domain.
pub const BACKEND: u16 = 0;
/// `device/vbd/<VBD>`: xvda.
pub const VBD: u32 = 51712;
/// The port our fake event channel hands out.
pub const PORT: u32 = frontend::fake::FIRST_PORT;
/// Slots in a one-page blkif ring.
pub const RING_SIZE: u32 = 32;
/// Blkback's `max-ring-page-order`, as Linux's offers it.
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Blkback's most segments in an indirect request (Linux's MAX_INDIRECT_SEGMENTS).
pub const MAX_INDIRECT_SEGMENTS: usize = 256;
/// Grants blkback keeps mapped with persistent grants (Linux's `max_pgrants` default).
pub const MAX_PGRANTS: usize = 1056;
const SECOND: u64 = 1_000_000_000;

pub fn backend_path() -> String {
    format!("/local/domain/{BACKEND}/backend/vbd/{}/{VBD}", xenstored::DOMID)
}

pub fn frontend_path() -> String {
    format!("device/vbd/{VBD}")
}

/// A request as the backend took it, in every layout a slot may hold.
pub struct Taken {
    pub req: BlkifRequest,
    pub discard: BlkifRequestDiscard,
    pub indirect: BlkifRequestIndirect,
}

/// Rewrites a response before it goes on the ring: a hostile backend.
pub type Tamper = Box<dyn FnMut(&BlkifRequest, &mut BlkifResponse)>;

/// The disk, the grant table, the backend's ring state and counters.
pub struct World {
    pub disk: Vec<u8>,
    /// The guest's pages and grants, with the backend's mappings (`table.held`).
    pub table: FakeGrantTable,
    /// The guest's event channel and clock.
    pub ports: FakePorts,
    /// Both sides announced `feature-persistent`: the backend maps every grant writable
    /// and keeps up to [`MAX_PGRANTS`] of them mapped (in `table.held`) until it
    /// disconnects.
    pub persistent: bool,
    /// Blkback keeps its persistent mappings when it disconnects: a hostile backend.
    pub keep_mappings: bool,
    /// Grants the backend mapped per request (not persistently), counted.
    pub transient_maps: usize,
    /// Blkback's `max-ring-page-order`, written at InitWait (`None`: not written).
    pub offer_ring_order: Option<u32>,
    /// Segments an indirect request may carry: the `feature-max-indirect-segments` the
    /// test offers, never more than blkback's own limit (0: indirect requests fail).
    pub max_indirect: usize,
    /// The ring, once the backend connected to it.
    ring: Option<Rc<SharedMem>>,
    req_cons: u32,
    rsp_prod_pvt: u32,
    /// Requests stay on the ring unanswered while set.
    pub hold: bool,
    pub tamper: Option<Tamper>,
    /// Every request taken off the ring (an indirect one seen through the direct layout:
    /// its `operation` is [`Op::Indirect`]).
    pub requests: Vec<BlkifRequest>,
    /// Every indirect request taken off the ring, with its segments as read from its
    /// indirect pages (empty if they could not be read).
    pub indirect: Vec<(BlkifRequestIndirect, Vec<BlkifRequestSegment>)>,
    /// Granted pages seen holding bytes that were not the request's data.
    pub exposed: usize,
    pub flushes: usize,
}

pub type Shared = Rc<RefCell<World>>;

/// The guest's pages, grants and event channel, as the driver sees them.
pub type Env = FakeEnv<World>;

frontend::fake_backend!(World);

impl World {
    fn new(disk_bytes: usize) -> Shared {
        let disk = pattern(0, disk_bytes);
        Rc::new(RefCell::new(World {
            disk,
            table: FakeGrantTable::default(),
            ports: FakePorts::new(DomId(BACKEND)),
            persistent: false,
            keep_mappings: false,
            transient_maps: 0,
            offer_ring_order: Some(MAX_RING_PAGE_ORDER),
            max_indirect: 0,
            ring: None,
            req_cons: 0,
            rsp_prod_pvt: 0,
            hold: false,
            tamper: None,
            requests: Vec::new(),
            indirect: Vec::new(),
            exposed: 0,
            flushes: 0,
        }))
    }

    /// Pages allocated and not freed (the ring's included).
    pub fn pages_out(&self) -> usize {
        self.table.pages_out()
    }

    /// The ring's slot `idx`.
    fn slot(ring: &SharedMem, idx: u32) -> usize {
        ring.slot::<BlkifRequest, BlkifResponse>(idx)
    }

    /// Answers every published request; returns how many.
    pub fn serve(&mut self) -> usize {
        if self.hold {
            return 0;
        }
        let taken = self.take_requests();
        for t in &taken {
            let mut rsp = self.answer(t);
            if let Some(tamper) = &mut self.tamper {
                tamper(&t.req, &mut rsp);
            }
            self.respond(rsp);
        }
        if !taken.is_empty() {
            self.publish();
        }
        taken.len()
    }

    /// Takes every published request off the ring without answering.
    pub fn take_requests(&mut self) -> Vec<Taken> {
        let Some(ring) = self.ring.clone() else { return Vec::new() };
        let prod = ring.word(0).load(Ordering::Acquire);
        let size = ring_size::<BlkifRequest, BlkifResponse>(ring.pages());
        // As blkback's RING_REQUEST_PROD_OVERFLOW check: more than a ring's worth published is
        // a corrupt ring (here, one the test's hostile steps overwrote), and nothing is taken.
        if prod.wrapping_sub(self.req_cons) > size {
            return Vec::new();
        }
        let mut out = Vec::new();
        while self.req_cons != prod {
            // Every layout the slot may hold, each copied once, as RING_COPY_REQUEST does.
            let slot = Self::slot(&ring, self.req_cons);
            let (req, discard, indirect) = (ring.get(slot), ring.get(slot), ring.get(slot));
            self.req_cons = self.req_cons.wrapping_add(1);
            self.requests.push(req);
            if req.operation == Op::Indirect as u8 {
                let segs = self.indirect_segments(&indirect).unwrap_or_default();
                self.indirect.push((indirect, segs));
            }
            out.push(Taken { req, discard, indirect });
        }
        out
    }

    /// Carries out a taken request; returns the honest response (not yet on the ring).
    /// Like Linux's blkback, it answers an indirect request with its `indirect_op`.
    pub fn answer(&mut self, t: &Taken) -> BlkifResponse {
        let status = self.execute(t);
        let operation = match Op::try_from(t.req.operation) {
            Ok(Op::Indirect) => t.indirect.indirect_op,
            _ => t.req.operation,
        };
        // Padding fields are private: start from the default and fill in the rest.
        let mut rsp = BlkifResponse::default();
        (rsp.id, rsp.operation, rsp.status) = (t.req.id, operation, status);
        rsp
    }

    /// Writes a response into the next slot without publishing it.
    pub fn respond(&mut self, rsp: BlkifResponse) {
        let ring = self.ring.clone().expect("backend not connected");
        ring.put(Self::slot(&ring, self.rsp_prod_pvt), rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    pub fn publish(&self) {
        self.set_rsp_prod(self.rsp_prod_pvt);
    }

    /// Publishes any `rsp_prod`, true or not.
    pub fn set_rsp_prod(&self, v: u32) {
        self.ring.as_ref().expect("backend not connected").word(8).store(v, Ordering::Release);
    }

    /// Requests published and not yet taken by the backend.
    pub fn pending_requests(&self) -> u32 {
        let prod = self.ring.as_ref().map_or(0, |r| r.word(0).load(Ordering::Acquire));
        prod.wrapping_sub(self.req_cons)
    }

    fn execute(&mut self, t: &Taken) -> i16 {
        let req = &t.req;
        let ok = Status::Okay as i16;
        let err = Status::Error as i16;
        match Op::try_from(req.operation) {
            Ok(op @ (Op::Read | Op::Write)) => {
                let n = req.nr_segments as usize;
                if n == 0 || n > req.seg.len() {
                    return err;
                }
                self.rw(req.sector_number, &req.seg[..n], op == Op::Read).map_or(err, |()| ok)
            }
            Ok(Op::Indirect) => {
                let ind = &t.indirect;
                let read = match Op::try_from(ind.indirect_op) {
                    Ok(Op::Read) => true,
                    Ok(Op::Write) => false,
                    _ => return err,
                };
                match self.indirect_segments(ind) {
                    Some(segs) => self.rw(ind.sector_number, &segs, read).map_or(err, |()| ok),
                    None => err,
                }
            }
            Ok(Op::FlushDiskcache | Op::WriteBarrier) if req.nr_segments == 0 => {
                self.flushes += 1;
                ok
            }
            Ok(Op::Discard) => {
                let d = &t.discard;
                let start = d.sector_number as usize * 512;
                match self.disk.get_mut(start..start + d.nr_sectors as usize * 512) {
                    Some(range) => {
                        range.fill(0);
                        ok
                    }
                    None => err,
                }
            }
            _ => err,
        }
    }

    /// An indirect request's segments, read from its indirect pages as blkback maps them:
    /// `None` if the count is beyond what we offer or a page is not granted to us the way
    /// blkback maps it (read-only, or writable with persistent grants). Counts an exposure
    /// if a page holds anything but the segments.
    fn indirect_segments(
        &mut self,
        ind: &BlkifRequestIndirect,
    ) -> Option<Vec<BlkifRequestSegment>> {
        let n = ind.nr_segments as usize;
        if n <= crate::abi::MAX_SEGMENTS_PER_REQUEST || n > self.max_indirect {
            return None;
        }
        let mut segs = Vec::with_capacity(n);
        for (i, gref) in
            ind.indirect_grefs[..n.div_ceil(SEGMENTS_PER_INDIRECT_PAGE)].iter().enumerate()
        {
            self.map(*gref, true).ok()?;
            let here = (n - i * SEGMENTS_PER_INDIRECT_PAGE).min(SEGMENTS_PER_INDIRECT_PAGE);
            let exposed = self.table.grants[&gref.0].view(|page| {
                for raw in page[..here * 8].chunks_exact(8) {
                    segs.push(BlkifRequestSegment {
                        gref: GrantRef(u32::from_le_bytes(raw[..4].try_into().unwrap())),
                        first_sect: raw[4],
                        last_sect: raw[5],
                        ..Default::default()
                    });
                }
                any_nonzero(&page[here * 8..])
            });
            self.exposed += usize::from(exposed);
        }
        Some(segs)
    }

    /// A read or write, checked as blkback checks it.
    fn rw(&mut self, sector: u64, segs: &[BlkifRequestSegment], read: bool) -> Result<(), ()> {
        let mut at = sector as usize * 512;
        for seg in segs {
            if seg.first_sect > seg.last_sect || seg.last_sect > 7 {
                return Err(());
            }
            self.map(seg.gref, !read)?;
            let g = &self.table.grants[&seg.gref.0];
            let (off, len) = (
                seg.first_sect as usize * 512,
                (seg.last_sect - seg.first_sect + 1) as usize * 512,
            );
            let exposed = if read {
                // Nothing of ours in it: a read's page comes zeroed.
                let exposed = g.view(any_nonzero);
                g.write(off, self.disk.get(at..at + len).ok_or(())?);
                exposed
            } else {
                // Only the data to write: the rest of the page is zero.
                let dst = self.disk.get_mut(at..at + len).ok_or(())?;
                g.view(|whole| {
                    dst.copy_from_slice(&whole[off..off + len]);
                    any_nonzero(&whole[..off]) || any_nonzero(&whole[off + len..])
                })
            };
            self.exposed += usize::from(exposed);
            at += len;
        }
        Ok(())
    }

    /// Maps `gref` as blkback does (the caller then reads the grant's page). Without persistent
    /// grants the mapping is read-only if `ro` and lasts for the request (a writable grant
    /// is needed unless `ro`); with them it is always writable (a read-only grant fails)
    /// and lasts until the backend disconnects, for the first [`MAX_PGRANTS`] grants.
    fn map(&mut self, gref: GrantRef, ro: bool) -> Result<(), ()> {
        let g = self.table.grants.get(&gref.0).ok_or(())?;
        let writable = self.persistent || !ro;
        if g.domid != DomId(BACKEND) || (writable && g.readonly) {
            return Err(());
        }
        let held = &mut self.table.held;
        if self.persistent && (held.contains(&gref.0) || held.len() < MAX_PGRANTS) {
            held.insert(gref.0);
        } else {
            self.transient_maps += 1;
        }
        Ok(())
    }

    /// The backend maps the ring the frontend published, as blkback does at Initialised:
    /// every reference writable to us, in page order of one ring (the fake's stand-in for
    /// mapping them contiguously).
    fn connect_ring(&mut self, refs: &[u32]) -> bool {
        let grants: Option<Vec<_>> = refs.iter().map(|r| self.table.grants.get(r)).collect();
        let Some(grants) = grants else { return false };
        let Some(first) = grants.first() else { return false };
        let ok = grants.iter().enumerate().all(|(i, g)| {
            !g.readonly
                && g.domid == DomId(BACKEND)
                && Rc::ptr_eq(&g.mem, &first.mem)
                && g.page == i
        });
        if !ok || first.mem.pages() != refs.len() {
            return false;
        }
        self.ring = Some(first.mem.clone());
        true
    }
}

pub type Driver = Blkfront<Env, Env>;

/// Blkback's side of the handshake, one step per idle round of xenstored: InitWait with
/// its features, then at our Initialised it maps the ring, checks the event channel,
/// writes the disk's keys (`disk`, written as given) and connects; it follows us to Closed.
pub fn blkback(world: Shared, disk: Vec<(String, String)>) -> Idle {
    Box::new(move |fake: &mut Fake| {
        let (fe, be) = (frontend_path(), backend_path());
        let (Some(f), Some(b)) =
            (fake.number(&format!("{fe}/state")), fake.number(&format!("{be}/state")))
        else {
            return false;
        };
        let next = match (f, b) {
            (_, 1) => {
                if let Some(order) = world.borrow().offer_ring_order {
                    fake.set(&format!("{be}/max-ring-page-order"), format!("{order}").as_bytes());
                }
                2
            }
            (3, 2) => {
                let read = |k: &str| fake.number(&format!("{fe}/{k}"));
                let proto = fake.get(&format!("{fe}/protocol")).map(<[u8]>::to_vec);
                // As blkback: `ring-page-order` (at most what we offer) and ring-ref0..N,
                // or `ring-ref` alone.
                let offered = world.borrow().offer_ring_order.unwrap_or(0);
                let refs: Option<Vec<u32>> = match read("ring-page-order") {
                    Some(o) if o <= offered => {
                        (0..1 << o).map(|i| read(&format!("ring-ref{i}"))).collect()
                    }
                    Some(_) => None,
                    None => read("ring-ref").map(|r| vec![r]),
                };
                let offers = |k: &str| disk.iter().any(|(key, v)| key == k && v == "1");
                world.borrow_mut().persistent =
                    offers("feature-persistent") && read("feature-persistent") == Some(1);
                let port = world.borrow().ports.last();
                let ok = port.is_some()
                    && read("event-channel") == port
                    && proto.as_deref() == Some(b"x86_64-abi")
                    && refs.is_some_and(|r| world.borrow_mut().connect_ring(&r));
                if !ok {
                    5
                } else {
                    for (k, v) in &disk {
                        fake.set(&format!("{be}/{k}"), v.as_bytes());
                    }
                    4
                }
            }
            (5, 1..=4) => 5,
            (6, 5) => {
                // Unmaps everything as it disconnects.
                let mut w = world.borrow_mut();
                w.ring = None;
                if !w.keep_mappings {
                    w.table.held.clear();
                }
                6
            }
            _ => return false,
        };
        fake.set(&format!("{be}/state"), format!("{next}").as_bytes());
        true
    })
}

/// The keys of a 2 MiB disk with 512-byte sectors, flush and discard, plus `extra`
/// (overriding). A key given the value `-` is left out.
pub fn disk_keys(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    frontend::fake::backend_keys(
        &[
            ("sectors", "4096"),
            ("sector-size", "512"),
            ("info", "0"),
            ("feature-flush-cache", "1"),
            ("feature-discard", "1"),
        ],
        extra,
    )
}

/// Everything a test needs: the fakes, with the disk plugged (`Rig::new(extra)`: blkback
/// serving `disk_keys(extra)`).
pub type Rig = frontend::fake::Rig<World>;

impl FakeDevice for World {
    type Driver = Driver;
    type Error = BlkError;

    fn plug(store: &mut Fake, extra: &[(&str, &str)]) -> Shared {
        let sectors = number(&disk_keys(extra), "sectors", 4096);
        let world = World::new(sectors.min(1 << 16) * 512);
        Self::replug(&world, store, extra);
        world
    }

    /// The disk keeps its content (and its size: a smaller `sectors` only hides the rest).
    fn replug(world: &Shared, store: &mut Fake, extra: &[(&str, &str)]) {
        let keys = disk_keys(extra);
        {
            let mut w = world.borrow_mut();
            w.max_indirect =
                number(&keys, "feature-max-indirect-segments", 0).min(MAX_INDIRECT_SEGMENTS);
            (w.ring, w.req_cons, w.rsp_prod_pvt, w.persistent) = (None, 0, 0, false);
        }
        store.remove(&frontend_path());
        store.remove(&backend_path());
        store.plug_device(&frontend_path(), &backend_path(), BACKEND, &[]);
        store.on_idle = Some(blkback(world.clone(), keys));
    }

    fn connect(xs: &mut Client, env: Env) -> Result<Driver, BlkError> {
        Blkfront::connect(xs, VBD, env.clone(), env, SECOND)
    }
}

/// The number `keys` give `key`, or `default`.
fn number(keys: &[(String, String)], key: &str, default: usize) -> usize {
    keys.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse().ok()).unwrap_or(default)
}

/// Writes fresh data of each length at each sector and reads it back, then checks that the
/// fake disk holds exactly what was written and no granted page held another request's data.
/// `mul` varies the data between callers.
pub fn round_trips(rig: &Rig, blk: &mut Driver, lengths: &[usize], sectors: &[u64], mul: u8) {
    use crate::BlockDevice;
    let mut model = rig.w().disk.clone();
    let mut seed = mul;
    for &len in lengths {
        for &sector in sectors.iter().chain(&[4096 - (len / 512) as u64]) {
            seed = seed.wrapping_add(1);
            let data: Vec<u8> =
                (0..len).map(|i| (i as u8).wrapping_mul(mul).wrapping_add(seed)).collect();
            blk.write(sector, &data).unwrap();
            let at = sector as usize * 512;
            model[at..at + len].copy_from_slice(&data);
            let mut back = vec![0; len];
            blk.read(sector, &mut back).unwrap();
            assert!(back == data, "sector {sector} len {len}");
        }
    }
    let w = rig.w();
    assert_eq!(w.disk, model);
    assert_eq!(w.exposed, 0, "a granted page held more than its request's data");
}

/// The disk's initial content at `[at, at + len)`: a pattern that differs at every 512-byte
/// sector and inside it.
pub fn pattern(at: usize, len: usize) -> Vec<u8> {
    // It repeats every 256 sectors, where both of its terms wrap.
    static ONE_PERIOD: OnceLock<Vec<u8>> = OnceLock::new();
    let period = ONE_PERIOD.get_or_init(|| {
        (0..256 * 512).map(|i| ((i / 512) as u8) ^ (i as u8).wrapping_mul(7)).collect()
    });
    let mut out = Vec::new();
    extend_cycle(&mut out, period, at, len);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pattern_is_the_same_across_its_period() {
        let formula = |i: usize| ((i / 512) as u8) ^ (i as u8).wrapping_mul(7);
        for (at, len) in [(0, 1), (131_000, 1_000), (3 * 131_072 - 5, 300_000), (77, 0)] {
            let expected: Vec<u8> = (at..at + len).map(formula).collect();
            assert!(super::pattern(at, len) == expected, "at {at} len {len}");
        }
    }
}
