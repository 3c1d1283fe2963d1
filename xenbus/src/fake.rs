//! A fake xenstored on the other side of an in-memory xenstore page: it reads requests from
//! the `req` ring with its own `ring::byte` ends and answers from a small tree, with knobs
//! for the misbehaviour the client must survive.
//!
//! It runs synchronously: the client's `Transport::wait` calls [`Fake::step`], which plays
//! one round of xenstored (take requests, answer, push replies) and reports whether anything
//! happened, i.e. whether xenstored would have signalled the event channel.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;

use crate::client::{Timeout, Transport, Xenstore};
use crate::wire::interface::{REQ_RING, RSP_RING};
use crate::{XsType, XsdSockmsg};
use ring::byte::{Consumer, Producer};
use ring::fake::{Held, SharedMem};

/// The domain the client runs in, for permission checks.
pub const DOMID: u16 = 1;

/// Nanoseconds the clock advances per round in which xenstored did something.
const ROUND_NS: u64 = 1_000;

/// The xenstore page: the fake's and the client's, freed when both let go of it.
pub type Page = SharedMem;

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Vec<u8>,
    /// `(letter, domid)`; the first is the owner and everyone's default.
    pub perms: Vec<(u8, u16)>,
}

type Tree = BTreeMap<String, Node>;

struct Tx {
    tree: Tree,
    changed: Vec<String>,
}

/// A scripted change made when the client waits and xenstored has nothing to do: the
/// toolstack or a backend acting. Returns whether it changed anything.
pub type Idle = Box<dyn FnMut(&mut Fake) -> bool>;

pub struct Fake {
    pub page: Rc<Page>,
    req: Held<Consumer>,
    rsp: Held<Producer>,
    inbuf: Vec<u8>,
    outq: VecDeque<u8>,
    pub tree: Tree,
    watches: Vec<(String, String)>,
    txs: BTreeMap<u32, Tx>,
    next_tx: u32,
    pub now: u64,
    /// Every request header received, in order.
    pub requests: Vec<XsdSockmsg>,
    /// Answer each round's batch of requests last first.
    pub reverse: bool,
    /// At most this many reply bytes go on the ring per round.
    pub chunk: usize,
    /// Commits to refuse with EAGAIN.
    pub conflicts: u32,
    /// Requests read but not answered until `hold` is cleared.
    pub hold: bool,
    held: Vec<(XsdSockmsg, Vec<u8>)>,
    /// Replaces the type and payload of the next reply.
    pub forge_next: Option<(u32, Vec<u8>)>,
    pub on_idle: Option<Idle>,
}

/// One message as it goes on the ring.
pub fn msg(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let hdr = XsdSockmsg { ty, req_id, tx_id, len: payload.len() as u32 };
    let mut m = hdr.to_bytes().to_vec();
    m.extend_from_slice(payload);
    m
}

