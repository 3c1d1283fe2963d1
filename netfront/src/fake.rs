//! A fake netback for the host tests and the fuzz targets (feature `test-utils`): a
//! [`World`] that plays netback (the back ends of both rings, frames in and out, its side of
//! the handshake through the fake xenstored) over the frontend core's fake guest ([`Env`]),
//! with the knobs a test turns to make it misbehave.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use frontend::fake::{
    any_nonzero, extend_cycle, FakeDevice, FakeEnv, FakeGrantTable, FakePorts, SharedMem,
};
use grant::{DomId, GrantRef};
use ring::shared::{ring_size, Pod};
use xenbus::fake::{self as xenstored, Client, Fake, Idle};

use crate::abi::{
    Extra, NetifExtraInfo, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse,
    RxFlags, TxFlags, GSO_TYPE_TCPV4, RSP_NULL, RSP_OKAY,
};
use crate::env::PAGE_SIZE;
use crate::{NetError, Netfront};

/// The backend's domain.
pub const BACKEND: u16 = 0;
/// `device/vif/<VIF>`.
pub const VIF: u32 = 0;
/// The first port our fake event channels hand out; the next ones follow.
pub const PORT: u32 = frontend::fake::FIRST_PORT;
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

const _: () = assert!(ring_size::<NetifTxRequest, NetifTxResponse>(1) as usize == RING_SIZE);
const _: () = assert!(ring_size::<NetifRxRequest, NetifRxResponse>(1) as usize == RING_SIZE);

/// The backend's ring state and counters, over the guest's fake pages and ports.
pub struct World {
    /// The guest's pages and grants, with the backend's mappings (`table.held`).
    pub table: FakeGrantTable,
    /// The guest's event channels.
    pub ports: FakePorts,
    /// Backend features written at InitWait.
    pub features: Vec<(String, String)>,
    /// The rings, once the backend connected to them.
    tx_ring: Option<Rc<SharedMem>>,
    rx_ring: Option<Rc<SharedMem>>,
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
    /// Frames the guest sent, as the backend assembled them (blank checksums completed, large
    /// segments cut, as netback and a NIC would).
    pub sent: VecDeque<Vec<u8>>,
    /// Frames the guest sent with a blank checksum, and large segments (GSO) among them.
    pub csum_blank: usize,
    pub gso_frames: usize,
    /// Frames to deliver to the guest, oldest first.
    pub to_guest: VecDeque<RxFrame>,
    /// Granted pages seen holding bytes the backend never had: neither zeros nor what the
    /// page held when it last wrote or read it, outside the frame (transmit) or anywhere
    /// (receive).
    pub exposed: usize,
    /// What each page (by frame) held when the backend last wrote or read it.
    seen: std::collections::HashMap<u64, Vec<u8>>,
}

pub type Shared = Rc<RefCell<World>>;

/// The guest's pages, grants and event channels, as the driver sees them.
pub type Env = FakeEnv<World>;

frontend::fake_backend!(World);

/// Slot `idx` of a one-page ring of these types, read or written by the backend.
fn get<Req: Pod, Rsp: Pod, T: Pod>(ring: &SharedMem, idx: u32) -> T {
    ring.get(ring.slot::<Req, Rsp>(idx))
}

fn put<Req: Pod, Rsp: Pod, T: Pod>(ring: &SharedMem, idx: u32, value: T) {
    ring.put(ring.slot::<Req, Rsp>(idx), value)
}

impl World {
    fn new() -> Shared {
        Rc::new(RefCell::new(World {
            table: FakeGrantTable::default(),
            ports: FakePorts::new(DomId(BACKEND)),
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
            csum_blank: 0,
            gso_frames: 0,
            to_guest: VecDeque::new(),
            exposed: 0,
            seen: std::collections::HashMap::new(),
        }))
    }

    /// Pages allocated and not freed (the rings' included).
    pub fn pages_out(&self) -> usize {
        self.table.pages_out()
    }

