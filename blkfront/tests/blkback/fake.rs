//! The guest's side effects ([`Pages`], [`EventChannel`]) over a [`World`] that also plays
//! blkback: a disk, a grant table mapping references to pages, and the back end of the ring.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use blkfront::abi::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    Op, Status, SEGMENTS_PER_INDIRECT_PAGE,
};
use blkfront::env::PAGE_SIZE;
use blkfront::{BlkError, Blkfront, EventChannel, Page, Pages, SharedRing, Timeout};
use grant::{DomId, GrantError, GrantRef, Grants};
use ring::shared::{ring_size, FrontRing, HEADER_SIZE};

use crate::xenstored::{self, Client, Fake, Idle};

/// The backend's domain.
pub const BACKEND: u16 = 0;
/// `device/vbd/<VBD>`: xvda.
pub const VBD: u32 = 51712;
/// The port our fake event channel hands out.
pub const PORT: u32 = 7;
/// Slots in a one-page blkif ring.
pub const RING_SIZE: u32 = 32;
/// Blkback's `max-ring-page-order`, as Linux's offers it.
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Blkback's most segments in an indirect request (Linux's MAX_INDIRECT_SEGMENTS).
pub const MAX_INDIRECT_SEGMENTS: usize = 256;
/// Grants blkback keeps mapped with persistent grants (Linux's `max_pgrants` default).
pub const MAX_PGRANTS: usize = 1056;
const SLOT_SIZE: usize = 112;
const SECOND: u64 = 1_000_000_000;

pub fn backend_path() -> String {
    format!("/local/domain/{BACKEND}/backend/vbd/{}/{VBD}", xenstored::DOMID)
}

pub fn frontend_path() -> String {
    format!("device/vbd/{VBD}")
}

/// Page-aligned, contiguous pages of memory: guest pages (one, or a ring's run), each
/// reachable by the backend through its own grant.
pub struct Mem(NonNull<u8>, usize);

fn layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("page layout")
}

impl Mem {
    fn new(pages: usize) -> Rc<Self> {
        // SAFETY: the layout has a non-zero size (callers ask for at least one page).
        let p = unsafe { alloc_zeroed(layout(pages)) };
        Rc::new(Mem(NonNull::new(p).expect("out of memory"), pages))
    }

    /// The frame number the "backend" sees of the first page: its address, shifted.
    fn frame(&self) -> u64 {
        self.0.as_ptr() as u64 >> 12
    }

    /// Every page's frame.
    fn frames(&self) -> impl Iterator<Item = u64> {
        let first = self.frame();
        (0..self.1 as u64).map(move |i| first + i)
    }

    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.1 * PAGE_SIZE);
        let mut v = vec![0; len];
        // SAFETY: in bounds of the live page (checked above); no reference to the page is
        // alive during the copy (single thread, the driver is not running).
        unsafe { ptr::copy_nonoverlapping(self.0.as_ptr().add(off), v.as_mut_ptr(), len) };
        v
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.1 * PAGE_SIZE);
        // SAFETY: as in `read`.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.0.as_ptr().add(off), data.len()) };
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: one of the ring header's u32 fields, aligned and inside the live page;
        // the front ring accesses them atomically too.
        unsafe { &*self.0.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Slot `idx` of a ring over all of these pages.
    fn slot(&self, idx: u32) -> *mut u8 {
        let i = (idx % ring_size::<BlkifRequest, BlkifResponse>(self.1)) as usize;
        // SAFETY: slot `i` of a ring of `self.1` pages lies inside them.
        unsafe { self.0.as_ptr().add(HEADER_SIZE + i * SLOT_SIZE) }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.0.as_ptr(), layout(self.1)) };
    }
}

/// A bounce page as the guest would hand it out.
pub struct TestPage(Rc<Mem>);

// SAFETY: the page is live while `self` holds it (the `Rc` keeps the allocation); the
// fake backend writes it only while the driver is not running (one thread), and the driver
// reaches it only through the trait's accessors.
unsafe impl Page for TestPage {
    fn base(&self) -> core::ptr::NonNull<u8> {
        self.0 .0
    }

    fn frame(&self) -> u64 {
        self.0.frame()
    }
}

pub struct TestRing {
    front: FrontRing<BlkifRequest, BlkifResponse>,
    refs: Vec<GrantRef>,
    /// Keeps the ring's memory alive as long as `front` exists.
    _mem: Rc<Mem>,
}

