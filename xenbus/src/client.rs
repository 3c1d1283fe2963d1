//! The xenstore connection: requests go out on the `req` byte ring, replies and watch events
//! come back on `rsp`, and [`Xenstore`] matches them up.
//!
//! The client never blocks on its own: [`Xenstore::poll`] moves whatever bytes can move
//! (queued requests out, replies and events in) and returns. Blocking calls are built from
//! `poll` and [`Transport::wait`], which the guest implements with xenstored's event channel
//! and its clock, so the same code runs against a fake xenstored on the host.
//!
//! Everything read from `rsp` is what xenstored *claims*: a length beyond
//! [`XENSTORE_PAYLOAD_MAX`] or impossible ring indices make the connection unusable (the
//! stream cannot be resynchronised), while a bad single message (unknown `req_id`, malformed
//! watch event, wrong reply type) is logged, counted in [`Stats`] and dropped or turned into
//! that request's error.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use log::warn;
use ring::byte::{Consumer, Producer, RingError};

use crate::events::{EventQueue, Pushed};
use crate::store::{check_path, check_token, expect_ok, parse_watch_event};
use crate::wire::{XsError, XsType, XsdSockmsg, XENSTORE_PAYLOAD_MAX};

/// How long a blocking call waits for its reply unless told otherwise.
pub const DEFAULT_TIMEOUT_NS: u64 = 5_000_000_000;

/// Watch events kept for [`Xenstore::dispatch_watches`] before new ones are dropped: a
/// xenstored that floods us must not exhaust the heap.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// Events of one watch kept at most; past it the oldest of that watch goes. A backend that
/// writes its own node in a loop then cannot crowd out another watch's events (the
/// toolstack's `control/shutdown`), and the newest event of the flooded watch is still
/// there: a handler reads the store's present state, so what it loses is repetition.
pub const MAX_QUEUED_PER_WATCH: usize = 64;

/// Reply-ring bytes one [`Xenstore::poll`] takes in at most: a xenstored that writes without
/// pause must not keep the vCPU in the client. What is left waits for the next poll
/// ([`Xenstore::has_unread`]), which the client's own waits do not sleep through.
pub const MAX_BYTES_PER_POLL: usize = 64 * 1024;

/// The side effects the client needs from the guest.
pub trait Transport {
    /// Signals xenstored's event channel: there are new requests, or room for replies.
    fn notify(&mut self);
    /// Blocks until xenstored's event channel has fired since the previous `wait` returned,
    /// or until the clock of [`Transport::now_ns`] reaches `deadline_ns`. An event that fired
    /// before the call must make it return at once, or a reply that arrived between the
    /// client's last poll and this call would be missed until the deadline.
    fn wait(&mut self, deadline_ns: u64) -> Result<(), Timeout>;
    /// A monotonic clock in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// The deadline passed without an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout;

/// What xenstored did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A header announced more than [`XENSTORE_PAYLOAD_MAX`] payload bytes.
    PayloadTooLong(u32),
    /// A reply of another type than the request, or of no known type.
    UnexpectedType { expected: XsType, got: u32 },
    /// An `XS_ERROR` naming no error we know.
    UnknownError,
    /// A string that should be NUL-terminated is not.
    MissingNul,
    /// A name or path that is not UTF-8.
    NotUtf8,
    /// An empty name, or one with a `/`, in a directory listing.
    BadName,
    /// A reply whose payload does not have the shape its type requires.
    BadReply,
}