    fn tx(&self) -> Rc<SharedMem> {
        self.tx_ring.clone().expect("backend not connected")
    }

    fn rx(&self) -> Rc<SharedMem> {
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
        let prod = ring.word(0).load(Ordering::Acquire);
        // As netback's check: more than a ring's worth published is a corrupt ring (here, one
        // the test's hostile steps overwrote), and nothing is taken.
        if prod.wrapping_sub(self.tx_req_cons) as usize > RING_SIZE {
            return Vec::new();
        }
        let mut out = Vec::new();
        while self.tx_req_cons != prod {
            let req = get::<NetifTxRequest, NetifTxResponse, _>(&ring, self.tx_req_cons);
            self.tx_req_cons = self.tx_req_cons.wrapping_add(1);
            self.tx_requests.push(req);
            out.push(req);
        }
        out
    }

    /// Answers every published transmit request, assembling frames as netback does: an
    /// extra-info slot after a frame's first request (its GSO size) is answered
    /// `NETIF_RSP_NULL` with an id that names another request in flight, which a frontend
    /// must not take for that request's answer.
    pub fn serve_tx(&mut self) -> usize {
        // Not connected (a hostile handshake may have said Connected for it): nothing to serve.
        if self.hold_tx || self.tx_ring.is_none() {
            return 0;
        }
        let start = self.tx_req_cons;
        let reqs = self.take_tx();
        let ring = self.tx();
        self.arm(&ring, self.tx_req_cons);
        let mut frame: Option<TxFrame> = None;
        let mut extra_next = false;
        for (i, req) in reqs.iter().enumerate() {
            let status = self.tx_status;
            if extra_next {
                let extra: NetifExtraInfo =
                    get::<NetifTxRequest, NetifTxResponse, _>(&ring, start.wrapping_add(i as u32));
                extra_next = extra.more();
                if let (Ok(Extra::Gso { size, ty, .. }), Some(f)) = (extra.decode(), &mut frame) {
                    assert_eq!(ty, GSO_TYPE_TCPV4);
                    f.gso_size = Some(usize::from(size));
                }
                let id = reqs.get(i + 1).map_or(0, |r| r.id);
                self.respond_tx(NetifTxResponse { id, status: RSP_NULL });
            } else {
                let flags = TxFlags::from_bits_retain(req.flags);
                let data = self.read_tx(req, frame.is_none());
                let f = frame.get_or_insert_with(|| TxFrame {
                    data: Vec::new(),
                    total: req.size as usize,
                    flags,
                    gso_size: None,
                    last_in: false,
                });
                f.data.extend_from_slice(&data);
                f.last_in = !flags.contains(TxFlags::MORE_DATA);
                extra_next = f.data.len() == data.len() && flags.contains(TxFlags::EXTRA_INFO);
                self.respond_tx(NetifTxResponse { id: req.id, status });
            }
            if !extra_next && frame.as_ref().is_some_and(|f| f.last_in) {
                let f = frame.take().unwrap();
                assert_eq!(f.data.len(), f.total, "first slot's size is the frame's");
                self.take_sent(f);
            }
        }
        if !reqs.is_empty() {
            self.publish_tx();
        }
        reqs.len()
    }

    /// A frame the guest sent, as it reaches the wire: a blank checksum completed from the
    /// seed the guest left, as a NIC does, and a large segment cut into the GSO size.
    fn take_sent(&mut self, f: TxFrame) {
        let mut data = f.data;
        if f.flags.contains(TxFlags::CSUM_BLANK) {
            self.csum_blank += 1;
            assert!(f.flags.contains(TxFlags::DATA_VALIDATED), "blank is also validated");
            complete_checksum(&mut data);
        }
        match f.gso_size {
            Some(mss) => {
                assert!(f.flags.contains(TxFlags::CSUM_BLANK), "a GSO frame's checksum is blank");
                self.gso_frames += 1;
                self.sent.extend(segment(&data, mss));
            }
            None => self.sent.push_back(data),
        }
    }

