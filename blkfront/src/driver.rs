//! The driver core: requests in, ring requests out, responses matched back.
//!
//! A caller's [`Request`] may need several ring requests: a read or write is cut into parts
//! of at most [`MAX_SEGMENTS_PER_REQUEST`] pages, each its own ring request, or, when the
//! backend offers indirect descriptors (`feature-max-indirect-segments`), of up to
//! [`MAX_INDIRECT_SEGMENTS`] pages. A part of more than [`MAX_SEGMENTS_PER_REQUEST`] pages
//! goes out as a [`BlkifRequestIndirect`] whose segment list lives in indirect pages we
//! grant read-only; smaller parts stay direct, which costs the backend no extra mapping.
//! Requests wait in a FIFO queue until the ring has room, so callers never see "ring full",
//! and, while other ring requests are in flight, until their responses free bounce pages,
//! so a short page allocator delays requests rather than failing them.
//!
//! Every ring request in flight occupies a slot of a table as large as the ring. Its id on
//! the ring is the slot's index and a generation that changes each time the slot is
//! reused, so a response naming a slot that is free, or a previous use of it, is
//! recognised as bogus and touches nothing. The slot owns the request's bounce pages, its
//! indirect pages and their grants until the response comes; only then are the grants
//! ended and the pages reused, or quarantined if the backend still holds them.
//!
//! # Persistent grants
//!
//! Mapping and unmapping every page of every request is most of a backend's cost. When it
//! offers `feature-persistent` (we always announce it), the backend keeps the pages it maps
//! mapped, up to a limit of its own (Linux's blkback: 1056 per ring), and we reuse those
//! pages, still granted, copying data in and out of them. Which pages it kept shows when a
//! request is answered: ending the grant fails because the page is still mapped. Such a
//! page becomes persistent, up to [`MAX_PERSISTENT_GRANTS`]; the others' grants end as
//! usual. Linux's blkback maps every grant writable in this mode, indirect pages and writes
//! included, so all our grants are writable then.
//!
//! The price is that a persistent page stays writable by the backend while we copy a
//! read's data out of it: a hostile backend can change the data it returned until the copy
//! ends. It can do no more than that: a persistent page only ever holds data of requests
//! to that backend, filled whole before each use, and never returns to the guest's
//! allocator until the backend unmapped it.

use crate::DeviceError;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use grant::{DomId, GrantError, Granted, PagePool, PoolStats, Settled, Spare};
use log::warn;
use ring::shared::{FrontRing, RingError};
use ring::slots::SlotTable;
use xenbus::frontend::Device;

use crate::abi::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    Op, Status, MAX_INDIRECT_PAGES_PER_REQUEST, MAX_SEGMENTS_PER_REQUEST,
    SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::env::{BlkRing, EventChannel, Page, Pages, SharedRing, PAGE_SIZE};
use crate::handshake::Link;
use crate::info::{DiskInfo, SECTOR_SIZE};
use crate::BlkError;

/// Segments we put in one indirect request at most, whatever the backend allows: 1 MiB
/// of data, as much as Linux's blkback takes (256), in one indirect page. A larger part
/// would only pin more bounce pages per ring slot.
pub const MAX_INDIRECT_SEGMENTS: usize = 256;
const _: () = assert!(MAX_INDIRECT_SEGMENTS > MAX_SEGMENTS_PER_REQUEST);
const _: () =
    assert!(MAX_INDIRECT_SEGMENTS <= MAX_INDIRECT_PAGES_PER_REQUEST * SEGMENTS_PER_INDIRECT_PAGE);

/// Bounce pages we keep granted for a backend that keeps them mapped (persistent grants):
/// 1056 (4.1 MiB), what Linux's blkback keeps per ring by default (`max_pgrants`). Pages a
/// backend holds beyond that are quarantined.
pub const MAX_PERSISTENT_GRANTS: usize = 1056;

/// Pages a backend may hold against the protocol (past their request, beyond the persistent
/// grants) before the device is marked broken: so a backend that keeps everything cannot
/// make us pin ever more memory for it. A correct backend holds none.
pub const MAX_QUARANTINED: usize = 32;

/// Identifies a submitted [`Request`] and its [`Completion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// An operation on the disk. Sector numbers count 512-byte sectors; they and the lengths
/// must be multiples of the disk's logical sector size ([`DiskInfo::sector_size`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read `len` bytes from `sector`; the data comes back in [`Completion::data`].
    Read { sector: u64, len: usize },
    /// Write `data` at `sector`; the buffer comes back in [`Completion::data`].
    Write { sector: u64, data: Vec<u8> },
    /// Make completed writes durable: `feature-flush-cache`, else `feature-barrier`, else
    /// (the backend has no volatile cache to flush) it completes at once.
    Flush,
    /// Tell the backend `sectors` sectors from `sector` are unused (`feature-discard`).
    Discard { sector: u64, sectors: u64 },
}