/// Why a xenstore operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// xenstored refused the request. `Xs(XsError::TooBig)` is also what a request over
    /// [`XENSTORE_PAYLOAD_MAX`] gets, without being sent: xenstored would drop the connection.
    Xs(XsError),
    /// No reply (or no awaited event) before the deadline.
    Timeout,
    /// xenstored published impossible ring indices; the connection is dead.
    Ring(RingError),
    /// xenstored broke the protocol.
    Protocol(Protocol),
    /// A value read from the store is not what the key should hold (not a number, not
    /// UTF-8, not a state, not a path...).
    BadValue,
    /// A path or token we were asked to send is empty, holds a NUL or is too long.
    InvalidArgument,
    /// Another watch already uses this token.
    TokenInUse,
    /// No watch uses this token.
    NoSuchWatch,
    /// The domain was resumed in a new one while the request was in flight: the xenstored
    /// that would have answered it is gone.
    Resumed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xs(e) => write!(f, "xenstored: {e}"),
            Error::Timeout => f.write_str("xenstore: timed out"),
            Error::Ring(e) => write!(f, "xenstore: {e}"),
            Error::Protocol(p) => write!(f, "xenstore protocol violation: {p:?}"),
            Error::BadValue => f.write_str("xenstore: malformed value"),
            Error::InvalidArgument => f.write_str("xenstore: invalid path or token"),
            Error::TokenInUse => f.write_str("xenstore: watch token in use"),
            Error::NoSuchWatch => f.write_str("xenstore: no such watch"),
            Error::Resumed => f.write_str("xenstore: the domain was resumed mid-request"),
        }
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Ring(e)
    }
}

/// A submitted request, to collect its reply with [`Xenstore::take_reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(u32);

/// A watch fired: `path` changed (or, once, the watch was registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// Called by [`Xenstore::dispatch_watches`] with the client itself, so that a handler can
/// issue requests, even blocking ones, or add and remove watches.
pub type WatchHandler<T> = Box<dyn FnMut(&mut Xenstore<T>, &WatchEvent) + Send>;

/// Messages xenstored got wrong and we dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Replies to no request of ours in flight (unknown, unsent or already answered).
    pub unmatched_replies: u64,
    /// Watch events that were not `path\0token\0`.
    pub bad_events: u64,
    /// Watch events dropped because [`MAX_QUEUED_EVENTS`] were waiting.
    pub dropped_events: u64,
}

struct InFlight {
    ty: XsType,
    /// Stream offset just past the request's last byte: a reply before that much went out
    /// answers nothing we sent.
    end: u64,
    /// The caller gave up waiting; the reply is discarded when it comes.
    abandoned: bool,
}

struct Watch<T: Transport> {
    path: String,
    /// Distinguishes this registration from a later one with the same token.
    id: u64,
    /// `None` while the handler runs, and for the internal watches of [`Xenstore::wait_for`].
    handler: Option<WatchHandler<T>>,
}

/// A message being reassembled from the `rsp` ring.
#[derive(Default)]
struct Incoming {
    header: [u8; XsdSockmsg::SIZE],
    have: usize,
    body: Option<Body>,
}

struct Body {
    hdr: XsdSockmsg,
    payload: Vec<u8>,
    filled: usize,
}

/// The xenstore client.
pub struct Xenstore<T: Transport> {
    req: Producer,
    rsp: Consumer,
    transport: T,
    timeout_ns: u64,
    next_req_id: u32,
    /// Request bytes that did not fit in `req` yet.
    unsent: VecDeque<u8>,
    sent_total: u64,
    queued_total: u64,
    in_flight: BTreeMap<u32, InFlight>,
    replies: BTreeMap<u32, Result<Vec<u8>, Error>>,
    incoming: Incoming,
    watches: BTreeMap<String, Watch<T>>,
    next_watch_id: u64,
    events: EventQueue,
    dispatching: bool,
    /// Reply-ring bytes one poll takes in at most.
    poll_budget: usize,
    /// Reply-ring bytes the current poll may still take in.
    budget: usize,
    /// The last poll stopped at its budget: the ring may hold more.
    unread: bool,
    broken: Option<Error>,
    stats: Stats,
}