fn event(path: &str, token: &str) -> Vec<u8> {
    msg(XsType::WatchEvent as u32, 0, 0, format!("{path}\0{token}\0").as_bytes())
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

impl Fake {
    fn new(page: Rc<Page>) -> Self {
        // The fake is the only consumer of `req` and the only producer of `rsp`, the client
        // the other two.
        let (req, rsp) = (page.byte_consumer(REQ_RING), page.byte_producer(RSP_RING));
        Fake {
            page,
            req,
            rsp,
            inbuf: Vec::new(),
            outq: VecDeque::new(),
            tree: Tree::new(),
            watches: Vec::new(),
            txs: BTreeMap::new(),
            next_tx: 1,
            now: 0,
            requests: Vec::new(),
            reverse: false,
            chunk: usize::MAX,
            conflicts: 0,
            hold: false,
            held: Vec::new(),
            forge_next: None,
            on_idle: None,
        }
    }

    /// One round of xenstored; true if it did anything the client would be signalled for.
    pub fn step(&mut self) -> bool {
        let mut progress = self.take_requests();
        let mut out = Vec::new();
        if !self.hold {
            for (hdr, payload) in std::mem::take(&mut self.held) {
                out.extend(self.process(hdr, &payload));
            }
        }
        if self.reverse {
            out.reverse();
        }
        self.queue(out);
        progress |= self.push();
        if !progress {
            if let Some(mut idle) = self.on_idle.take() {
                progress = idle(self);
                self.on_idle = Some(idle);
                progress |= self.push();
            }
        }
        progress
    }

    /// A new xenstored on the same page, as after the guest is restored in a new domain:
    /// the store is the toolstack's (kept), but no watch, transaction, half-read request or
    /// unsent reply of the old connection survives.
    pub fn restart(&mut self) {
        self.watches.clear();
        self.txs.clear();
        self.inbuf.clear();
        self.outq.clear();
        self.held.clear();
    }

    /// Raw bytes for the `rsp` ring, sent in the next rounds.
    pub fn inject(&mut self, bytes: &[u8]) {
        self.outq.extend(bytes);
    }

    /// Messages for the `rsp` ring, in order. Slice by slice: extending the queue from a
    /// flattened iterator goes byte by byte, which made floods of events the fuzz target's
    /// slowest inputs.
    fn queue(&mut self, messages: Vec<Vec<u8>>) {
        for m in messages {
            self.outq.extend(&m);
        }
    }

    /// A write by dom0 (the toolstack, a backend): fires watches, creates parents; the nodes
    /// are ours to read and write unless `set_perms` says otherwise.
    pub fn set(&mut self, path: &str, value: &[u8]) {
        let events = write_node(&mut self.tree, path, value);
        for p in events {
            self.fire(&p);
        }
    }

    pub fn remove(&mut self, path: &str) {
        remove_subtree(&mut self.tree, path);
        self.fire_rm(path);
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.tree.get(path).map(|n| n.value.as_slice())
    }

    /// The node's value as a decimal number (a XenbusState, a port...), if it is one.
    pub fn number(&self, path: &str) -> Option<u32> {
        std::str::from_utf8(self.get(path)?).ok()?.parse().ok()
    }

    /// The node's value as text, lossily.
    pub fn get_string(&self, path: &str) -> Option<String> {
        self.get(path).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// What the toolstack writes for a device before the guest looks: the frontend's
    /// `backend`, `backend-id` and `extra` keys, and both sides Initialising.
    pub fn plug_device(
        &mut self,
        frontend: &str,
        backend: &str,
        backend_id: u16,
        extra: &[(&str, &str)],
    ) {
        self.set(&format!("{frontend}/backend"), backend.as_bytes());
        self.set(&format!("{frontend}/backend-id"), format!("{backend_id}").as_bytes());
        for (k, v) in extra {
            self.set(&format!("{frontend}/{k}"), v.as_bytes());
        }
        self.set(&format!("{frontend}/state"), b"1");
        self.set(&format!("{backend}/state"), b"1");
    }

    pub fn set_perms(&mut self, path: &str, perms: &[(u8, u16)]) {
        self.tree.get_mut(path).expect("set_perms on a missing node").perms = perms.to_vec();
    }

    /// Requests of type `ty` received so far.
    pub fn count(&self, ty: XsType) -> usize {
        self.requests.iter().filter(|h| h.ty == ty as u32).count()
    }

    fn take_requests(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let mut got = false;
        loop {
            let n = self.req.read(&mut buf).expect("the client corrupted the req ring");
            if n == 0 {
                break;
            }
            got = true;
            self.inbuf.extend_from_slice(&buf[..n]);
        }
        while self.inbuf.len() >= XsdSockmsg::SIZE {
            let hdr = XsdSockmsg::from_bytes(self.inbuf[..XsdSockmsg::SIZE].try_into().unwrap());
            let len = hdr.len as usize;
            // Real xenstored drops a connection that does this; the client must never.
            assert!(len <= 4096, "client sent a {len}-byte payload");
            if self.inbuf.len() < XsdSockmsg::SIZE + len {
                break;
            }
            let payload = self.inbuf[XsdSockmsg::SIZE..XsdSockmsg::SIZE + len].to_vec();
            self.inbuf.drain(..XsdSockmsg::SIZE + len);
            self.requests.push(hdr);
            self.held.push((hdr, payload));
        }
        got
    }

    fn push(&mut self) -> bool {
        // No more than a page: the ring takes at most its size, and copying the whole queue
        // each round made a flood of events quadratic.
        let n = self.chunk.min(self.outq.len()).min(4096);
        if n == 0 {
            return false;
        }
        let bytes = &self.outq.make_contiguous()[..n];
        let written = self.rsp.write(bytes).expect("the client corrupted the rsp ring");
        self.outq.drain(..written);
        written > 0
    }

    fn fire(&mut self, path: &str) {
        let hits: Vec<_> = self
            .watches
            .iter()
            .filter(|(w, _)| path == w || path.starts_with(&format!("{w}/")))
            .map(|(_, t)| event(path, t))
            .collect();
        self.queue(hits);
    }

    fn fire_rm(&mut self, path: &str) {
        self.fire(path);
        let below: Vec<_> = self
            .watches
            .iter()
            .filter(|(w, _)| w.starts_with(&format!("{path}/")))
            .map(|(w, t)| event(w, t))
            .collect();
        self.queue(below);
    }

    /// The messages answering one request, in the order xenstored sends them.
    fn process(&mut self, hdr: XsdSockmsg, payload: &[u8]) -> Vec<Vec<u8>> {
        let before = self.outq.len();
        let (ty, body) = match self.answer(hdr, payload) {
            Ok((ty, body)) => (ty as u32, body),
            Err(e) => (XsType::Error as u32, format!("{e}\0").into_bytes()),
        };
        let (ty, body) = self.forge_next.take().unwrap_or((ty, body));
        // Events the request fired went to outq; xenstored queues them before the ack,
        // except a new watch's first event, which follows it.
        let events: Vec<u8> = self.outq.drain(before..).collect();
        let reply = msg(ty, hdr.req_id, hdr.tx_id, &body);
        let mut out = Vec::new();
        if hdr.ty == XsType::Watch as u32 {
            out.push(reply);
            out.push(events);
        } else {
            out.push(events);
            out.push(reply);
        }
        out.retain(|m| !m.is_empty());
        out
    }

    fn answer(
        &mut self,
        hdr: XsdSockmsg,
        payload: &[u8],
    ) -> Result<(XsType, Vec<u8>), &'static str> {
        let ty = XsType::try_from(hdr.ty).map_err(|_| "EINVAL")?;
        let strings: Vec<&str> = payload
            .split(|&b| b == 0)
            .map(|s| std::str::from_utf8(s).unwrap_or("\u{fffd}"))
            .collect();
        let arg = |i: usize| strings.get(i).copied().ok_or("EINVAL");
        let ok = Ok((ty, b"OK\0".to_vec()));
        let tx = hdr.tx_id;
        match ty {
            XsType::Read => {
                let node = self.node(tx, arg(0)?)?;
                check(node, b'r')?;
                Ok((ty, node.value.clone()))
            }
            XsType::Write => {
                let split = payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
                let (path, value) = (arg(0)?, &payload[split + 1..]);
                self.writable(tx, path)?;
                let changed = write_node(self.tree_mut(tx)?, path, value);
                self.changed(tx, changed);
                ok
            }
            XsType::Mkdir => {
                let path = arg(0)?;
                if self.node(tx, path).is_err() {
                    self.writable(tx, path)?;
                    let changed = write_node(self.tree_mut(tx)?, path, b"");
                    self.changed(tx, changed);
                }
                ok
            }
            XsType::Rm => {
                let path = arg(0)?;
                if self.node(tx, path).is_err() {
                    let p = parent(path);
                    return if p.is_empty() || self.node(tx, p).is_ok() {
                        ok
                    } else {
                        Err("ENOENT")
                    };
                }
                self.writable(tx, path)?;
                remove_subtree(self.tree_mut(tx)?, path);
                match self.txs.get_mut(&tx) {
                    Some(t) => t.changed.push(path.into()),
                    None => self.fire_rm(path),
                }
                ok
            }
            XsType::Directory => {
                let path = arg(0)?;
                check(self.node(tx, path)?, b'r')?;
                let prefix = format!("{path}/");
                let mut out = Vec::new();
                for key in self.tree_ref(tx)?.keys() {
                    if let Some(name) = key.strip_prefix(&prefix) {
                        if !name.contains('/') {
                            out.extend_from_slice(name.as_bytes());
                            out.push(0);
                        }
                    }
                }
                Ok((ty, out))
            }
            XsType::GetPerms => {
                let node = self.node(tx, arg(0)?)?;
                check(node, b'r')?;
                let mut out = Vec::new();
                for (letter, domid) in &node.perms {
                    out.extend_from_slice(format!("{}{domid}\0", *letter as char).as_bytes());
                }
                Ok((ty, out))
            }
            XsType::SetPerms => {
                let path = arg(0)?;
                let node = self.node(tx, path)?;
                if node.perms[0].1 != DOMID {
                    return Err("EACCES");
                }
                // The path, then the permissions, each NUL-terminated: at least path and owner.
                if strings.len() < 3 {
                    return Err("EINVAL");
                }
                let mut perms = Vec::new();
                for p in &strings[1..strings.len() - 1] {
                    let (letter, domid) = p.split_at(1);
                    perms.push((letter.as_bytes()[0], domid.parse().map_err(|_| "EINVAL")?));
                }
                if perms.is_empty() {
                    return Err("EINVAL");
                }
                self.tree_mut(tx)?.get_mut(path).ok_or("ENOENT")?.perms = perms;
                self.changed(tx, vec![path.into()]);
                ok
            }
            XsType::Watch => {
                let (path, token) = (arg(0)?.to_string(), arg(1)?.to_string());
                if self.watches.iter().any(|(p, t)| *p == path && *t == token) {
                    return Err("EEXIST");
                }
                self.outq.extend(event(&path, &token));
                self.watches.push((path, token));
                ok
            }
            XsType::Unwatch => {
                let (path, token) = (arg(0)?, arg(1)?);
                let i = self.watches.iter().position(|(p, t)| p == path && t == token);
                self.watches.remove(i.ok_or("ENOENT")?);
                ok
            }
            XsType::TransactionStart => {
                let id = self.next_tx;
                self.next_tx += 1;
                self.txs.insert(id, Tx { tree: self.tree.clone(), changed: Vec::new() });
                Ok((ty, format!("{id}\0").into_bytes()))
            }
            XsType::TransactionEnd => {
                let t = self.txs.remove(&tx).ok_or("ENOENT")?;
                match arg(0)? {
                    "F" => ok,
                    "T" if self.conflicts > 0 => {
                        self.conflicts -= 1;
                        Err("EAGAIN")
                    }
                    "T" => {
                        self.tree = t.tree;
                        for p in t.changed {
                            if self.tree.contains_key(&p) {
                                self.fire(&p);
                            } else {
                                self.fire_rm(&p);
                            }
                        }
                        ok
                    }
                    _ => Err("EINVAL"),
                }
            }
            _ => Err("ENOSYS"),
        }
    }

    fn tree_ref(&self, tx: u32) -> Result<&Tree, &'static str> {
        match tx {
            0 => Ok(&self.tree),
            _ => self.txs.get(&tx).map(|t| &t.tree).ok_or("ENOENT"),
        }
    }

    fn tree_mut(&mut self, tx: u32) -> Result<&mut Tree, &'static str> {
        match tx {
            0 => Ok(&mut self.tree),
            _ => self.txs.get_mut(&tx).map(|t| &mut t.tree).ok_or("ENOENT"),
        }
    }

    fn node(&self, tx: u32, path: &str) -> Result<&Node, &'static str> {
        self.tree_ref(tx)?.get(path).ok_or("ENOENT")
    }

    /// xenstored checks the node, or for a new node the closest existing ancestor.
    fn writable(&self, tx: u32, path: &str) -> Result<(), &'static str> {
        let mut p = path;
        while !p.is_empty() {
            if let Ok(node) = self.node(tx, p) {
                return check(node, b'w');
            }
            p = parent(p);
        }
        Ok(())
    }

    fn changed(&mut self, tx: u32, paths: Vec<String>) {
        match self.txs.get_mut(&tx) {
            Some(t) => t.changed.extend(paths),
            None => paths.iter().for_each(|p| self.fire(p)),
        }
    }
}