/// A finished [`Request`], handed back with its buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    pub id: RequestId,
    /// `Ok` only if every ring request it took succeeded; else the first error seen.
    pub result: Result<(), BlkError>,
    /// A read's data (meaningful only on success), a write's buffer, or empty.
    pub data: Vec<u8>,
}

/// Misbehaviour of the backend that the driver survived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Responses whose id names no request in flight (unknown, stale or duplicate): dropped.
    pub unknown_responses: u64,
    /// Responses to a request in flight with the wrong operation or an unknown status: that
    /// request failed with [`BlkError::BadResponse`].
    pub bad_responses: u64,
    /// Pages whose grant the backend held after answering: kept out of use.
    pub quarantined: u64,
    /// Bounce pages the backend kept mapped after their request, which we reuse still
    /// granted (persistent grants).
    pub persistent_grants: u64,
}

/// What a caller asked for, while its ring requests are under way.
struct Pending {
    kind: Kind,
    sector: u64,
    /// The read's destination or the write's source; empty for the others.
    buf: Vec<u8>,
    /// Ring requests this takes; lowered if issuing fails midway.
    parts: usize,
    issued: usize,
    done: usize,
    error: Option<BlkError>,
    /// The caller stopped waiting ([`BlkError::Timeout`]): no completion is delivered.
    abandoned: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush(Op),
    Discard(u64),
}

/// One ring request in flight.
struct InFlight<P> {
    request: u64,
    /// The operation its response must echo: for an indirect request the `indirect_op`
    /// (Read or Write), which is what blkback answers with (and what Linux's blkfront
    /// checks), never [`Op::Indirect`].
    op: Op,
    /// Where its data sits in the caller's buffer.
    offset: usize,
    len: usize,
    segs: Vec<Granted<P>>,
    /// The pages holding an indirect request's segment list; empty for direct requests.
    indirect: Vec<Granted<P>>,
}

/// A connected block device.
pub struct Blkfront<P: Pages, E: EventChannel> {
    pub(crate) pages: P,
    pub(crate) evtchn: E,
    ring: BlkRing<P>,
    pub(crate) port: u32,
    /// `blkif_vdev_t` of our requests: the device id, truncated as Linux does (backends
    /// ignore it).
    pub(crate) handle: u16,
    pub(crate) info: DiskInfo,
    pub(crate) device: Device,
    /// Pages one ring request carries at most: [`MAX_SEGMENTS_PER_REQUEST`], or more with
    /// the backend's indirect descriptors, until a shortage of pages or grant references
    /// makes it fall back to direct requests (see `issue`).
    max_segments: usize,
    /// The backend offers persistent grants: see the module's docs.
    persistent_grants: bool,
    /// Why nothing more goes on the ring: it is corrupt ([`BlkError::Device(DeviceError::Broken)`]) or the
    /// backend is closing ([`BlkError::Device(DeviceError::BackendClosed)`]). Every request fails with it.
    stopped: Option<BlkError>,
    /// Ring requests in flight, by their id.
    slots: SlotTable<InFlight<P::Page>>,
    requests: BTreeMap<u64, Pending>,
    /// Requests with ring requests still to issue, oldest first.
    queue: VecDeque<u64>,
    completions: VecDeque<Completion>,
    /// Bounce and indirect pages: ready for reuse (bare or persistent), or quarantined.
    pool: PagePool<P::Page>,
    next_request: u64,
    pub(crate) timeout_ns: u64,
    stats: Stats,
}

impl<P: Pages, E: EventChannel> Blkfront<P, E> {
    /// The driver over a connected ring; the handshake ([`Blkfront::connect`]) builds it.
    pub(crate) fn new(pages: P, evtchn: E, mut link: Link<P>, handle: u16) -> Self {
        let size = link.ring.front().size();
        let info = link.info;
        Blkfront {
            pages,
            evtchn,
            ring: link.ring,
            port: link.port,
            handle,
            info,
            device: link.device,
            max_segments: max_segments_for(info),
            persistent_grants: info.features.persistent,
            stopped: None,
            slots: SlotTable::new(size as usize, 64),
            requests: BTreeMap::new(),
            queue: VecDeque::new(),
            completions: VecDeque::new(),
            pool: new_pool(link.backend),
            next_request: 0,
            timeout_ns: crate::handshake::DEFAULT_TIMEOUT_NS,
            stats: Stats::default(),
        }
    }

