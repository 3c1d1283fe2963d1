//! The guest's side effects ([`Pages`], [`EventChannel`]) over a [`World`] that also plays
//! netback: a grant table mapping references to pages, and the back ends of both rings.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use grant::{DomId, GrantError, GrantRef, Grants};
use netfront::abi::{
    NetifExtraInfo, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, RxFlags,
    TxFlags, RSP_OKAY,
};
use netfront::env::PAGE_SIZE;
use netfront::{EventChannel, NetError, Netfront, Page, Pages, SharedRing};
use ring::shared::{ring_size, FrontRing, Pod, HEADER_SIZE};

use crate::xenstored::{self, Client, Fake, Idle};

/// The backend's domain.
pub const BACKEND: u16 = 0;
/// `device/vif/<VIF>`.
pub const VIF: u32 = 0;
/// The first port our fake event channels hand out; the next ones follow.
pub const PORT: u32 = 7;
/// Slots in each one-page ring.
pub const RING_SIZE: usize = 256;
/// The MAC the toolstack assigns.
pub const MAC: &str = "00:16:3e:5a:0b:1c";
pub const MAC_BYTES: [u8; 6] = [0x00, 0x16, 0x3e, 0x5a, 0x0b, 0x1c];
const SECOND: u64 = 1_000_000_000;

pub fn backend_path() -> String {
    format!("/local/domain/{BACKEND}/backend/vif/{}/{VIF}", xenstored::DOMID)
}

pub fn frontend_path() -> String {
    format!("device/vif/{VIF}")
}

/// One page-aligned page of memory: a guest page or a ring.
pub struct Mem(NonNull<u8>);

fn layout() -> Layout {
    Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).expect("page layout")
}

impl Mem {
    fn new() -> Rc<Self> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout()) };
        Rc::new(Mem(NonNull::new(p).expect("out of memory")))
    }

    /// The frame number the "backend" sees: the address, shifted.
    fn frame(&self) -> u64 {
        self.0.as_ptr() as u64 >> 12
    }

    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= PAGE_SIZE);
        let mut v = vec![0; len];
        // SAFETY: in bounds of the live page (checked above); no reference to the page is
        // alive during the copy (single thread, the driver is not running).
        unsafe { ptr::copy_nonoverlapping(self.0.as_ptr().add(off), v.as_mut_ptr(), len) };
        v
    }

    pub fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= PAGE_SIZE);
        // SAFETY: as in `read`.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.0.as_ptr().add(off), data.len()) };
    }

    /// One of the ring header's indices.
    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: one of the ring header's u32 fields, aligned and inside the live page;
        // the front ring accesses them atomically too.
        unsafe { &*self.0.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Slot `idx` of a one-page ring of `entry`-byte slots over this page.
    fn slot(&self, idx: u32, entry: usize) -> *mut u8 {
        let i = idx as usize % RING_SIZE;
        assert!(HEADER_SIZE + RING_SIZE * entry <= PAGE_SIZE);
        // SAFETY: slot `i` lies inside the page (checked above).
        unsafe { self.0.as_ptr().add(HEADER_SIZE + i * entry) }
    }

    /// Copies out the slot at `idx` as a `T`, once, as `RING_COPY_REQUEST` does.
    fn get<T: Pod>(&self, idx: u32, entry: usize) -> T {
        assert!(size_of::<T>() <= entry && entry.is_multiple_of(align_of::<T>()));
        // SAFETY: a slot of the live ring; `T` fits it and is aligned in it (slots are
        // multiples of its alignment after a 64-byte header, checked above), and is Pod.
        unsafe { ptr::read_volatile(self.slot(idx, entry).cast::<T>()) }
    }

    fn put<T: Pod>(&self, idx: u32, entry: usize, value: T) {
        assert!(size_of::<T>() <= entry && entry.is_multiple_of(align_of::<T>()));
        // SAFETY: as in `get`.
        unsafe { ptr::write_volatile(self.slot(idx, entry).cast::<T>(), value) };
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.0.as_ptr(), layout()) };
    }
}

/// A page as the guest would hand it out.
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

pub struct TestRing<Req: Pod, Rsp: Pod> {
    front: FrontRing<Req, Rsp>,
    gref: GrantRef,
    /// Keeps the ring's memory alive as long as `front` exists.
    mem: Rc<Mem>,
}