fn check(node: &Node, want: u8) -> Result<(), &'static str> {
    let (owner_letter, owner) = node.perms[0];
    let letter = if owner == DOMID {
        b'b'
    } else {
        node.perms[1..].iter().find(|(_, d)| *d == DOMID).map_or(owner_letter, |(l, _)| *l)
    };
    if letter == b'b' || letter == want {
        Ok(())
    } else {
        Err("EACCES")
    }
}

/// Sets `path`, creating missing parents; returns the paths that changed.
fn write_node(tree: &mut Tree, path: &str, value: &[u8]) -> Vec<String> {
    let mut changed = vec![path.to_string()];
    let mut p = parent(path);
    while !p.is_empty() && !tree.contains_key(p) {
        tree.insert(p.into(), Node { value: Vec::new(), perms: vec![(b'n', DOMID)] });
        changed.push(p.into());
        p = parent(p);
    }
    let perms = tree.get(path).map_or(vec![(b'n', DOMID)], |n| n.perms.clone());
    tree.insert(path.into(), Node { value: value.to_vec(), perms });
    changed
}

fn remove_subtree(tree: &mut Tree, path: &str) {
    let prefix = format!("{path}/");
    tree.retain(|k, _| k != path && !k.starts_with(&prefix));
}

/// The guest's side effects, played by the fake: waiting runs a round of xenstored.
pub struct FakeTransport {
    pub fake: Arc<Mutex<Fake>>,
    pub notifies: usize,
}