    /// One slot's data, read through its grant, checked as netback would. The first slot
    /// of a frame holds what the later ones do not: its size is the frame's.
    fn read_tx(&mut self, req: &NetifTxRequest, first: bool) -> Vec<u8> {
        let g = self.table.grants.get(&req.gref.0).expect("tx request names no grant");
        assert!(g.readonly, "tx pages are granted read-only");
        assert_eq!(g.domid, DomId(BACKEND));
        let len = if first {
            (req.size as usize).min(PAGE_SIZE - req.offset as usize)
        } else {
            req.size as usize
        };
        let off = req.offset as usize;
        let seen = self.seen.get(&g.frame());
        let (exposed, data, whole) = g.view(|page| {
            // Outside the frame, a byte is zero or what the page held when we last had it.
            let new_to_us = |i: usize| page[i] != 0 && seen.is_none_or(|s| s[i] != page[i]);
            let exposed = (0..off).chain(off + len..PAGE_SIZE).any(new_to_us);
            (exposed, page[off..off + len].to_vec(), page.to_vec())
        });
        self.seen.insert(g.frame(), whole);
        self.exposed += usize::from(exposed);
        data
    }

    /// Writes a transmit response without publishing it.
    pub fn respond_tx(&mut self, rsp: NetifTxResponse) {
        put::<NetifTxRequest, NetifTxResponse, _>(&self.tx(), self.tx_rsp_prod, rsp);
        self.tx_rsp_prod = self.tx_rsp_prod.wrapping_add(1);
    }

    pub fn publish_tx(&self) {
        self.set_tx_rsp_prod(self.tx_rsp_prod);
    }

    /// Publishes any transmit `rsp_prod`, true or not.
    pub fn set_tx_rsp_prod(&self, v: u32) {
        self.tx().word(8).store(v, Ordering::Release);
    }

    // Receive ring.

    /// Receive requests published and not yet taken.
    pub fn rx_available(&self) -> u32 {
        let prod = self.rx_ring.as_ref().map_or(0, |r| r.word(0).load(Ordering::Acquire));
        // More than a ring's worth is a corrupt ring: nothing to take.
        let available = prod.wrapping_sub(self.rx_req_cons);
        if available as usize > RING_SIZE {
            0
        } else {
            available
        }
    }

    /// Takes the next posted receive request.
    pub fn take_rx(&mut self) -> Option<NetifRxRequest> {
        if self.rx_available() == 0 {
            return None;
        }
        let req = get::<NetifRxRequest, NetifRxResponse, _>(&self.rx(), self.rx_req_cons);
        self.rx_req_cons = self.rx_req_cons.wrapping_add(1);
        Some(req)
    }