impl SharedRing for TestRing {
    fn front(&mut self) -> &mut FrontRing<BlkifRequest, BlkifResponse> {
        &mut self.front
    }

    fn grant_refs(&self) -> &[GrantRef] {
        &self.refs
    }
}

pub struct Grant {
    mem: Rc<Mem>,
    /// Which of `mem`'s pages.
    page: usize,
    pub readonly: bool,
    domid: DomId,
}

impl Grant {
    fn frame(&self) -> u64 {
        self.mem.frame() + self.page as u64
    }

    fn read(&self) -> Vec<u8> {
        self.mem.read(self.page * PAGE_SIZE, PAGE_SIZE)
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= PAGE_SIZE);
        self.mem.write(self.page * PAGE_SIZE + off, data);
    }
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
    /// Every page allocated and not freed, by frame.
    frames: HashMap<u64, Rc<Mem>>,
    pub grants: BTreeMap<u32, Grant>,
    next_gref: u32,
    /// Grants the backend keeps mapped: ending them fails with `InUse`.
    pub held: HashSet<u32>,
    /// Both sides announced `feature-persistent`: the backend maps every grant writable
    /// and keeps up to [`MAX_PGRANTS`] of them mapped (in `held`) until it disconnects.
    pub persistent: bool,
    /// Blkback keeps its persistent mappings when it disconnects: a hostile backend.
    pub keep_mappings: bool,
    /// Grants the backend mapped per request (not persistently), counted.
    pub transient_maps: usize,
    /// `alloc_page` fails once this many pages are out.
    pub page_limit: usize,
    /// `grant` fails ([`GrantError::Exhausted`]) once this many grants are active.
    pub grant_limit: usize,
    pub pages_freed: usize,
    /// The largest ring order `alloc_ring` grants: 0 by default, as a guest without
    /// multi-page rings; larger orders are refused with `NotSupported`.
    pub ring_order_limit: u32,
    /// Blkback's `max-ring-page-order`, written at InitWait (`None`: not written).
    pub offer_ring_order: Option<u32>,
    /// The order of every `alloc_ring` call, granted or refused.
    pub ring_orders: Vec<u32>,
    /// Segments an indirect request may carry: the `feature-max-indirect-segments` the
    /// test offers, never more than blkback's own limit (0: indirect requests fail).
    pub max_indirect: usize,
    /// The ring, once the backend connected to it.
    ring: Option<Rc<Mem>>,
    pub ring_freed: bool,
    pub port_closed: bool,
    req_cons: u32,
    rsp_prod_pvt: u32,
    /// Requests stay on the ring unanswered while set.
    pub hold: bool,
    /// What the guest's watch on the backend's state would report: it left Connected.
    pub backend_closing: bool,
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
    pub notifies: usize,
    pub now: u64,
}

pub type Shared = Rc<RefCell<World>>;

impl World {
    fn new(disk_bytes: usize) -> Shared {
        // A pattern that differs at every 512-byte sector and inside it.
        let disk = (0..disk_bytes).map(|i| ((i / 512) as u8) ^ (i as u8).wrapping_mul(7)).collect();
        Rc::new(RefCell::new(World {
            disk,
            frames: HashMap::new(),
            grants: BTreeMap::new(),
            next_gref: 8,
            held: HashSet::new(),
            persistent: false,
            keep_mappings: false,
            transient_maps: 0,
            page_limit: usize::MAX,
            grant_limit: usize::MAX,
            pages_freed: 0,
            ring_order_limit: 0,
            offer_ring_order: Some(MAX_RING_PAGE_ORDER),
            ring_orders: Vec::new(),
            max_indirect: 0,
            ring: None,
            ring_freed: false,
            port_closed: false,
            req_cons: 0,
            rsp_prod_pvt: 0,
            hold: false,
            backend_closing: false,
            tamper: None,
            requests: Vec::new(),
            indirect: Vec::new(),
            exposed: 0,
            flushes: 0,
            notifies: 0,
            now: 0,
        }))
    }