impl Transport for FakeTransport {
    fn notify(&mut self) {
        self.notifies += 1;
    }

    fn wait(&mut self, deadline_ns: u64) -> Result<(), Timeout> {
        let mut fake = self.fake.lock().unwrap();
        if fake.step() {
            fake.now += ROUND_NS;
            Ok(())
        } else {
            fake.now = fake.now.max(deadline_ns);
            Err(Timeout)
        }
    }

    fn now_ns(&self) -> u64 {
        self.fake.lock().unwrap().now
    }
}

pub type Client = Xenstore<FakeTransport>;

/// A client and the fake xenstored across one page.
// The client requires watch handlers to be `Send` (the guest keeps its client in a static),
// hence the `Arc<Mutex<_>>` around a fake that is used on one thread only.
#[allow(clippy::arc_with_non_send_sync)]
pub fn setup() -> (Client, Arc<Mutex<Fake>>) {
    let page = Page::new(1);
    let base = page.base().as_ptr();
    // SAFETY: the page lives in the fake, which the client's transport keeps alive as long
    // as the client; the client is the only producer of `req` and the only consumer of
    // `rsp`, the fake the other two.
    let (req, rsp) = unsafe { (Producer::new(base, REQ_RING), Consumer::new(base, RSP_RING)) };
    let fake = Arc::new(Mutex::new(Fake::new(page)));
    let xs = Xenstore::new(req, rsp, FakeTransport { fake: fake.clone(), notifies: 0 });
    (xs, fake)
}