    pub fn info(&self) -> DiskInfo {
        self.info
    }

    /// The event channel the backend signals; the guest routes it to [`poll`](Self::poll).
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The xenbus device: our and the backend's directories, the backend's domain.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn stats(&self) -> Stats {
        let PoolStats { quarantined, persistent_grants } = self.pool.stats();
        Stats { quarantined, persistent_grants, ..self.stats }
    }

    /// How long the blocking calls of [`crate::BlockDevice`] wait for a completion.
    pub fn set_timeout(&mut self, ns: u64) {
        self.timeout_ns = ns;
    }

    /// Pages of data one ring request carries at most: 11, or up to
    /// [`MAX_INDIRECT_SEGMENTS`] when the backend offers indirect descriptors (and the
    /// guest has had the pages and grant references for them).
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// Why the device takes no more requests ([`BlkError::Device(DeviceError::Broken)`],
    /// [`BlkError::Device(DeviceError::BackendClosed)`]), if it does not.
    pub fn stopped(&self) -> Option<BlkError> {
        self.stopped
    }

    /// Ring requests in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.in_use()
    }

    /// Submitted requests not completed yet (in flight or queued).
    pub fn outstanding(&self) -> usize {
        self.requests.len()
    }

    /// Pages kept out of use because the backend held their grant.
    pub fn quarantined(&self) -> usize {
        self.pool.quarantined()
    }

    /// Checks `request` against the disk, queues it and puts as much of it on the ring as
    /// fits. Refusals (range, alignment, read-only, missing feature, device state) happen
    /// here, before anything reaches the ring; failures of the I/O itself come back as the
    /// [`Completion`]'s result.
    pub fn submit(&mut self, request: Request) -> Result<RequestId, BlkError> {
        if let Some(e) = self.stopped {
            return Err(e);
        }
        let (kind, sector, len) = match &request {
            Request::Read { sector, len } => (Kind::Read, *sector, *len),
            Request::Write { sector, data } => (Kind::Write, *sector, data.len()),
            // `admit` picks the operation the backend offers.
            Request::Flush => (Kind::Flush(Op::FlushDiskcache), 0, 0),
            Request::Discard { sector, sectors } => (Kind::Discard(*sectors), *sector, 0),
        };
        let Some(kind) = self.admit(kind, sector, len)? else {
            let id = self.new_id();
            let done = Completion { id: RequestId(id), result: Ok(()), data: Vec::new() };
            self.completions.push_back(done);
            return Ok(RequestId(id));
        };
        let buf = match request {
            // The caller's length, up to the disk's size: a guest short of memory gets an
            // error back, not a panic.
            Request::Read { len, .. } => {
                let mut buf = Vec::new();
                buf.try_reserve_exact(len).map_err(|_| BlkError::Device(DeviceError::NoMemory))?;
                buf.resize(len, 0);
                buf
            }
            Request::Write { data, .. } => data,
            Request::Flush | Request::Discard { .. } => Vec::new(),
        };
        let parts = parts_of(kind, buf.len(), self.part_bytes());
        let id = self.new_id();
        let pending =
            Pending { kind, sector, buf, parts, issued: 0, done: 0, error: None, abandoned: false };
        self.requests.insert(id, pending);
        self.queue.push_back(id);
        self.issue();
        Ok(RequestId(id))
    }

    /// Takes in the backend's responses, completes what they finish, issues queued requests
    /// into the room they free and re-arms the ring's event. Never blocks. The guest calls
    /// it when the event channel fires (or from any wait loop); completions wait for
    /// [`take_completion`](Self::take_completion). Returns how many are waiting.
    ///
    /// A corrupt ring (the backend's index running ahead of our requests) fails every
    /// request with [`BlkError::Device(DeviceError::Broken)`] and stops the device; a backend that is closing
    /// ([`EventChannel::backend_closing`]) with [`BlkError::Device(DeviceError::BackendClosed)`]: it will answer
    /// no more, and the toolstack waits for us to close.
    pub fn poll(&mut self) -> usize {
        if self.stopped.is_none() && self.evtchn.backend_closing() {
            warn!(
                "blkfront: {}: the backend is closing: failing {} outstanding request(s)",
                self.device.path,
                self.requests.len()
            );
            self.fail_all(BlkError::Device(DeviceError::BackendClosed));
        }
        if self.stopped.is_none() {
            self.pool.retry_quarantine(&mut self.pages);
            if let Err(e) = self.drain() {
                warn!("blkfront: {e}: device unusable");
                self.fail_all(BlkError::Device(DeviceError::Broken));
            }
        }
        if self.stopped.is_none() && self.pool.check_cap(&self.device.path) {
            self.fail_all(BlkError::Device(DeviceError::Broken));
        }
        self.completions.len()
    }

    /// The oldest completion waiting, if any.
    pub fn take_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// The completion of `id`, if it has arrived; others stay queued.
    pub fn take_completion_of(&mut self, id: RequestId) -> Option<Completion> {
        let i = self.completions.iter().position(|c| c.id == id)?;
        self.completions.remove(i)
    }

    /// Gives up on `id`: nothing more of it is issued and its completion, when its ring
    /// requests in flight come back, is dropped. Their pages stay the driver's until then.
    pub fn abandon(&mut self, id: RequestId) {
        if self.take_completion_of(id).is_some() {
            return;
        }
        let Some(p) = self.requests.get_mut(&id.0) else { return };
        p.abandoned = true;
        p.parts = p.issued;
        self.queue.retain(|&q| q != id.0);
        self.finish_if_done(id.0);
    }

    fn drain(&mut self) -> Result<(), RingError> {
        loop {
            while let Some(rsp) = self.front().take_response()? {
                self.handle_response(rsp);
            }
            self.issue();
            if !self.front().final_check_for_responses()? {
                return Ok(());
            }
        }
    }

    fn front(&mut self) -> &mut FrontRing<BlkifRequest, BlkifResponse> {
        self.ring.front()
    }

    /// Whether the disk as the backend describes it takes a request of `kind` for `len`
    /// bytes (reads, writes) at `sector`: the kind to put on the ring (a flush becomes the
    /// backend's flush or barrier), `None` if there is nothing to do (a flush where writes
    /// are durable once acknowledged), or why not.
    fn admit(&self, kind: Kind, sector: u64, len: usize) -> Result<Option<Kind>, BlkError> {
        let f = self.info.features;
        match kind {
            Kind::Read => self.check_range(sector, len as u64)?,
            Kind::Write => {
                if self.info.read_only() {
                    return Err(BlkError::ReadOnly);
                }
                self.check_range(sector, len as u64)?;
            }
            Kind::Flush(_) if f.flush_cache => return Ok(Some(Kind::Flush(Op::FlushDiskcache))),
            Kind::Flush(_) if f.barrier => return Ok(Some(Kind::Flush(Op::WriteBarrier))),
            Kind::Flush(_) => return Ok(None),
            Kind::Discard(_) if !f.discard => return Err(BlkError::NotSupported),
            Kind::Discard(sectors) => {
                if self.info.read_only() {
                    return Err(BlkError::ReadOnly);
                }
                let bytes = sectors.checked_mul(SECTOR_SIZE).ok_or(BlkError::OutOfRange)?;
                self.check_range(sector, bytes)?;
            }
        }
        Ok(Some(kind))
    }

    /// `len` bytes from `sector`: non-empty, whole logical sectors, aligned, on the disk.
    fn check_range(&self, sector: u64, len: u64) -> Result<(), BlkError> {
        let block = u64::from(self.info.sector_size);
        if len == 0 || !len.is_multiple_of(block) {
            return Err(BlkError::Misaligned);
        }
        if !sector.is_multiple_of(self.info.sectors_per_block()) {
            return Err(BlkError::Misaligned);
        }
        let end = sector.checked_add(len / SECTOR_SIZE).ok_or(BlkError::OutOfRange)?;
        if end > self.info.sectors {
            return Err(BlkError::OutOfRange);
        }
        Ok(())
    }

    /// Bytes one ring request carries at most.
    fn part_bytes(&self) -> usize {
        self.max_segments * PAGE_SIZE
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Puts queued ring requests on the ring while slots are free, then publishes them.
    ///
    /// A request that finds no bounce or indirect page ([`BlkError::Device(DeviceError::NoMemory)`]) or no
    /// grant reference for one ([`GrantError::Exhausted`]) while other ring requests are
    /// in flight waits at the head of the queue: their responses give pages and references
    /// back, and [`poll`](Self::poll) retries it after taking them. Requests behind it wait
    /// too, so the order stays first come, first served. With nothing in flight nothing can
    /// come back: an indirect request then gives way to direct ones, which need far fewer
    /// at a time (a guest whose grant table is shared by many devices may never have 257
    /// references free), for the rest of the connection; a direct one fails rather than
    /// hang.
    fn issue(&mut self) {
        let mut pushed = false;
        while let Some(&id) = self.queue.front() {
            let Some(slot) = self.slots.reserve() else { break };
            match self.issue_part(id, slot.id()) {
                Ok(flight) => {
                    self.slots.fill(slot, flight);
                    pushed = true;
                }
                Err(e) => {
                    self.slots.cancel(slot);
                    let short = matches!(
                        e,
                        BlkError::Device(DeviceError::NoMemory)
                            | BlkError::Device(DeviceError::Grant(GrantError::Exhausted))
                    );
                    if short && self.in_flight() > 0 {
                        // Retried when a response frees pages; nothing went on the ring.
                        break;
                    }
                    if short && self.use_direct_requests(e) {
                        continue;
                    }
                    warn!("blkfront: request {id} failed before the ring: {e}");
                    if let Some(p) = self.requests.get_mut(&id) {
                        p.error.get_or_insert(e);
                        // Parts already in flight finish; the rest are never issued.
                        p.parts = p.issued;
                    }
                }
            }
            let all_issued = self.requests.get(&id).is_none_or(|p| p.issued == p.parts);
            if all_issued {
                self.queue.pop_front();
                self.finish_if_done(id);
            }
        }
        if pushed && self.front().commit_requests() {
            self.evtchn.notify(self.port);
        }
    }

    /// After a shortage with nothing in flight: from now on parts of at most
    /// [`MAX_SEGMENTS_PER_REQUEST`] pages, if they were larger and no request has issued a
    /// part yet (the parts' offsets follow from their size). Returns whether it changed.
    fn use_direct_requests(&mut self, e: BlkError) -> bool {
        if self.max_segments <= MAX_SEGMENTS_PER_REQUEST
            || self.requests.values().any(|p| p.issued > 0)
        {
            return false;
        }
        warn!(
            "blkfront: {}: {e} for a request of {} pages: using requests of {} pages from now on",
            self.device.path, self.max_segments, MAX_SEGMENTS_PER_REQUEST
        );
        self.max_segments = MAX_SEGMENTS_PER_REQUEST;
        let part = self.part_bytes();
        for p in self.requests.values_mut() {
            // A flush or discard is one part whatever its size (and may have been cut to
            // none by a failure before the ring): left as it is.
            if matches!(p.kind, Kind::Read | Kind::Write) {
                p.parts = parts_of(p.kind, p.buf.len(), part);
            }
        }
        true
    }

    /// Builds the next ring request of `id`, with `ring_id` (its slot's), and pushes it;
    /// returns what its slot holds until the response.
    fn issue_part(&mut self, id: u64, ring_id: u64) -> Result<InFlight<P::Page>, BlkError> {
        // Queued ids always name a live request; were one missing, fail it, not panic.
        let p = self.requests.get(&id).ok_or(BlkError::Device(DeviceError::NotConnected))?;
        let (kind, sector, part) = (p.kind, p.sector, p.issued);
        let offset = part * self.part_bytes();
        let len = p.buf.len().saturating_sub(offset).min(self.part_bytes());
        let (op, segs) = match kind {
            Kind::Read => (Op::Read, self.prepare_pages(id, offset, len, false)?),
            Kind::Write => (Op::Write, self.prepare_pages(id, offset, len, true)?),
            Kind::Flush(op) => (op, Vec::new()),
            Kind::Discard(_) => (Op::Discard, Vec::new()),
        };
        let sector_number = sector + (offset / SECTOR_SIZE as usize) as u64;
        let descriptors = segments(&segs, len);
        let mut indirect = Vec::new();
        let pushed = match kind {
            Kind::Discard(sectors) => {
                let req = BlkifRequestDiscard {
                    operation: Op::Discard as u8,
                    handle: self.handle,
                    id: ring_id,
                    sector_number: sector,
                    nr_sectors: sectors,
                    ..Default::default()
                };
                self.front().push_request_as(req)
            }
            _ if descriptors.len() > MAX_SEGMENTS_PER_REQUEST => {
                indirect = match self.prepare_indirect(&descriptors) {
                    Ok(pages) => pages,
                    Err(e) => {
                        self.release(segs);
                        return Err(e);
                    }
                };
                let mut req = BlkifRequestIndirect {
                    operation: Op::Indirect as u8,
                    indirect_op: op as u8,
                    // At most MAX_INDIRECT_SEGMENTS (256): `max_segments` caps the part.
                    nr_segments: descriptors.len() as u16,
                    id: ring_id,
                    sector_number,
                    handle: self.handle,
                    ..Default::default()
                };
                for (r, g) in req.indirect_grefs.iter_mut().zip(&indirect) {
                    *r = g.gref;
                }
                self.front().push_request_as(req)
            }
            _ => {
                let mut req = BlkifRequest {
                    operation: op as u8,
                    // At most MAX_SEGMENTS_PER_REQUEST (11): the arm above takes more.
                    nr_segments: descriptors.len() as u8,
                    handle: self.handle,
                    id: ring_id,
                    sector_number,
                    ..Default::default()
                };
                for (s, d) in req.seg.iter_mut().zip(descriptors) {
                    *s = d;
                }
                self.front().push_request(req)
            }
        };
        if pushed.is_err() {
            // Cannot happen: a free slot means a free ring entry (each ring request holds
            // its slot until its response is taken). Undo rather than trust that.
            self.release(segs);
            self.release(indirect);
            return Err(BlkError::Device(DeviceError::NotConnected));
        }
        if let Some(p) = self.requests.get_mut(&id) {
            p.issued += 1;
        }
        Ok(InFlight { request: id, op, offset, len, segs, indirect })
    }

    /// Bounce pages for `len` bytes at `offset` of request `id`'s buffer, granted to the
    /// backend: filled with the data for a write (read-only grant), zeroed for a read
    /// (writable grant). Either way nothing else of ours is in them.
    fn prepare_pages(
        &mut self,
        id: u64,
        offset: usize,
        len: usize,
        write: bool,
    ) -> Result<Vec<Granted<P::Page>>, BlkError> {
        let mut segs = Vec::with_capacity(len.div_ceil(PAGE_SIZE));
        for start in (0..len).step_by(PAGE_SIZE) {
            let Some(mut spare) = self.spare_page() else {
                self.release(segs);
                return Err(BlkError::Device(DeviceError::NoMemory));
            };
            let n = (len - start).min(PAGE_SIZE);
            let page = spare.page();
            match self.requests.get(&id) {
                Some(p) if write => {
                    let at = offset + start;
                    page.write(0, &p.buf[at..at + n]);
                    page.fill_from(n, 0);
                }
                _ => page.fill_from(0, 0),
            }
            match self.grant_filled(spare, write) {
                Ok(g) => segs.push(g),
                Err(e) => {
                    self.release(segs);
                    return Err(e);
                }
            }
        }
        Ok(segs)
    }

    /// Indirect pages holding `descriptors`, [`SEGMENTS_PER_INDIRECT_PAGE`] to a page, zero
    /// after the last, granted read-only: the backend only reads its segment list.
    fn prepare_indirect(
        &mut self,
        descriptors: &[BlkifRequestSegment],
    ) -> Result<Vec<Granted<P::Page>>, BlkError> {
        let mut pages = Vec::with_capacity(descriptors.len().div_ceil(SEGMENTS_PER_INDIRECT_PAGE));
        for chunk in descriptors.chunks(SEGMENTS_PER_INDIRECT_PAGE) {
            let Some(mut spare) = self.spare_page() else {
                self.release(pages);
                return Err(BlkError::Device(DeviceError::NoMemory));
            };
            let mut bytes = [0u8; PAGE_SIZE];
            for (at, d) in bytes.chunks_exact_mut(8).zip(chunk) {
                at.copy_from_slice(&d.to_bytes());
            }
            spare.page().write(0, &bytes);
            match self.grant_filled(spare, true) {
                Ok(g) => pages.push(g),
                Err(e) => {
                    self.release(pages);
                    return Err(e);
                }
            }
        }
        Ok(pages)
    }

    /// A page for a ring request: a persistent one if there is one, else one of ours, else
    /// one from the guest.
    fn spare_page(&mut self) -> Option<Spare<P::Page>> {
        self.pool.take_spare(&mut self.pages)
    }

    /// Grants a filled page to the backend, read-only if it only reads it (but writable
    /// with persistent grants, as the backend then maps them all), unless it already is
    /// granted (persistent).
    fn grant_filled(
        &mut self,
        spare: Spare<P::Page>,
        readonly: bool,
    ) -> Result<Granted<P::Page>, BlkError> {
        let readonly = readonly && !self.persistent_grants;
        self.pool.grant(&mut self.pages, spare, readonly).map_err(BlkError::from)
    }

    /// Takes back the pages of `segs` for reuse (see [`settle`](Self::settle)).
    fn release(&mut self, segs: impl IntoIterator<Item = Granted<P::Page>>) {
        for g in segs {
            let settled = self.settle(g);
            self.pool.recycle(settled);
        }
    }

    /// `g` after its request: persistent if it was, or if the backend still maps it and
    /// offered persistent grants (while we keep fewer than [`MAX_PERSISTENT_GRANTS`]);
    /// else its grant ends, or, if the backend will not let go of it, it is quarantined.
    fn settle(&mut self, g: Granted<P::Page>) -> Settled<P::Page> {
        self.pool.settle(&mut self.pages, g, self.persistent_grants)
    }

    /// One response, copied out of the ring: matched to its slot through the id we gave
    /// it, checked, and the slot's request completed.
    fn handle_response(&mut self, rsp: BlkifResponse) {
        // The id is the backend's claim: it must name a ring request in flight.
        let Some(flight) = self.slots.take(rsp.id) else {
            self.stats.unknown_responses += 1;
            let n = self.stats.unknown_responses;
            // At the 1st, 2nd, 4th... only: a flood of them must not become one of lines.
            if n.is_power_of_two() {
                warn!("blkfront: dropped response with unknown id {:#x} ({n} so far)", rsp.id);
            }
            return;
        };

        let result = if rsp.operation != flight.op as u8 {
            Err(BlkError::BadResponse)
        } else {
            match Status::try_from(rsp.status) {
                Ok(Status::Okay) => Ok(()),
                Ok(Status::Error) => Err(BlkError::Io),
                Ok(Status::EOpNotSupp) => Err(BlkError::NotSupported),
                Err(_) => Err(BlkError::BadResponse),
            }
        };
        if result == Err(BlkError::BadResponse) {
            self.stats.bad_responses += 1;
            let n = self.stats.bad_responses;
            if n.is_power_of_two() {
                warn!(
                    "blkfront: bad response to {:?} (op {}, status {}): request failed ({n} so far)",
                    flight.op, rsp.operation, rsp.status
                );
            }
        }
        let InFlight { request, op, offset, len, segs, indirect } = flight;
        // End the data grants before reading the pages: once a grant has ended the backend
        // can no longer write that page while we copy from it. A page it still holds
        // (quarantined) fails a read: its content is not settled. Persistent pages keep
        // their grant (see the module's docs).
        let mut pages = Vec::with_capacity(segs.len());
        let mut held = false;
        for g in segs {
            match self.settle(g) {
                Settled::Held => held = true,
                page => pages.push(page),
            }
        }
        let result = match result {
            Ok(()) if op == Op::Read && held => Err(BlkError::BadResponse),
            other => other,
        };
        if let Some(p) = self.requests.get_mut(&request) {
            match result {
                Ok(()) if op == Op::Read => {
                    for (chunk, page) in p.buf[offset..offset + len]
                        .chunks_mut(PAGE_SIZE)
                        .zip(pages.iter().filter_map(Settled::page))
                    {
                        page.read(0, chunk);
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    p.error.get_or_insert(e);
                }
            }
            p.done += 1;
        }
        for page in pages {
            self.pool.recycle(page);
        }
        self.release(indirect);
        self.finish_if_done(request);
    }

    /// Delivers `id`'s completion once every ring request issued for it is back.
    fn finish_if_done(&mut self, id: u64) {
        let Some(p) = self.requests.get(&id) else { return };
        if p.done < p.parts || p.issued < p.parts {
            return;
        }
        let Some(p) = self.requests.remove(&id) else { return };
        if !p.abandoned {
            let result = p.error.map_or(Ok(()), Err);
            self.completions.push_back(Completion { id: RequestId(id), result, data: p.buf });
        }
    }

    /// Stops the device: every request fails with `error`, every grant we can end ends,
    /// pages the backend holds stay in quarantine. Used when the ring breaks, when the
    /// backend closes, and at close.
    pub(crate) fn fail_all(&mut self, error: BlkError) {
        self.stopped = Some(error);
        self.queue.clear();
        for flight in self.slots.take_all() {
            self.release(flight.segs);
            self.release(flight.indirect);
        }
        for (id, p) in core::mem::take(&mut self.requests) {
            if !p.abandoned {
                let done = Completion { id: RequestId(id), result: Err(error), data: p.buf };
                self.completions.push_back(done);
            }
        }
    }

    /// The first half of a reconnect: takes back the pages of every ring request in flight
    /// on the old ring (its grants end: the old backend is gone) and makes every request not
    /// completed whole again, to be issued from its first part; abandoned ones are dropped,
    /// ones that already failed complete with their error. Returns how many ring requests
    /// were in flight.
    pub(crate) fn take_back_in_flight(&mut self) -> usize {
        let flights = self.slots.take_all();
        let in_flight = flights.len();
        for flight in flights {
            self.release(flight.segs);
            self.release(flight.indirect);
        }
        self.queue.clear();
        for (id, p) in core::mem::take(&mut self.requests) {
            if p.abandoned {
                continue;
            }
            if let Some(e) = p.error {
                let done = Completion { id: RequestId(id), result: Err(e), data: p.buf };
                self.completions.push_back(done);
                continue;
            }
            self.requests.insert(id, Pending { issued: 0, done: 0, ..p });
        }
        in_flight
    }

    /// The second half of a reconnect: the new connection replaces the old (whose ring and
    /// pages go back to the guest, whose port is closed through the old domain's `evtchn`),
    /// the features are the new backend's, and the requests kept are checked against the
    /// new disk, then queued again in the order they came.
    pub(crate) fn resume_on(&mut self, mut link: Link<P>, evtchn: E) {
        let mut old_evtchn = core::mem::replace(&mut self.evtchn, evtchn);
        let size = link.ring.front().size();
        let old_ring = core::mem::replace(&mut self.ring, link.ring);
        let old_port = core::mem::replace(&mut self.port, link.port);
        core::mem::replace(&mut self.pool, new_pool(link.backend)).shut_down(&mut self.pages);
        self.pages.free_ring(old_ring);
        old_evtchn.close(old_port);
        self.device = link.device;
        self.info = link.info;
        self.max_segments = max_segments_for(link.info);
        self.persistent_grants = link.info.features.persistent;
        self.slots = SlotTable::new(size as usize, 64);
        self.stopped = None;
        for (id, mut p) in core::mem::take(&mut self.requests) {
            match self.admit(p.kind, p.sector, p.buf.len()) {
                Ok(Some(kind)) => {
                    p.kind = kind;
                    p.parts = parts_of(kind, p.buf.len(), self.part_bytes());
                    self.requests.insert(id, p);
                    self.queue.push_back(id);
                }
                result => {
                    let result = result.map(|_| ());
                    if let Err(e) = result {
                        warn!(
                            "blkfront: {}: request {id} failed: the new backend: {e}",
                            self.device.path
                        );
                    }
                    self.completions.push_back(Completion {
                        id: RequestId(id),
                        result,
                        data: p.buf,
                    });
                }
            }
        }
        self.issue();
    }

    /// After the backend disconnected: fails what is left (the completions are returned),
    /// gives the pool's pages and the ring back to the guest and closes the event channel.
    /// Quarantined pages the backend still holds are dropped, i.e. leaked (see [`Page`]).
    pub(crate) fn shut_down(mut self) -> Vec<Completion> {
        self.fail_all(BlkError::Device(DeviceError::NotConnected));
        // Every page is back from the slots. The backend, disconnected, should have
        // unmapped the persistent ones: their grants end now, or they stay held.
        self.pool.shut_down(&mut self.pages);
        self.pages.free_ring(self.ring);
        self.evtchn.close(self.port);
        self.completions.into()
    }
}

/// Ring requests a request of `kind` over `len` bytes takes, `part` bytes each at most.
fn parts_of(kind: Kind, len: usize, part: usize) -> usize {
    match kind {
        Kind::Read | Kind::Write => len.div_ceil(part),
        Kind::Flush(_) | Kind::Discard(_) => 1,
    }
}

/// Pages one ring request carries at most with a backend offering `info`: its number is a
/// claim; anything up to the direct limit means no use for indirect requests, anything above
/// is capped at what we are willing to pin.
fn max_segments_for(info: DiskInfo) -> usize {
    match info.features.max_indirect_segments as usize {
        n if n > MAX_SEGMENTS_PER_REQUEST => n.min(MAX_INDIRECT_SEGMENTS),
        _ => MAX_SEGMENTS_PER_REQUEST,
    }
}

fn new_pool<P: Page>(backend: DomId) -> PagePool<P> {
    PagePool::new("blkfront", backend, MAX_PERSISTENT_GRANTS, MAX_QUARANTINED)
}

/// The segments describing `len` bytes of data in `segs`, one page each: whole pages but
/// for a shorter last one (lengths are whole 512-byte sectors).
fn segments<P>(segs: &[Granted<P>], len: usize) -> Vec<BlkifRequestSegment> {
    let mut left = len;
    segs.iter()
        .map(|g| {
            let sectors = left.min(PAGE_SIZE) / SECTOR_SIZE as usize;
            left -= sectors * SECTOR_SIZE as usize;
            // `sectors` is 1..=8 (each page holds at least one sector of data): fits u8.
            BlkifRequestSegment {
                gref: g.gref,
                first_sect: 0,
                last_sect: (sectors - 1) as u8,
                ..Default::default()
            }
        })
        .collect()
}