impl<T: Transport> Xenstore<T> {
    /// A client over the xenstore page's request ring ([`crate::wire::interface::REQ_RING`],
    /// which we produce into) and reply ring ([`crate::wire::interface::RSP_RING`]).
    pub fn new(req: Producer, rsp: Consumer, transport: T) -> Self {
        Xenstore {
            req,
            rsp,
            transport,
            timeout_ns: DEFAULT_TIMEOUT_NS,
            next_req_id: 1,
            unsent: VecDeque::new(),
            sent_total: 0,
            queued_total: 0,
            in_flight: BTreeMap::new(),
            replies: BTreeMap::new(),
            incoming: Incoming::default(),
            watches: BTreeMap::new(),
            next_watch_id: 0,
            events: EventQueue::new(MAX_QUEUED_EVENTS, MAX_QUEUED_PER_WATCH),
            dispatching: false,
            poll_budget: MAX_BYTES_PER_POLL,
            budget: 0,
            unread: false,
            broken: None,
            stats: Stats::default(),
        }
    }

    /// How long blocking calls wait for a reply.
    pub fn set_timeout(&mut self, ns: u64) {
        self.timeout_ns = ns;
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Requests sent or queued whose reply has not arrived.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The error that killed the connection, if one did.
    pub fn broken(&self) -> Option<Error> {
        self.broken
    }

    /// Queues one request (`parts` concatenated are its payload, NUL terminators included)
    /// in transaction `tx_id` (0: none) and pushes what fits onto the ring.
    pub fn submit(&mut self, ty: XsType, tx_id: u32, parts: &[&[u8]]) -> Result<ReqId, Error> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(Error::Xs(XsError::TooBig));
        }
        let req_id = self.allocate_req_id();
        let hdr = XsdSockmsg { ty: ty as u32, req_id, tx_id, len: len as u32 };
        self.unsent.extend(hdr.to_bytes());
        for p in parts {
            self.unsent.extend(p.iter().copied());
        }
        self.queued_total += (XsdSockmsg::SIZE + len) as u64;
        self.in_flight.insert(req_id, InFlight { ty, end: self.queued_total, abandoned: false });
        if let Err(e) = self.poll() {
            self.replies.remove(&req_id);
            return Err(e);
        }
        Ok(ReqId(req_id))
    }

    /// The reply to `id` if it has arrived: its payload, or the error xenstored sent (or
    /// the one that killed the connection). Each reply is handed out once.
    pub fn take_reply(&mut self, id: ReqId) -> Option<Result<Vec<u8>, Error>> {
        self.replies.remove(&id.0)
    }

    /// Pushes queued requests, takes in replies and watch events, and tells xenstored if
    /// anything moved. Never blocks; the guest calls it when xenstored's event channel
    /// fires (blocking calls also call it as they wait). Events wait in a queue for
    /// [`Xenstore::dispatch_watches`].
    pub fn poll(&mut self) -> Result<(), Error> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        match self.pump() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail(e);
                Err(e)
            }
        }
    }

    /// Blocks until xenstored signals or `deadline_ns` passes ([`Error::Timeout`]). The
    /// caller polls afterwards.
    pub fn wait(&mut self, deadline_ns: u64) -> Result<(), Error> {
        // Nothing to wait for: the last poll left messages in the ring.
        if self.unread {
            return Ok(());
        }
        if self.transport.now_ns() >= deadline_ns {
            return Err(Error::Timeout);
        }
        self.transport.wait(deadline_ns).map_err(|Timeout| Error::Timeout)
    }

    /// The deadline `timeout_ns` from now.
    pub fn deadline_in(&self, timeout_ns: u64) -> u64 {
        self.transport.now_ns().saturating_add(timeout_ns)
    }

    /// Sends one request and waits (up to the client's timeout) for its reply payload.
    pub fn call(&mut self, ty: XsType, tx_id: u32, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        let id = self.submit(ty, tx_id, parts)?;
        self.wait_reply(id)
    }

    /// Waits (up to the client's timeout) for the reply to `id`. On timeout the request is
    /// abandoned: its reply, if it ever comes, is dropped.
    pub fn wait_reply(&mut self, id: ReqId) -> Result<Vec<u8>, Error> {
        let deadline = self.deadline_in(self.timeout_ns);
        loop {
            let polled = self.poll();
            if let Some(reply) = self.replies.remove(&id.0) {
                return reply;
            }
            let waited = polled.and_then(|()| self.wait(deadline));
            if let Err(e) = waited {
                if let Some(f) = self.in_flight.get_mut(&id.0) {
                    f.abandoned = true;
                }
                return Err(e);
            }
        }
    }

    /// Carries the connection over a resume in a new domain, on the same page, with a new
    /// event channel in `transport`: the new xenstored knows none of our watches and will
    /// answer nothing the old one was asked. Requests in flight fail with
    /// [`Error::Resumed`], a reply half read and whatever the old xenstored left in the
    /// reply ring are dropped (as Linux does with a ring that is not quiescent), and every
    /// watch is registered again; xenstored fires each once, so its handler sees the store
    /// as the new domain has it. Returns how many watches could not be registered again
    /// (each one logged), or the error that broke the connection.
    pub fn resume(&mut self, transport: T) -> Result<usize, Error> {
        self.transport = transport;
        self.broken = None;
        let lost = core::mem::take(&mut self.in_flight);
        for id in lost.keys() {
            self.replies.insert(*id, Err(Error::Resumed));
        }
        if !lost.is_empty() {
            warn!("xenstore: {} requests in flight at the suspend are lost", lost.len());
        }
        // A request that was not all sent would start the new stream mid-message.
        self.unsent.clear();
        self.queued_total = self.sent_total;
        self.incoming = Incoming::default();
        self.events = EventQueue::new(MAX_QUEUED_EVENTS, MAX_QUEUED_PER_WATCH);
        let stale = self.rsp.discard()?;
        if stale > 0 {
            warn!("xenstore: {stale} bytes the old xenstored left in the reply ring dropped");
        }
        let watches: Vec<(String, String)> =
            self.watches.iter().map(|(token, w)| (token.clone(), w.path.clone())).collect();
        let mut failed = 0;
        for (token, path) in watches {
            let reply = self
                .call(XsType::Watch, 0, &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"])
                .and_then(|r| expect_ok(&r));
            match reply {
                Ok(()) => {}
                Err(e @ (Error::Ring(_) | Error::Protocol(_))) => return Err(e),
                Err(e) => {
                    warn!("xenstore: watching {path} again after the resume: {e}");
                    failed += 1;
                }
            }
        }
        Ok(failed)
    }

    /// Registers `handler` for events carrying `token`, then asks xenstored to watch `path`.
    /// xenstored fires the watch once right after registering it, so the handler sees the
    /// current state without a separate read.
    pub fn watch(
        &mut self,
        path: &str,
        token: &str,
        handler: WatchHandler<T>,
    ) -> Result<(), Error> {
        self.add_watch(path, token, Some(handler))
    }

    /// Removes the watch registered with `token`, with any of its events still queued.
    pub fn unwatch(&mut self, token: &str) -> Result<(), Error> {
        check_token(token)?;
        let watch = self.watches.remove(token).ok_or(Error::NoSuchWatch)?;
        self.events.remove_token(token);
        let reply = self.call(
            XsType::Unwatch,
            0,
            &[watch.path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
        )?;
        expect_ok(&reply)
    }

    /// Watch events received and not yet dispatched.
    /// Sets how many reply-ring bytes one poll takes in at most (at least 1; default
    /// [`MAX_BYTES_PER_POLL`]).
    pub fn set_poll_budget(&mut self, bytes: usize) {
        self.poll_budget = bytes.max(1);
    }

    /// Whether the last poll stopped at its budget with more possibly waiting.
    pub fn has_unread(&self) -> bool {
        self.unread
    }

    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Runs the handler of each queued event, including events that arrive while handlers
    /// run; returns how many ran. Events whose watch is gone are dropped. Called from a
    /// handler, it returns 0: the outer call is already draining the queue.
    pub fn dispatch_watches(&mut self) -> usize {
        if self.dispatching {
            return 0;
        }
        self.dispatching = true;
        let mut ran = 0;
        while let Some(event) = self.events.pop() {
            let Some(watch) = self.watches.get_mut(&event.token) else { continue };
            let id = watch.id;
            let Some(mut handler) = watch.handler.take() else { continue };
            handler(self, &event);
            ran += 1;
            // The handler may have removed its watch, or replaced it under the same token.
            if let Some(w) = self.watches.get_mut(&event.token) {
                if w.id == id {
                    w.handler = Some(handler);
                }
            }
        }
        self.dispatching = false;
        ran
    }

    /// Waits, up to `timeout_ns`, until `check` returns `Some`, re-running it each time
    /// `path` changes: a watch on `path` stands in for polling the store. `check` runs once
    /// at the start and after every event of that watch, not on unrelated wakeups, so its
    /// own requests do not make the loop spin.
    pub fn wait_for<R>(
        &mut self,
        path: &str,
        timeout_ns: u64,
        mut check: impl FnMut(&mut Self) -> Result<Option<R>, Error>,
    ) -> Result<R, Error> {
        let deadline = self.deadline_in(timeout_ns);
        let token = format!("xenbus-wait-{}", self.next_watch_id);
        self.add_watch(path, &token, None)?;
        let result = self.wait_for_inner(&token, deadline, &mut check);
        if let Err(e) = self.unwatch(&token) {
            warn!("xenstore: removing wait watch on {path}: {e}");
        }
        result
    }

    fn wait_for_inner<R>(
        &mut self,
        token: &str,
        deadline: u64,
        check: &mut impl FnMut(&mut Self) -> Result<Option<R>, Error>,
    ) -> Result<R, Error> {
        loop {
            if let Some(r) = check(self)? {
                return Ok(r);
            }
            loop {
                if self.events.remove_token(token) > 0 {
                    break;
                }
                self.wait(deadline)?;
                self.poll()?;
            }
        }
    }

    fn add_watch(
        &mut self,
        path: &str,
        token: &str,
        handler: Option<WatchHandler<T>>,
    ) -> Result<(), Error> {
        check_path(path)?;
        check_token(token)?;
        if self.watches.contains_key(token) {
            return Err(Error::TokenInUse);
        }
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        // Registered before the request goes out: the first event follows the reply
        // immediately and may be read in the same poll.
        self.watches.insert(token.into(), Watch { path: path.into(), id, handler });
        let reply = self
            .call(XsType::Watch, 0, &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"])
            .and_then(|r| expect_ok(&r));
        if reply.is_err() {
            self.watches.remove(token);
            self.events.remove_token(token);
        }
        reply
    }

    fn allocate_req_id(&mut self) -> u32 {
        // 0 is what xenstored puts in watch events; skip ids still awaiting or holding a reply.
        loop {
            let id = self.next_req_id;
            self.next_req_id = self.next_req_id.wrapping_add(1);
            if id != 0 && !self.in_flight.contains_key(&id) && !self.replies.contains_key(&id) {
                return id;
            }
        }
    }

    fn pump(&mut self) -> Result<(), Error> {
        let mut moved = false;
        self.budget = self.poll_budget;
        self.unread = false;
        loop {
            let sent = self.flush()?;
            let received = self.receive()?;
            if !sent && !received {
                break;
            }
            moved = true;
            if self.budget == 0 {
                self.unread = true;
                break;
            }
        }
        // xenstored waits for a kick both for new requests and for room to write replies.
        if moved {
            self.transport.notify();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<bool, Error> {
        let mut sent = false;
        while !self.unsent.is_empty() {
            let (front, _) = self.unsent.as_slices();
            let n = self.req.write(front)?;
            if n == 0 {
                break;
            }
            self.unsent.drain(..n);
            self.sent_total += n as u64;
            sent = true;
        }
        Ok(sent)
    }

    fn receive(&mut self) -> Result<bool, Error> {
        let mut received = false;
        loop {
            let inc = &mut self.incoming;
            match &mut inc.body {
                None => {
                    let want = (XsdSockmsg::SIZE - inc.have).min(self.budget);
                    let n = self.rsp.read(&mut inc.header[inc.have..inc.have + want])?;
                    if n == 0 {
                        return Ok(received);
                    }
                    received = true;
                    self.budget -= n;
                    inc.have += n;
                    if inc.have == XsdSockmsg::SIZE {
                        inc.have = 0;
                        let hdr = XsdSockmsg::from_bytes(&inc.header);
                        if hdr.len as usize > XENSTORE_PAYLOAD_MAX {
                            return Err(Error::Protocol(Protocol::PayloadTooLong(hdr.len)));
                        }
                        let payload = vec![0; hdr.len as usize];
                        inc.body = Some(Body { hdr, payload, filled: 0 });
                    }
                }
                Some(body) => {
                    if body.filled < body.payload.len() {
                        let want = (body.payload.len() - body.filled).min(self.budget);
                        let n =
                            self.rsp.read(&mut body.payload[body.filled..body.filled + want])?;
                        if n == 0 {
                            return Ok(received);
                        }
                        received = true;
                        self.budget -= n;
                        body.filled += n;
                    }
                    if body.filled == body.payload.len() {
                        if let Some(Body { hdr, payload, .. }) = inc.body.take() {
                            self.deliver(hdr, payload);
                        }
                    }
                }
            }
        }
    }

    fn deliver(&mut self, hdr: XsdSockmsg, payload: Vec<u8>) {
        let ty = XsType::try_from(hdr.ty);
        if ty == Ok(XsType::WatchEvent) {
            return self.queue_event(&payload);
        }
        let sent_total = self.sent_total;
        let matched = match self.in_flight.get(&hdr.req_id) {
            Some(f) if f.end <= sent_total => self.in_flight.remove(&hdr.req_id),
            _ => None,
        };
        let Some(req) = matched else {
            self.stats.unmatched_replies += 1;
            warn!("xenstore: dropped reply (type {}) for unknown req_id {}", hdr.ty, hdr.req_id);
            return;
        };
        if req.abandoned {
            return;
        }
        let result = match ty {
            Ok(XsType::Error) => Err(XsError::from_payload(&payload)
                .map_or(Error::Protocol(Protocol::UnknownError), Error::Xs)),
            Ok(t) if t == req.ty => Ok(payload),
            _ => Err(Error::Protocol(Protocol::UnexpectedType { expected: req.ty, got: hdr.ty })),
        };
        self.replies.insert(hdr.req_id, result);
    }

    fn queue_event(&mut self, payload: &[u8]) {
        match parse_watch_event(payload) {
            Ok(event) => match self.events.push(event) {
                Pushed::Queued => {}
                Pushed::Evicted(oldest) => {
                    self.note_dropped_event(&oldest, "too many queued for its watch: the oldest")
                }
                Pushed::Full(event) => self.note_dropped_event(&event, "the event queue is full"),
            },
            Err(e) => {
                self.stats.bad_events += 1;
                warn!("xenstore: dropped malformed watch event: {e}");
            }
        }
    }

    /// Counts a dropped event and says so, at the 1st, 2nd, 4th, 8th... drop: a flood must
    /// not become a flood of log lines.
    fn note_dropped_event(&mut self, event: &WatchEvent, why: &str) {
        self.stats.dropped_events += 1;
        let n = self.stats.dropped_events;
        if n.is_power_of_two() {
            warn!(
                "xenstore: dropped a watch event ({why}; {n} so far), this one for {}",
                event.path
            );
        }
    }

    /// The stream is lost: everyone waiting gets the error that lost it.
    fn fail(&mut self, e: Error) {
        warn!("xenstore: connection unusable: {e}");
        self.broken = Some(e);
        self.unsent.clear();
        for (id, req) in core::mem::take(&mut self.in_flight) {
            if !req.abandoned {
                self.replies.insert(id, Err(e));
            }
        }
    }
}