    /// Pages allocated and not freed (the ring's included).
    pub fn pages_out(&self) -> usize {
        self.frames.len()
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
        let prod = ring.index(0).load(Ordering::Acquire);
        let mut out = Vec::new();
        while self.req_cons != prod {
            let slot = ring.slot(self.req_cons);
            // SAFETY: a published slot of the live ring, 8-aligned; every layout is Pod
            // and fits the slot. Copied once, as RING_COPY_REQUEST does.
            let (req, discard, indirect) = unsafe {
                (
                    ptr::read_volatile(slot.cast::<BlkifRequest>()),
                    ptr::read_volatile(slot.cast::<BlkifRequestDiscard>()),
                    ptr::read_volatile(slot.cast::<BlkifRequestIndirect>()),
                )
            };
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
        // SAFETY: a slot of the live ring, 8-aligned; `BlkifResponse` is Pod.
        unsafe { ptr::write_volatile(ring.slot(self.rsp_prod_pvt).cast::<BlkifResponse>(), rsp) };
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    pub fn publish(&self) {
        self.set_rsp_prod(self.rsp_prod_pvt);
    }

    /// Publishes any `rsp_prod`, true or not.
    pub fn set_rsp_prod(&self, v: u32) {
        self.ring.as_ref().expect("backend not connected").index(8).store(v, Ordering::Release);
    }

    /// Requests published and not yet taken by the backend.
    pub fn pending_requests(&self) -> u32 {
        let prod = self.ring.as_ref().map_or(0, |r| r.index(0).load(Ordering::Acquire));
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
        if n <= blkfront::abi::MAX_SEGMENTS_PER_REQUEST || n > self.max_indirect {
            return None;
        }
        let mut segs = Vec::with_capacity(n);
        for (i, gref) in
            ind.indirect_grefs[..n.div_ceil(SEGMENTS_PER_INDIRECT_PAGE)].iter().enumerate()
        {
            let page = self.map(*gref, true).ok()?;
            let here = (n - i * SEGMENTS_PER_INDIRECT_PAGE).min(SEGMENTS_PER_INDIRECT_PAGE);
            if page[here * 8..].iter().any(|&b| b != 0) {
                self.exposed += 1;
            }
            for raw in page[..here * 8].chunks_exact(8) {
                let mut s = BlkifRequestSegment::default();
                s.gref = GrantRef(u32::from_le_bytes(raw[..4].try_into().unwrap()));
                (s.first_sect, s.last_sect) = (raw[4], raw[5]);
                segs.push(s);
            }
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
            let whole = self.map(seg.gref, !read)?;
            let g = &self.grants[&seg.gref.0];
            let (off, len) = (
                seg.first_sect as usize * 512,
                (seg.last_sect - seg.first_sect + 1) as usize * 512,
            );
            if read {
                // Nothing of ours in it: a read's page comes zeroed.
                if whole.iter().any(|&b| b != 0) {
                    self.exposed += 1;
                }
                let src = self.disk.get(at..at + len).ok_or(())?.to_vec();
                g.write(off, &src);
            } else {
                // Only the data to write: the rest of the page is zero.
                if whole[..off].iter().chain(&whole[off + len..]).any(|&b| b != 0) {
                    self.exposed += 1;
                }
                let dst = self.disk.get_mut(at..at + len).ok_or(())?;
                dst.copy_from_slice(&whole[off..off + len]);
            }
            at += len;
        }
        Ok(())
    }

    /// Maps `gref` as blkback does and returns the page's content. Without persistent
    /// grants the mapping is read-only if `ro` and lasts for the request (a writable grant
    /// is needed unless `ro`); with them it is always writable (a read-only grant fails)
    /// and lasts until the backend disconnects, for the first [`MAX_PGRANTS`] grants.
    fn map(&mut self, gref: GrantRef, ro: bool) -> Result<Vec<u8>, ()> {
        let g = self.grants.get(&gref.0).ok_or(())?;
        let writable = self.persistent || !ro;
        if g.domid != DomId(BACKEND) || (writable && g.readonly) {
            return Err(());
        }
        if self.persistent && (self.held.contains(&gref.0) || self.held.len() < MAX_PGRANTS) {
            self.held.insert(gref.0);
        } else {
            self.transient_maps += 1;
        }
        Ok(g.read())
    }

    /// The backend maps the ring the frontend published, as blkback does at Initialised:
    /// every reference writable to us, in page order of one ring (the fake's stand-in for
    /// mapping them contiguously).
    fn connect_ring(&mut self, refs: &[u32]) -> bool {
        let grants: Option<Vec<&Grant>> = refs.iter().map(|r| self.grants.get(r)).collect();
        let Some(grants) = grants else { return false };
        let Some(first) = grants.first() else { return false };
        let ok = grants.iter().enumerate().all(|(i, g)| {
            !g.readonly
                && g.domid == DomId(BACKEND)
                && Rc::ptr_eq(&g.mem, &first.mem)
                && g.page == i
        });
        if !ok || first.mem.1 != refs.len() {
            return false;
        }
        self.ring = Some(first.mem.clone());
        true
    }
}

pub struct TestPages(pub Shared);

impl Grants for TestPages {
    type Page = TestPage;

    fn alloc_page(&mut self) -> Option<TestPage> {
        let mut w = self.0.borrow_mut();
        if w.frames.len() >= w.page_limit {
            return None;
        }
        let mem = Mem::new(1);
        // Garbage, as a recycled page would hold: the driver must overwrite it.
        mem.write(0, &[0xee; PAGE_SIZE]);
        w.frames.insert(mem.frame(), mem.clone());
        Some(TestPage(mem))
    }

    fn free_page(&mut self, page: TestPage) {
        let mut w = self.0.borrow_mut();
        let frame = page.frame();
        assert!(!w.grants.values().any(|g| g.frame() == frame), "page freed while still granted");
        w.frames.remove(&frame).expect("freeing a page twice");
        w.pages_freed += 1;
    }

    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError> {
        let mut w = self.0.borrow_mut();
        let mem = w.frames.get(&frame).expect("granting a page we never gave out").clone();
        assert!(!w.grants.values().any(|g| g.frame() == frame), "page granted twice");
        if w.grants.len() >= w.grant_limit {
            return Err(GrantError::Exhausted);
        }
        let page = (frame - mem.frame()) as usize;
        let r = w.next_gref;
        w.next_gref += 1;
        w.grants.insert(r, Grant { mem, page, readonly, domid });
        Ok(GrantRef(r))
    }

    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        let mut w = self.0.borrow_mut();
        if w.held.contains(&gref.0) {
            return Err(GrantError::InUse(gref));
        }
        w.grants.remove(&gref.0).map(drop).ok_or(GrantError::NotGranted(gref))
    }
}

impl Pages for TestPages {
    type Ring = TestRing;