impl<Req: Pod, Rsp: Pod> SharedRing<Req, Rsp> for TestRing<Req, Rsp> {
    fn front(&mut self) -> &mut FrontRing<Req, Rsp> {
        &mut self.front
    }

    fn grant_ref(&self) -> GrantRef {
        self.gref
    }
}

pub struct Grant {
    pub mem: Rc<Mem>,
    pub readonly: bool,
    domid: DomId,
}

/// How the backend delivers one frame to the guest.
#[derive(Clone, Debug)]
pub struct RxFrame {
    pub data: Vec<u8>,
    /// Flags of the first slot besides `more_data` and `extra_info`.
    pub flags: RxFlags,
    /// Extra-info slots after the first data slot.
    pub extras: Vec<NetifExtraInfo>,
    /// Bytes per data slot at most.
    pub chunk: usize,
    /// Where the data starts in the first page.
    pub offset: usize,
}

impl RxFrame {
    pub fn new(data: Vec<u8>) -> Self {
        RxFrame { data, flags: RxFlags::empty(), extras: Vec::new(), chunk: PAGE_SIZE, offset: 0 }
    }

    /// The data slots it takes: `(offset, len)` each.
    fn pieces(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let (mut at, mut offset) = (0, self.offset);
        loop {
            let n = (self.data.len() - at).min(self.chunk).min(PAGE_SIZE - offset);
            out.push((offset, n));
            at += n;
            offset = 0;
            if at == self.data.len() {
                return out;
            }
        }
    }
}

/// Bytes per slot of each ring: the larger of its request and response.
const TX_SLOT: usize = 12;
const RX_SLOT: usize = 8;
const _: () = assert!(ring_size::<NetifTxRequest, NetifTxResponse>(1) as usize == RING_SIZE);
const _: () = assert!(ring_size::<NetifRxRequest, NetifRxResponse>(1) as usize == RING_SIZE);

/// The grant table, the backend's ring state and counters.
pub struct World {
    /// Every page allocated and not freed, by frame.
    frames: HashMap<u64, Rc<Mem>>,
    pub grants: BTreeMap<u32, Grant>,
    next_gref: u32,
    /// Grants the backend keeps mapped: ending them fails with `InUse`.
    pub held: HashSet<u32>,
    /// `alloc_page` fails once this many pages are out.
    pub page_limit: usize,
    pub pages_freed: usize,
    pub rings_freed: usize,
    /// `alloc_unbound` fails once this many ports are out.
    pub port_limit: usize,
    pub ports: Vec<u32>,
    pub ports_closed: Vec<u32>,
    /// Notifications per port.
    pub notifies: BTreeMap<u32, usize>,
    /// Backend features written at InitWait.
    pub features: Vec<(String, String)>,
    /// The rings, once the backend connected to them.
    tx_ring: Option<Rc<Mem>>,
    rx_ring: Option<Rc<Mem>>,
    tx_req_cons: u32,
    tx_rsp_prod: u32,
    rx_req_cons: u32,
    rx_rsp_prod: u32,
    /// Netback goes Closing instead of Connected at our Connected.
    pub refuse_connect: bool,
    /// Transmit requests stay on the ring unanswered while set.
    pub hold_tx: bool,
    /// The status every transmit response gets.
    pub tx_status: i16,
    /// Every transmit request taken off the ring.
    pub tx_requests: Vec<NetifTxRequest>,
    /// Frames the guest sent, as the backend assembled them.
    pub sent: VecDeque<Vec<u8>>,
    /// Frames to deliver to the guest, oldest first.
    pub to_guest: VecDeque<RxFrame>,
    /// Granted pages seen holding bytes that were not the frame's.
    pub exposed: usize,
}

pub type Shared = Rc<RefCell<World>>;

impl World {
    fn new() -> Shared {
        Rc::new(RefCell::new(World {
            frames: HashMap::new(),
            grants: BTreeMap::new(),
            next_gref: 8,
            held: HashSet::new(),
            page_limit: usize::MAX,
            pages_freed: 0,
            rings_freed: 0,
            port_limit: usize::MAX,
            ports: Vec::new(),
            ports_closed: Vec::new(),
            notifies: BTreeMap::new(),
            features: Vec::new(),
            tx_ring: None,
            rx_ring: None,
            tx_req_cons: 0,
            tx_rsp_prod: 0,
            rx_req_cons: 0,
            rx_rsp_prod: 0,
            refuse_connect: false,
            hold_tx: false,
            tx_status: RSP_OKAY,
            tx_requests: Vec::new(),
            sent: VecDeque::new(),
            to_guest: VecDeque::new(),
            exposed: 0,
        }))
    }