    /// Delivers queued frames while the guest posted enough buffers for the next one.
    pub fn serve_rx(&mut self) -> usize {
        if self.rx_ring.is_none() {
            return 0;
        }
        let mut slots = 0;
        while let Some(f) = self.to_guest.front() {
            let pieces = f.pieces();
            let needed = pieces.len() + f.extras.len();
            if self.rx_available() < needed as u32 {
                // Starved: ask to be told when the guest posts more, as netback does.
                let ring = self.rx();
                let prod = ring.word(0).load(Ordering::Acquire);
                ring.word(4).store(prod.wrapping_add(1), Ordering::SeqCst);
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
    fn arm(&self, ring: &SharedMem, req_cons: u32) {
        ring.word(4).store(req_cons.wrapping_add(1), Ordering::SeqCst);
    }

    /// Copies `data` into the receive buffer `gref` at `offset`, as a grant copy would;
    /// counts an exposure if the buffer held anything but zeros or what the backend last
    /// had of that page.
    pub fn write_rx(&mut self, gref: GrantRef, offset: usize, data: &[u8]) {
        let g = self.table.grants.get(&gref.0).expect("rx request names no grant");
        assert!(!g.readonly, "rx buffers are granted writable");
        assert_eq!(g.domid, DomId(BACKEND));
        let frame = g.frame();
        let seen = self.seen.get(&frame);
        let exposed = g.view(|page| any_nonzero(page) && seen.is_none_or(|s| s[..] != page[..]));
        g.write(offset, data);
        self.seen.insert(frame, g.view(|page| page.to_vec()));
        self.exposed += usize::from(exposed);
    }

    /// Writes a receive response without publishing it.
    pub fn respond_rx(&mut self, rsp: NetifRxResponse) {
        put::<NetifRxRequest, NetifRxResponse, _>(&self.rx(), self.rx_rsp_prod, rsp);
        self.rx_rsp_prod = self.rx_rsp_prod.wrapping_add(1);
    }

    /// Writes an extra-info slot in the place of a receive response.
    pub fn respond_rx_extra(&mut self, extra: NetifExtraInfo) {
        put::<NetifRxRequest, NetifRxResponse, _>(&self.rx(), self.rx_rsp_prod, extra);
        self.rx_rsp_prod = self.rx_rsp_prod.wrapping_add(1);
    }

    pub fn publish_rx(&self) {
        self.set_rx_rsp_prod(self.rx_rsp_prod);
    }

    /// Publishes any receive `rsp_prod`, true or not.
    pub fn set_rx_rsp_prod(&self, v: u32) {
        self.rx().word(8).store(v, Ordering::Release);
    }

    /// The backend maps the rings the frontend published, as netback does when it sees
    /// Connected: each reference a writable grant to us of a ring page.
    fn connect_rings(&mut self, tx: u32, rx: u32) -> bool {
        let ring = |r: u32| {
            self.table
                .grants
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

pub type Driver = Netfront<Env, Env>;

/// Netback's side of the handshake, one step per idle round of xenstored: InitWait with
/// its features; at our Connected it checks our keys, maps the rings and connects; it
/// follows us to Closed.
pub fn netback(world: Shared) -> Idle {
    Box::new(move |fake: &mut Fake| {
        let (fe, be) = (frontend_path(), backend_path());
        let (Some(f), Some(b)) =
            (fake.number(&format!("{fe}/state")), fake.number(&format!("{be}/state")))
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
                let read = |k: &str| fake.number(&format!("{fe}/{k}"));
                let ports: Vec<u32> = {
                    let w = world.borrow();
                    w.ports
                        .allocated
                        .iter()
                        .copied()
                        .filter(|p| !w.ports.gone.contains(p))
                        .collect()
                };
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
                w.table.held.clear();
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
    frontend::fake::backend_keys(
        &[
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
            ("feature-split-event-channels", "1"),
            ("multi-queue-max-queues", "2"),
        ],
        extra,
    )
}

/// Everything a test needs: the fakes, with the vif plugged (`Rig::new(extra)`: netback
/// offering `features(extra)`).
pub type Rig = frontend::fake::Rig<World>;

impl FakeDevice for World {
    type Driver = Driver;
    type Error = NetError;

    fn plug(store: &mut Fake, extra: &[(&str, &str)]) -> Shared {
        let world = World::new();
        Self::replug(&world, store, extra);
        world
    }

    /// `extra` may give the interface a new `mac` (the frontend's key, not the backend's).
    fn replug(world: &Shared, store: &mut Fake, extra: &[(&str, &str)]) {
        let mac = extra.iter().find(|(k, _)| *k == "mac").map_or(MAC, |(_, v)| v);
        {
            let mut w = world.borrow_mut();
            w.features = features(extra);
            (w.tx_ring, w.rx_ring) = (None, None);
            (w.tx_req_cons, w.tx_rsp_prod, w.rx_req_cons, w.rx_rsp_prod) = (0, 0, 0, 0);
        }
        store.remove(&frontend_path());
        store.remove(&backend_path());
        store.plug_device(&frontend_path(), &backend_path(), BACKEND, &[("mac", mac)]);
        store.on_idle = Some(netback(world.clone()));
    }

    fn connect(xs: &mut Client, env: Env) -> Result<Driver, NetError> {
        Netfront::connect(xs, VIF, env.clone(), env, SECOND)
    }
}

impl World {
    /// Queues `frame` for the guest and lets the backend deliver what it can.
    pub fn deliver(&mut self, frame: RxFrame) {
        self.to_guest.push_back(frame);
        self.serve_rx();
    }
}

/// An Ethernet frame of `len` bytes: our MAC as the destination, a made-up source and
/// type, then a pattern that differs at every byte and between seeds.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    static ONE_PERIOD: OnceLock<Vec<u8>> = OnceLock::new();
    let period = ONE_PERIOD.get_or_init(|| {
        (0..1usize << 16).map(|i| (i as u8).wrapping_mul(13) ^ (i >> 8) as u8).collect()
    });
    let mut f: Vec<u8> = MAC_BYTES.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, seed, 0x88, 0xb5]);
    // Each seed starts the pattern elsewhere.
    extend_cycle(&mut f, period, 14 + 251 * usize::from(seed), len.saturating_sub(14));
    f.truncate(len);
    f
}

/// A frame the guest is sending, while its slots come in.
struct TxFrame {
    data: Vec<u8>,
    /// The first slot's size: the frame's.
    total: usize,
    /// The first slot's flags.
    flags: TxFlags,
    gso_size: Option<usize>,
    /// The slot without `more_data` is in.
    last_in: bool,
}

/// Where an IPv4 frame's transport segment starts and ends (its IPv4 total length).
fn transport(frame: &[u8]) -> (usize, usize) {
    assert_eq!(frame[12..14], [0x08, 0x00], "a blank checksum is IPv4's");
    let ihl = usize::from(frame[14] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    (14 + ihl, 14 + total)
}

/// What a NIC does with `CHECKSUM_PARTIAL`: sums the segment with the seed in the field and
/// stores the complement.
fn complete_checksum(frame: &mut [u8]) {
    let (start, end) = transport(frame);
    let field = start + if frame[23] == 6 { 16 } else { 6 };
    let mut sum: u64 = frame[start..end]
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[field..field + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// What GSO makes of a large TCP segment whose checksum is complete: segments of `mss`
/// payload bytes, each with its own length, identification, sequence number and
/// checksums; PSH and FIN only on the last.
fn segment(frame: &[u8], mss: usize) -> Vec<Vec<u8>> {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    assert!(mss > 0);
    let (start, end) = transport(frame);
    {
        let ip = Ipv4Packet::new_checked(&frame[14..]).expect("GSO frame's IPv4");
        let tcp = TcpPacket::new_checked(&frame[start..end]).expect("GSO frame's TCP");
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
        assert!(ip.verify_checksum(), "GSO frame's IPv4 checksum");
        assert!(tcp.verify_checksum(&src, &dst), "GSO frame's seed");
    }
    let headers = start + usize::from(frame[start + 12] >> 4) * 4;
    let payload = &frame[headers..end];
    let chunks: Vec<&[u8]> = payload.chunks(mss).collect();
    let mut out = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        let mut f = frame[..headers].to_vec();
        f.extend_from_slice(chunk);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_total_len((headers - 14 + chunk.len()) as u16);
        ip.set_ident(ip.ident().wrapping_add(k as u16));
        ip.fill_checksum();
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
        let mut tcp = TcpPacket::new_unchecked(&mut f[start..]);
        tcp.set_seq_number(tcp.seq_number() + k * mss);
        if k + 1 < chunks.len() {
            tcp.set_psh(false);
            tcp.set_fin(false);
        }
        tcp.fill_checksum(&src, &dst);
        out.push(f);
    }
    out
}