    /// `1 << order` contiguous pages, one grant each, as the guest builds a ring.
    fn alloc_ring(&mut self, backend: DomId, order: u32) -> Result<TestRing, BlkError> {
        let mut w = self.0.borrow_mut();
        w.ring_orders.push(order);
        if order > w.ring_order_limit {
            return Err(BlkError::NotSupported);
        }
        if w.frames.len() + (1 << order) > w.page_limit {
            return Err(BlkError::NoMemory);
        }
        let mem = Mem::new(1 << order);
        // SAFETY: the pages are page-aligned and contiguous, and `TestRing` keeps them
        // alive as long as the ring; within this domain only the ring touches them (the
        // fake backend plays the other domain).
        let front = unsafe { FrontRing::new(mem.0, mem.1) };
        for f in mem.frames() {
            w.frames.insert(f, mem.clone());
        }
        drop(w);
        let refs = mem.frames().map(|f| self.grant(f, backend, false)).collect::<Result<_, _>>()?;
        Ok(TestRing { front, refs, _mem: mem })
    }

    fn free_ring(&mut self, ring: TestRing) {
        for r in &ring.refs {
            self.end_grant(*r).expect("ring grant");
        }
        let mut w = self.0.borrow_mut();
        for f in ring._mem.frames() {
            w.frames.remove(&f);
        }
        w.ring_freed = true;
    }
}

pub struct TestEvtchn(pub Shared);

impl EventChannel for TestEvtchn {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, BlkError> {
        assert_eq!(remote, DomId(BACKEND));
        Ok(PORT)
    }

    fn notify(&mut self, port: u32) {
        assert_eq!(port, PORT);
        self.0.borrow_mut().notifies += 1;
    }

    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout> {
        assert_eq!(port, PORT);
        let mut w = self.0.borrow_mut();
        if w.serve() > 0 {
            w.now += 1_000;
            Ok(())
        } else {
            w.now = w.now.max(deadline_ns);
            Err(Timeout)
        }
    }

    fn now_ns(&self) -> u64 {
        self.0.borrow().now
    }