    /// Pages allocated and not freed (the rings' included).
    pub fn pages_out(&self) -> usize {
        self.frames.len()
    }

    fn tx(&self) -> Rc<Mem> {
        self.tx_ring.clone().expect("backend not connected")
    }

    fn rx(&self) -> Rc<Mem> {
        self.rx_ring.clone().expect("backend not connected")
    }

    /// Serves both rings: answers the guest's frames, delivers queued frames to it while it
    /// has posted buffers enough. Returns how many slots it answered.
    pub fn serve(&mut self) -> usize {
        self.serve_tx() + self.serve_rx()
    }

    // Transmit ring.

    /// Takes every published transmit request off the ring without answering.
    pub fn take_tx(&mut self) -> Vec<NetifTxRequest> {
        let Some(ring) = self.tx_ring.clone() else { return Vec::new() };
        let prod = ring.index(0).load(Ordering::Acquire);
        let mut out = Vec::new();
        while self.tx_req_cons != prod {
            let req: NetifTxRequest = ring.get(self.tx_req_cons, TX_SLOT);
            self.tx_req_cons = self.tx_req_cons.wrapping_add(1);
            self.tx_requests.push(req);
            out.push(req);
        }
        out
    }

    /// Answers every published transmit request, assembling frames as netback does.
    pub fn serve_tx(&mut self) -> usize {
        if self.hold_tx {
            return 0;
        }
        let reqs = self.take_tx();
        self.arm(&self.tx(), self.tx_req_cons);
        let mut frame: Option<(Vec<u8>, usize)> = None;
        for req in &reqs {
            let flags = TxFlags::from_bits_retain(req.flags);
            let data = self.read_tx(req, &frame);
            let (buf, total) = frame.get_or_insert_with(|| (Vec::new(), req.size as usize));
            buf.extend_from_slice(&data);
            let total = *total;
            if !flags.contains(TxFlags::MORE_DATA) {
                let (buf, _) = frame.take().unwrap();
                assert_eq!(buf.len(), total, "first slot's size is the frame's");
                self.sent.push_back(buf);
            }
            let status = self.tx_status;
            self.respond_tx(NetifTxResponse { id: req.id, status });
        }
        if !reqs.is_empty() {
            self.publish_tx();
        }
        reqs.len()
    }

    /// One slot's data, read through its grant, checked as netback would. The first slot
    /// of a frame holds what the later ones do not: its size is the frame's.
    fn read_tx(&mut self, req: &NetifTxRequest, frame: &Option<(Vec<u8>, usize)>) -> Vec<u8> {
        let g = self.grants.get(&req.gref.0).expect("tx request names no grant");
        assert!(g.readonly, "tx pages are granted read-only");
        assert_eq!(g.domid, DomId(BACKEND));
        let len = match frame {
            None => (req.size as usize).min(PAGE_SIZE - req.offset as usize),
            Some(_) => req.size as usize,
        };
        let off = req.offset as usize;
        let page = g.mem.read(0, PAGE_SIZE);
        if page[..off].iter().chain(&page[off + len..]).any(|&b| b != 0) {
            self.exposed += 1;
        }
        page[off..off + len].to_vec()
    }

    /// Writes a transmit response without publishing it.
    pub fn respond_tx(&mut self, rsp: NetifTxResponse) {
        self.tx().put(self.tx_rsp_prod, TX_SLOT, rsp);
        self.tx_rsp_prod = self.tx_rsp_prod.wrapping_add(1);
    }

    pub fn publish_tx(&self) {
        self.set_tx_rsp_prod(self.tx_rsp_prod);
    }

    /// Publishes any transmit `rsp_prod`, true or not.
    pub fn set_tx_rsp_prod(&self, v: u32) {
        self.tx().index(8).store(v, Ordering::Release);
    }

    // Receive ring.

    /// Receive requests published and not yet taken.
    pub fn rx_available(&self) -> u32 {
        let prod = self.rx_ring.as_ref().map_or(0, |r| r.index(0).load(Ordering::Acquire));
        prod.wrapping_sub(self.rx_req_cons)
    }

    /// Takes the next posted receive request.
    pub fn take_rx(&mut self) -> Option<NetifRxRequest> {
        if self.rx_available() == 0 {
            return None;
        }
        let req = self.rx().get(self.rx_req_cons, RX_SLOT);
        self.rx_req_cons = self.rx_req_cons.wrapping_add(1);
        Some(req)
    }

    /// Delivers queued frames while the guest posted enough buffers for the next one.
    pub fn serve_rx(&mut self) -> usize {
        let mut slots = 0;
        while let Some(f) = self.to_guest.front() {
            let pieces = f.pieces();
            let needed = pieces.len() + f.extras.len();
            if self.rx_available() < needed as u32 {
                // Starved: ask to be told when the guest posts more, as netback does.
                let ring = self.rx();
                let prod = ring.index(0).load(Ordering::Acquire);
                ring.index(4).store(prod.wrapping_add(1), Ordering::SeqCst);
                break;
            }
            let f = self.to_guest.pop_front().unwrap();
            for (i, &(offset, len)) in pieces.iter().enumerate() {
                let req = self.take_rx().unwrap();
                let at: usize = pieces[..i].iter().map(|p| p.1).sum();
                self.write_rx(req.gref, offset, &f.data[at..at + len]);
                let mut flags = if i == 0 { f.flags } else { RxFlags::empty() };
                flags.set(RxFlags::MORE_DATA, i + 1 < pieces.len());
                flags.set(RxFlags::EXTRA_INFO, i == 0 && !f.extras.is_empty());
                self.respond_rx(NetifRxResponse {
                    id: req.id,
                    offset: offset as u16,
                    flags: flags.bits(),
                    status: len as i16,
                });
                if i == 0 {
                    // Extras go right after the first data slot, each using up a request.
                    for x in &f.extras {
                        self.take_rx().unwrap();
                        self.respond_rx_extra(*x);
                    }
                }
            }
            slots += needed;
        }
        if slots > 0 {
            self.publish_rx();
        }
        slots
    }

    /// Asks to be notified of the next request, as `RING_FINAL_CHECK_FOR_REQUESTS` does.
    fn arm(&self, ring: &Mem, req_cons: u32) {
        ring.index(4).store(req_cons.wrapping_add(1), Ordering::SeqCst);
    }

    /// Copies `data` into the receive buffer `gref` at `offset`, as a grant copy would;
    /// counts an exposure if the buffer held anything but zeros.
    pub fn write_rx(&mut self, gref: GrantRef, offset: usize, data: &[u8]) {
        let g = self.grants.get(&gref.0).expect("rx request names no grant");
        assert!(!g.readonly, "rx buffers are granted writable");
        assert_eq!(g.domid, DomId(BACKEND));
        let exposed = g.mem.read(0, PAGE_SIZE).iter().any(|&b| b != 0);
        g.mem.write(offset, data);
        self.exposed += usize::from(exposed);
    }

    /// Writes a receive response without publishing it.
    pub fn respond_rx(&mut self, rsp: NetifRxResponse) {
        self.rx().put(self.rx_rsp_prod, RX_SLOT, rsp);
        self.rx_rsp_prod = self.rx_rsp_prod.wrapping_add(1);
    }

    /// Writes an extra-info slot in the place of a receive response.
    pub fn respond_rx_extra(&mut self, extra: NetifExtraInfo) {
        self.rx().put(self.rx_rsp_prod, RX_SLOT, extra);
        self.rx_rsp_prod = self.rx_rsp_prod.wrapping_add(1);
    }

    pub fn publish_rx(&self) {
        self.set_rx_rsp_prod(self.rx_rsp_prod);
    }

    /// Publishes any receive `rsp_prod`, true or not.
    pub fn set_rx_rsp_prod(&self, v: u32) {
        self.rx().index(8).store(v, Ordering::Release);
    }