    fn backend_closing(&mut self) -> bool {
        self.0.borrow().backend_closing
    }

    fn close(&mut self, port: u32) {
        assert_eq!(port, PORT);
        self.0.borrow_mut().port_closed = true;
    }
}

pub type Driver = Blkfront<TestPages, TestEvtchn>;

fn state_of(fake: &Fake, path: &str) -> Option<u32> {
    std::str::from_utf8(fake.get(path)?).ok()?.parse().ok()
}

/// The toolstack's keys for the device, and the backend's initial state.
pub fn plug(fake: &mut Fake) {
    let (fe, be) = (frontend_path(), backend_path());
    fake.set(&format!("{fe}/backend"), be.as_bytes());
    fake.set(&format!("{fe}/backend-id"), format!("{BACKEND}").as_bytes());
    fake.set(&format!("{fe}/state"), b"1");
    fake.set(&format!("{be}/state"), b"1");
}

/// Blkback's side of the handshake, one step per idle round of xenstored: InitWait with
/// its features, then at our Initialised it maps the ring, checks the event channel,
/// writes the disk's keys (`disk`, written as given) and connects; it follows us to Closed.
pub fn blkback(world: Shared, disk: Vec<(String, String)>) -> Idle {
    Box::new(move |fake: &mut Fake| {
        let (fe, be) = (frontend_path(), backend_path());
        let (Some(f), Some(b)) =
            (state_of(fake, &format!("{fe}/state")), state_of(fake, &format!("{be}/state")))
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
                let read = |k: &str| state_of(fake, &format!("{fe}/{k}"));
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
                let ok = read("event-channel") == Some(PORT)
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
                    w.held.clear();
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
    let mut keys: BTreeMap<String, String> = [
        ("sectors", "4096"),
        ("sector-size", "512"),
        ("info", "0"),
        ("feature-flush-cache", "1"),
        ("feature-discard", "1"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    keys.retain(|_, v| v != "-");
    keys.into_iter().collect()
}

/// Everything a test needs.
pub struct Rig {
    pub xs: Client,
    pub store: Arc<Mutex<Fake>>,
    pub world: Shared,
}

impl Rig {
    /// The fakes, with the device plugged and blkback ready to serve `disk` keys.
    pub fn new(extra: &[(&str, &str)]) -> Self {
        let (xs, store) = xenstored::setup();
        let keys = disk_keys(extra);
        let sectors: usize = keys
            .iter()
            .find(|(k, _)| k == "sectors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(4096);
        let world = World::new(sectors.min(1 << 16) * 512);
        let indirect: usize = keys
            .iter()
            .find(|(k, _)| k == "feature-max-indirect-segments")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        world.borrow_mut().max_indirect = indirect.min(MAX_INDIRECT_SEGMENTS);
        {
            let mut s = store.lock().unwrap();
            plug(&mut s);
            s.on_idle = Some(blkback(world.clone(), keys));
        }
        Rig { xs, store, world }
    }

    pub fn connect(&mut self) -> Result<Driver, BlkError> {
        let (p, e) = (TestPages(self.world.clone()), TestEvtchn(self.world.clone()));
        Blkfront::connect(&mut self.xs, VBD, p, e, SECOND)
    }

    /// A rig and a connected driver.
    pub fn connected(extra: &[(&str, &str)]) -> (Self, Driver) {
        let mut rig = Rig::new(extra);
        let blk = rig.connect().expect("handshake");
        (rig, blk)
    }

    pub fn w(&self) -> std::cell::RefMut<'_, World> {
        self.world.borrow_mut()
    }

    pub fn store_get(&self, key: &str) -> Option<String> {
        let s = self.store.lock().unwrap();
        s.get(key).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The disk's initial content at `[at, at + len)`.
/// Writes fresh data of each length at each sector and reads it back, then checks that the
/// fake disk holds exactly what was written and no granted page held another request's data.
/// `mul` varies the data between callers.
pub fn round_trips(rig: &Rig, blk: &mut Driver, lengths: &[usize], sectors: &[u64], mul: u8) {
    use blkfront::BlockDevice;
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

pub fn pattern(at: usize, len: usize) -> Vec<u8> {
    (at..at + len).map(|i| ((i / 512) as u8) ^ (i as u8).wrapping_mul(7)).collect()
}