    /// The backend maps the rings the frontend published, as netback does when it sees
    /// Connected: each reference a writable grant to us of a ring page.
    fn connect_rings(&mut self, tx: u32, rx: u32) -> bool {
        let ring = |r: u32| {
            self.grants
                .get(&r)
                .filter(|g| !g.readonly && g.domid == DomId(BACKEND))
                .map(|g| g.mem.clone())
        };
        let (Some(t), Some(r)) = (ring(tx), ring(rx)) else { return false };
        if Rc::ptr_eq(&t, &r) {
            return false;
        }
        (self.tx_ring, self.rx_ring) = (Some(t), Some(r));
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
        let mem = Mem::new();
        // Garbage, as a recycled page would hold: the driver must overwrite it.
        mem.write(0, &[0xee; PAGE_SIZE]);
        w.frames.insert(mem.frame(), mem.clone());
        Some(TestPage(mem))
    }

    fn free_page(&mut self, page: TestPage) {
        let mut w = self.0.borrow_mut();
        let frame = page.frame();
        assert!(!w.grants.values().any(|g| g.mem.frame() == frame), "page freed while granted");
        w.frames.remove(&frame).expect("freeing a page twice");
        w.pages_freed += 1;
    }

    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError> {
        let mut w = self.0.borrow_mut();
        let mem = w.frames.get(&frame).expect("granting a page we never gave out").clone();
        assert!(!w.grants.values().any(|g| g.mem.frame() == frame), "page granted twice");
        let r = w.next_gref;
        w.next_gref += 1;
        w.grants.insert(r, Grant { mem, readonly, domid });
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
    type Ring<Req: Pod, Rsp: Pod> = TestRing<Req, Rsp>;

    fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        backend: DomId,
    ) -> Result<TestRing<Req, Rsp>, NetError> {
        let mut w = self.0.borrow_mut();
        if w.frames.len() >= w.page_limit {
            return Err(NetError::NoMemory);
        }
        let mem = Mem::new();
        // SAFETY: the page is page-aligned, and `TestRing` keeps it alive as long as the
        // ring; within this domain only the ring touches it (the fake backend plays the
        // other domain).
        let front = unsafe { FrontRing::new(mem.0, 1) };
        w.frames.insert(mem.frame(), mem.clone());
        drop(w);
        let gref = self.grant(mem.frame(), backend, false)?;
        Ok(TestRing { front, gref, mem })
    }

    fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: TestRing<Req, Rsp>) {
        self.end_grant(ring.gref).expect("ring grant");
        let mut w = self.0.borrow_mut();
        w.frames.remove(&ring.mem.frame());
        w.rings_freed += 1;
    }
}

pub struct TestEvtchn(pub Shared);

impl EventChannel for TestEvtchn {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, NetError> {
        assert_eq!(remote, DomId(BACKEND));
        let mut w = self.0.borrow_mut();
        if w.ports.len() >= w.port_limit {
            return Err(NetError::EventChannel);
        }
        let port = PORT + w.ports.len() as u32;
        w.ports.push(port);
        Ok(port)
    }

    fn notify(&mut self, port: u32) {
        let mut w = self.0.borrow_mut();
        assert!(w.ports.contains(&port) && !w.ports_closed.contains(&port));
        *w.notifies.entry(port).or_default() += 1;
    }

    fn close(&mut self, port: u32) {
        let mut w = self.0.borrow_mut();
        assert!(w.ports.contains(&port), "closing a port never allocated");
        assert!(!w.ports_closed.contains(&port), "closing a port twice");
        w.ports_closed.push(port);
    }
}

pub type Driver = Netfront<TestPages, TestEvtchn>;

fn state_of(fake: &Fake, path: &str) -> Option<u32> {
    std::str::from_utf8(fake.get(path)?).ok()?.parse().ok()
}

/// The toolstack's keys for the device, and the backend's initial state.
pub fn plug(fake: &mut Fake) {
    let (fe, be) = (frontend_path(), backend_path());
    fake.set(&format!("{fe}/backend"), be.as_bytes());
    fake.set(&format!("{fe}/backend-id"), format!("{BACKEND}").as_bytes());
    fake.set(&format!("{fe}/mac"), MAC.as_bytes());
    fake.set(&format!("{fe}/state"), b"1");
    fake.set(&format!("{be}/state"), b"1");
}

/// Netback's side of the handshake, one step per idle round of xenstored: InitWait with
/// its features; at our Connected it checks our keys, maps the rings and connects; it
/// follows us to Closed.
pub fn netback(world: Shared) -> Idle {
    Box::new(move |fake: &mut Fake| {
        let (fe, be) = (frontend_path(), backend_path());
        let (Some(f), Some(b)) =
            (state_of(fake, &format!("{fe}/state")), state_of(fake, &format!("{be}/state")))
        else {
            return false;
        };
        let next = match (f, b) {
            (_, 1) => {
                for (k, v) in &world.borrow().features {
                    fake.set(&format!("{be}/{k}"), v.as_bytes());
                }
                2
            }
            (4, 2) => {
                let read = |k: &str| state_of(fake, &format!("{fe}/{k}"));
                let ports = world.borrow().ports.clone();
                let ports_ok = match (read("event-channel"), read("event-channel-tx")) {
                    (Some(p), None) => ports == [p],
                    (None, Some(t)) => ports == [t, read("event-channel-rx").unwrap_or(0)],
                    _ => false,
                };
                let ok = ports_ok
                    && !world.borrow().refuse_connect
                    && read("request-rx-copy") == Some(1)
                    && match (read("tx-ring-ref"), read("rx-ring-ref")) {
                        (Some(t), Some(r)) => world.borrow_mut().connect_rings(t, r),
                        _ => false,
                    };
                if ok {
                    4
                } else {
                    5
                }
            }
            (5, 1..=4) => 5,
            (1, 6) => {
                // Ready for a fresh connection: new rings, indices from zero.
                let mut w = world.borrow_mut();
                (w.tx_req_cons, w.tx_rsp_prod, w.rx_req_cons, w.rx_rsp_prod) = (0, 0, 0, 0);
                2
            }
            (6, 5) => {
                // Unmaps everything as it disconnects.
                let mut w = world.borrow_mut();
                (w.tx_ring, w.rx_ring) = (None, None);
                w.held.clear();
                6
            }
            _ => return false,
        };
        fake.set(&format!("{be}/state"), format!("{next}").as_bytes());
        true
    })
}

/// Linux netback's features, plus `extra` (overriding). A key given the value `-` is left
/// out.
pub fn features(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut keys: BTreeMap<String, String> = [
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "1"),
        ("feature-ipv6-csum-offload", "1"),
        ("feature-split-event-channels", "1"),
        ("multi-queue-max-queues", "2"),
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
    /// The fakes, with the device plugged and netback ready to offer `features(extra)`.
    pub fn new(extra: &[(&str, &str)]) -> Self {
        let (xs, store) = xenstored::setup();
        let world = World::new();
        world.borrow_mut().features = features(extra);
        {
            let mut s = store.lock().unwrap();
            plug(&mut s);
            s.on_idle = Some(netback(world.clone()));
        }
        Rig { xs, store, world }
    }

    pub fn connect(&mut self) -> Result<Driver, NetError> {
        let (p, e) = (TestPages(self.world.clone()), TestEvtchn(self.world.clone()));
        Netfront::connect(&mut self.xs, VIF, p, e, SECOND)
    }

    /// A rig and a connected driver.
    pub fn connected(extra: &[(&str, &str)]) -> (Self, Driver) {
        let mut rig = Rig::new(extra);
        let net = rig.connect().expect("handshake");
        (rig, net)
    }

    pub fn w(&self) -> std::cell::RefMut<'_, World> {
        self.world.borrow_mut()
    }

    pub fn store_get(&self, key: &str) -> Option<String> {
        let s = self.store.lock().unwrap();
        s.get(key).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Queues `frame` for the guest and lets the backend deliver what it can.
    pub fn deliver(&self, frame: RxFrame) {
        let mut w = self.w();
        w.to_guest.push_back(frame);
        w.serve_rx();
    }

    pub fn serve(&self) -> usize {
        self.w().serve()
    }

    /// Notifications on `port` so far.
    pub fn notifies(&self, port: u32) -> usize {
        self.w().notifies.get(&port).copied().unwrap_or(0)
    }
}

/// An Ethernet frame of `len` bytes: our MAC as the destination, a made-up source and
/// type, then a pattern that differs at every byte and between seeds.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = MAC_BYTES.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, seed, 0x88, 0xb5]);
    f.extend((14..len).map(|i| (i as u8).wrapping_mul(13) ^ (i >> 8) as u8 ^ seed));
    f.truncate(len);
    f
}
