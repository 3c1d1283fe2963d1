//! The FIFO event channel ABI, guest side.
//!
//! Each port has a 32-bit event word in an *event array* page the guest registers with
//! `EVTCHNOP_expand_array` (1024 words per page): PENDING, MASKED, LINKED and BUSY bits and
//! a 17-bit link to the next port in its queue. Each vCPU has a *control block* (registered
//! with `EVTCHNOP_init_control`) with a `ready` bit and a `head` port for each of 16
//! priority queues, 0 the highest. To raise an unmasked event Xen sets PENDING and, unless
//! the word is already LINKED, sets LINKED and appends the port to its queue: it stores the
//! port in the tail's link if the tail is still LINKED; otherwise the queue was empty, and it
//! stores the port in the queue's head and sets the queue's ready bit. [`Fifo::demux`] walks the queues, clearing LINKED as it goes,
//! which is how Xen learns that a queue has emptied.
//!
//! Xen changes these words concurrently with us, so every access is atomic and read-modify-
//! writes are locked instructions, as in Linux's `events_fifo.c`. Nothing read from them is
//! trusted: heads and links are checked against the registered pages, unknown ready bits are
//! ignored, and the work per call is bounded.

use core::mem::{align_of, offset_of, size_of};
use core::ptr::{self, NonNull};
use core::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU8, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

use xen_sys::{
    evtchn_fifo_control_block, vcpu_info, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINKED,
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_NR_CHANNELS,
    EVTCHN_FIFO_PENDING,
};

use crate::abi::{BadLink, BadPort, DemuxReport, EventAbi, Unmask};
use crate::Port;

/// Event words in one 4 KiB event array page.
pub const EVENT_WORDS_PER_PAGE: usize = 4096 / size_of::<u32>();
/// Pages that cover every port a link can name (Xen's `EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`).
pub const MAX_EVENT_ARRAY_PAGES: usize = EVTCHN_FIFO_NR_CHANNELS as usize / EVENT_WORDS_PER_PAGE;

/// An event array page as the guest allocates it, before it is shared.
pub type EventArrayPage = [u32; EVENT_WORDS_PER_PAGE];

type SharedPage = [AtomicU32; EVENT_WORDS_PER_PAGE];

const QUEUES: usize = EVTCHN_FIFO_MAX_QUEUES as usize;
const QUEUE_BITS: u32 = (1 << QUEUES) - 1;
const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;
const LINK_MASK: u32 = EVTCHN_FIFO_LINK_MASK;

/// How often [`Fifo::unmask`] retries while Xen holds the word BUSY before leaving the
/// unmask to `EVTCHNOP_unmask`. Xen holds it for a few compare-exchanges, so this is only
/// reached if the word is stuck, and the hypercall is correct in every case.
const UNMASK_TRIES: usize = 64;

// The atomic views below reinterpret Xen's fields; they must agree in size and alignment.
const _: () = assert!(size_of::<AtomicU32>() == size_of::<u32>());
const _: () = assert!(align_of::<AtomicU32>() == align_of::<u32>());
const _: () = assert!(size_of::<SharedPage>() == size_of::<EventArrayPage>());
// Offsets from `public/event_channel.h`; xen-sys is bindgen output, so these guard against
// it describing another Xen.
const _: () = assert!(offset_of!(evtchn_fifo_control_block, ready) == 0);
const _: () = assert!(offset_of!(evtchn_fifo_control_block, head) == 8);
const _: () = assert!(size_of::<evtchn_fifo_control_block>() == 72);
const _: () = assert!(offset_of!(vcpu_info, evtchn_upcall_pending) == 0);
const _: () = assert!(MAX_EVENT_ARRAY_PAGES == 128);

// The guest keeps its view in a `static` and reaches it from any context.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Fifo<'static>>();
    shareable::<VcpuQueues<'static>>();
};

/// How many event array pages must be registered for `port` to have an event word:
/// before binding a port, the guest registers pages until [`Fifo::covers`] it.
pub const fn pages_needed_for(port: Port) -> usize {
    port.0 as usize / EVENT_WORDS_PER_PAGE + 1
}

/// Readies a fresh page for `EVTCHNOP_expand_array`: every port on it masked. Xen re-raises
/// events that were pending on those ports as soon as the page is registered; masked, they
/// wait for the port's unmask instead of being queued before [`Fifo::add_array_page`] has
/// made the page known here.
pub fn init_array_page(page: &mut EventArrayPage) {
    page.fill(MASKED);
}

/// The page is not registered: all `N` slots are in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayFull;

/// One vCPU's FIFO event state: its control block, the event array pages registered so far
/// (at most `N`), and where each queue's walk stopped. The pages are the domain's, shared by
/// every vCPU; another vCPU's queues are walked through [`Fifo::other_vcpu`].
///
/// Shared by reference: see [`EventAbi`] for which calls may overlap, and
/// [`add_array_page`](Self::add_array_page) for growing it.
pub struct Fifo<'a, const N: usize = MAX_EVENT_ARRAY_PAGES> {
    queues: Queues<'a>,
    /// `pages[..nr_pages]` are registered, in the order Xen numbers them, each valid for
    /// `'a`. A slot is written before `nr_pages` is raised past it (Release) and read only
    /// below a count loaded with Acquire, so a lookup racing with a registration sees
    /// either the old count or the new count and the page behind it.
    pages: [AtomicPtr<SharedPage>; N],
    nr_pages: AtomicUsize,
}

/// A vCPU's control block and upcall flag, and the state of its queues' walk.
struct Queues<'a> {
    ready: &'a AtomicU32,
    heads: &'a [AtomicU32; QUEUES],
    upcall_pending: &'a AtomicU8,
    /// The next port to consume in each queue; 0 when the walk reached the tail, so the
    /// next one is the head Xen writes to the control block when it finds the queue empty.
    /// Port 0 is never bound, so it cannot be a real link. Only `demux` touches it, and it
    /// never runs concurrently with itself, so relaxed accesses suffice.
    next: [AtomicU32; QUEUES],
    /// Queues left with events when a [`demux`](Self::demux) ran out of work: their ready
    /// bits were taken from the control block and Xen will not set them again, since to
    /// Xen the queues are not empty. Relaxed, as `next`.
    unfinished: AtomicU32,
}

/// Another vCPU's queues over the event array of the boot vCPU's [`Fifo`]: Xen queues the
/// events of a port bound to a vCPU (`EVTCHNOP_bind_vcpu`) on that vCPU's control block,
/// and that vCPU walks them. Port operations go through the [`Fifo`].
pub struct VcpuQueues<'a, const N: usize = MAX_EVENT_ARRAY_PAGES> {
    queues: Queues<'a>,
    array: &'a Fifo<'a, N>,
}

impl<'a> Queues<'a> {
    /// # Safety
    /// As for [`Fifo::new`].
    unsafe fn new(control: NonNull<evtchn_fifo_control_block>, vcpu: NonNull<vcpu_info>) -> Self {
        let c = control.as_ptr();
        let v = vcpu.as_ptr();
        // SAFETY: the fields are in bounds of live objects (the caller's contract 1); the
        // atomic types match them in size and alignment (asserted above) and contract 2
        // rules out non-atomic access for as long as the references live.
        unsafe {
            Queues {
                ready: &*(&raw const (*c).ready).cast::<AtomicU32>(),
                heads: &*(&raw const (*c).head).cast::<[AtomicU32; QUEUES]>(),
                upcall_pending: &*(&raw const (*v).evtchn_upcall_pending).cast::<AtomicU8>(),
                next: [const { AtomicU32::new(0) }; QUEUES],
                unfinished: AtomicU32::new(0),
            }
        }
    }

    fn restart(&self) {
        for next in &self.next {
            next.store(0, Relaxed);
        }
        self.unfinished.store(0, Relaxed);
    }

    /// [`Fifo::demux`] of these queues, their ports' words looked up in `array`.
    fn demux<const N: usize>(
        &self,
        array: &Fifo<'_, N>,
        handle: &mut impl FnMut(Port),
    ) -> DemuxReport {
        let mut report = DemuxReport::default();
        let mut budget = array.max_ports() as usize + QUEUES;
        let mut ready = self.unfinished.load(Relaxed);
        loop {
            // Cleared first: Xen sets it again with any ready bit it sets from here on.
            self.upcall_pending.store(0, SeqCst);
            ready |= self.take_ready(&mut report);
            while ready != 0 && budget != 0 {
                budget -= 1;
                let queue = ready.trailing_zeros() as usize;
                if !self.consume_one(array, queue, &mut report, handle) {
                    ready &= !(1 << queue);
                }
                ready |= self.take_ready(&mut report);
            }
            if ready == 0 && self.upcall_pending.load(SeqCst) == 0 {
                self.unfinished.store(0, Relaxed);
                return report;
            }
            // Another pass costs too, so a flag that stays set cannot hold us here.
            if budget == 0 {
                self.unfinished.store(ready, Relaxed);
                self.upcall_pending.store(1, SeqCst);
                report.cut_short = true;
                return report;
            }
            budget -= 1;
        }
    }

    /// Takes the ready bits Xen set since we last looked; bits of queues that do not exist
    /// go to the report.
    fn take_ready(&self, report: &mut DemuxReport) -> u32 {
        let bits = self.ready.swap(0, SeqCst);
        report.bogus_ready |= bits & !QUEUE_BITS;
        bits & QUEUE_BITS
    }

    /// Takes the next port off `queue` and delivers its event if it has one. Returns whether
    /// the queue may hold more.
    fn consume_one<const N: usize>(
        &self,
        array: &Fifo<'_, N>,
        queue: usize,
        report: &mut DemuxReport,
        handle: &mut impl FnMut(Port),
    ) -> bool {
        let next = &self.next[queue];
        let port = match next.load(Relaxed) {
            0 => self.heads[queue].load(SeqCst),
            p => p,
        };
        if port == 0 {
            // A ready bit without a head: nothing was queued.
            return false;
        }
        let Some(word) = array.word(port) else {
            report.bad_link = Some(BadLink { queue: queue as u8, port: Port(port) });
            next.store(0, Relaxed);
            return false;
        };

        let link = clear_linked(word);
        next.store(link, Relaxed);
        // Clearing only if pending and unmasked, in one step, so that a port the guest
        // masked (on another path) keeps its event for the unmask.
        let take = |w: u32| (w & (PENDING | MASKED) == PENDING).then_some(w & !PENDING);
        if word.fetch_update(SeqCst, SeqCst, take).is_ok() {
            report.delivered += 1;
            handle(Port(port));
        }
        link != 0
    }
}

impl<'a, const N: usize> Fifo<'a, N> {
    /// Views `control` and the upcall flag of `vcpu` as atomics. No event array page is
    /// registered yet.
    ///
    /// The control block must be zeroed before `EVTCHNOP_init_control` registers it (a page
    /// offset in the hypercall's argument, 8-byte aligned). For a given vCPU there must be
    /// one view of its queues at a time (this, or a [`VcpuQueues`]): the queue walk's state
    /// lives there, and a second walker would strand events.
    ///
    /// # Safety
    /// 1. `control` points to this vCPU's FIFO control block and `vcpu` to this vCPU's
    ///    `vcpu_info`, both mapped and writable for `'a`.
    /// 2. For `'a`, this domain accesses the control block and `evtchn_upcall_pending` only
    ///    atomically.
    pub unsafe fn new(
        control: NonNull<evtchn_fifo_control_block>,
        vcpu: NonNull<vcpu_info>,
    ) -> Self {
        const { assert!(N <= MAX_EVENT_ARRAY_PAGES, "more pages than links can name") };
        Fifo {
            // SAFETY: the caller's contract is Queues::new's.
            queues: unsafe { Queues::new(control, vcpu) },
            pages: [const { AtomicPtr::new(ptr::null_mut()) }; N],
            nr_pages: AtomicUsize::new(0),
        }
    }

    /// Views another vCPU's control block (registered for it with `EVTCHNOP_init_control`)
    /// and upcall flag, for that vCPU to walk its queues over this event array.
    ///
    /// # Safety
    /// As for [`Fifo::new`], for that vCPU's control block and `vcpu_info`, for `'a`.
    pub unsafe fn other_vcpu(
        &'a self,
        control: NonNull<evtchn_fifo_control_block>,
        vcpu: NonNull<vcpu_info>,
    ) -> VcpuQueues<'a, N> {
        // SAFETY: the caller's contract is Queues::new's.
        VcpuQueues { queues: unsafe { Queues::new(control, vcpu) }, array: self }
    }

    /// Registers the event array page that `EVTCHNOP_expand_array` just gave Xen, making
    /// ports `max_ports()..max_ports() + 1024` usable.
    ///
    /// It may run while [`demux`](Self::demux) and the port operations run, on any CPU or
    /// from a handler (binding a port beyond the pages so far): they see the page once this
    /// returns, or not at all. Prepare the page with [`init_array_page`] first: its ports
    /// then stay masked, so Xen queues none of them until the guest unmasks one, which it
    /// can only do once the page is registered here. A port queued on a page not registered
    /// here is taken for a corrupted link.
    ///
    /// # Safety
    /// 1. `page` is the page Xen accepted in the latest successful `EVTCHNOP_expand_array`,
    ///    mapped and writable for `'a`.
    /// 2. For `'a`, this domain accesses it only atomically.
    /// 3. Calls on one `Fifo` do not overlap (the guest holds a lock around the hypercall
    ///    and this call, which also keeps the pages in Xen's order): two at once would fill
    ///    the same slot and count two pages.
    pub unsafe fn add_array_page(&self, page: NonNull<EventArrayPage>) -> Result<(), ArrayFull> {
        // Relaxed: only this function stores the count, and calls are serialized (contract 3).
        let n = self.nr_pages.load(Relaxed);
        let slot = self.pages.get(n).ok_or(ArrayFull)?;
        slot.store(page.as_ptr().cast::<SharedPage>(), Relaxed);
        self.nr_pages.store(n + 1, Release);
        Ok(())
    }

    /// Starts over with no event array page and no queue walk in progress: after a resume in
    /// a new domain, Xen knows nothing of our control block or pages, and the guest registers
    /// them again (zeroed control block, [`init_array_page`]d pages) before binding ports.
    ///
    /// # Safety
    /// No other call on this `Fifo` runs meanwhile (the guest resumes on one vCPU with events
    /// masked), and the control block is zeroed before Xen sees it again.
    pub unsafe fn restart(&self) {
        self.nr_pages.store(0, Release);
        self.queues.restart();
    }

    /// Whether `port` has an event word in a registered page.
    pub fn covers(&self, port: Port) -> bool {
        port.0 < self.max_ports()
    }

    fn word(&self, port: u32) -> Option<&'a AtomicU32> {
        let p = port as usize;
        let index = p / EVENT_WORDS_PER_PAGE;
        if index >= self.nr_pages.load(Acquire) {
            return None;
        }
        let page = self.pages[index].load(Relaxed);
        // SAFETY: below the count, so `add_array_page` stored this pointer before
        // publishing the count we acquired: a page valid for 'a and accessed only
        // atomically (its contract), which `SharedPage` matches in size and alignment.
        let page = unsafe { &*page };
        Some(&page[p % EVENT_WORDS_PER_PAGE])
    }

    fn port_word(&self, port: Port) -> Result<&'a AtomicU32, BadPort> {
        self.word(port.0).ok_or(BadPort(port))
    }

    /// Delivers every pending, unmasked event to `handle`, once per event, highest priority
    /// queue first, until no upcall is pending. An event's PENDING bit is cleared before its
    /// handler runs, so one raised again during the handler is delivered again.
    ///
    /// After each event the ready word is read again and the highest ready queue is served
    /// next, so a queue-0 event raised meanwhile goes before the rest of a lower queue.
    ///
    /// The work is bounded by the number of ports plus one step per queue: each port is
    /// queued at most once at a time, so that covers every event queued when the call began
    /// (a pass started because the upcall flag was set again counts as a step). Past it the
    /// call returns with [`DemuxReport::cut_short`], leaving the upcall pending
    /// and the walk's state here for the next call.
    ///
    /// Handlers may mask, unmask and clear ports and register pages through `self`. Must
    /// not run concurrently with itself for this vCPU (see [`EventAbi`]).
    pub fn demux(&self, mut handle: impl FnMut(Port)) -> DemuxReport {
        self.queues.demux(self, &mut handle)
    }
}

impl<const N: usize> VcpuQueues<'_, N> {
    /// [`Fifo::demux`] for this vCPU's queues: on this vCPU, not concurrently with itself.
    pub fn demux(&self, mut handle: impl FnMut(Port)) -> DemuxReport {
        self.queues.demux(self.array, &mut handle)
    }

    /// Forgets the walk in progress: after a resume in a new domain, once the control
    /// block is zeroed and registered again (see [`Fifo::restart`]).
    ///
    /// # Safety
    /// This vCPU's [`demux`](Self::demux) does not run meanwhile (the guest resumes with
    /// the other vCPUs down).
    pub unsafe fn restart(&self) {
        self.queues.restart();
    }
}

/// Takes `word` off its queue: clears LINKED and the link, returning the link. Xen only
/// stores a link into a word that is LINKED, with a compare-exchange, so one atomic
/// read-modify-write settles the race: either Xen's store came first and we return its link,
/// or ours did, Xen's exchange fails, it finds the word unlinked and starts the queue afresh
/// from the head in the control block, setting the ready bit we check next.
fn clear_linked(word: &AtomicU32) -> u32 {
    word.fetch_and(!(LINKED | LINK_MASK), SeqCst) & LINK_MASK
}

impl<const N: usize> EventAbi for Fifo<'_, N> {
    fn demux(&self, handle: &mut dyn FnMut(Port)) -> DemuxReport {
        Fifo::demux(self, handle)
    }

    /// Stops `port` from interrupting us; its events stay pending (and unqueued) until
    /// [`unmask`](Self::unmask).
    fn mask(&self, port: Port) -> Result<(), BadPort> {
        self.port_word(port)?.fetch_or(MASKED, SeqCst);
        Ok(())
    }

    /// Lets `port` interrupt us again. An event that arrived while masked was not queued,
    /// and only Xen may queue it: then the port stays masked and the result is
    /// [`Unmask::NeedsHypercall`], and `EVTCHNOP_unmask` unmasks and queues it.
    fn unmask(&self, port: Port) -> Result<Unmask, BadPort> {
        let word = self.port_word(port)?;
        let mut w = word.load(SeqCst);
        for _ in 0..UNMASK_TRIES {
            if w & MASKED == 0 {
                return Ok(Unmask::Done);
            }
            if w & PENDING != 0 {
                return Ok(Unmask::NeedsHypercall);
            }
            // While Xen links a new event after this one it sets BUSY, and it bounds its own
            // retries by our not unmasking meanwhile: expecting BUSY clear makes the
            // exchange fail until Xen is done.
            let old = w & !BUSY;
            match word.compare_exchange(old, old & !MASKED, SeqCst, SeqCst) {
                Ok(_) => return Ok(Unmask::Done),
                Err(now) => w = now,
            }
        }
        Ok(Unmask::NeedsHypercall)
    }

    /// Whether an event is pending on `port` (masked or not).
    fn is_pending(&self, port: Port) -> Result<bool, BadPort> {
        Ok(self.port_word(port)?.load(SeqCst) & PENDING != 0)
    }

    /// Consumes a pending event on `port` without delivering it: for a masked port that is
    /// polled (SCHEDOP_poll) rather than served by the upcall. Returns whether one was
    /// pending. If the port is still queued, the walk finds it not pending and skips it.
    fn clear_pending(&self, port: Port) -> Result<bool, BadPort> {
        Ok(self.port_word(port)?.fetch_and(!PENDING, SeqCst) & PENDING != 0)
    }

    /// Ports `0..max_ports()` have event words in registered pages.
    fn max_ports(&self) -> u32 {
        (self.nr_pages.load(Acquire) * EVENT_WORDS_PER_PAGE) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{FakeXen, FifoXen};

    /// Unmasks `ports`, as binding them would; none may have an event waiting.
    fn bind<const N: usize>(fifo: &Fifo<'_, N>, ports: impl IntoIterator<Item = u32>) {
        for p in ports {
            assert_eq!(fifo.unmask(Port(p)), Ok(Unmask::Done));
        }
    }

    fn delivered(fifo: &Fifo<'_>) -> (Vec<u32>, DemuxReport) {
        let mut got = Vec::new();
        let report = fifo.demux(|p| got.push(p.0));
        (got, report)
    }

    const LOW: usize = xen_sys::EVTCHN_FIFO_PRIORITY_MIN as usize;
    const DEFAULT: usize = xen_sys::EVTCHN_FIFO_PRIORITY_DEFAULT as usize;

    #[test]
    fn single_event_once() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [5]);
        x.raise(5);
        assert_eq!(x.upcall_pending().load(SeqCst), 1);
        assert_eq!(x.ready().load(SeqCst), 1 << DEFAULT);
        assert_eq!(x.head(DEFAULT).load(SeqCst), 5);
        assert_eq!(x.word(5).load(SeqCst), PENDING | LINKED);

        let (got, report) = delivered(&fifo);
        assert_eq!(got, [5]);
        assert_eq!(report, DemuxReport { delivered: 1, ..DemuxReport::default() });
        assert_eq!(x.word(5).load(SeqCst), 0, "unlinked, not pending");
        assert_eq!(x.ready().load(SeqCst), 0);
        assert_eq!(x.upcall_pending().load(SeqCst), 0);
        assert_eq!(delivered(&fifo), (vec![], DemuxReport::default()));
    }

    #[test]
    fn events_across_pages_arrive_in_the_order_raised() {
        let x = FifoXen::new(4);
        let fifo = x.abi();
        let ports = [4095, 1, 1023, 1024, 2047, 2048, 3000, 5];
        bind(&fifo, ports);
        for p in ports {
            x.raise(p);
        }
        let (got, report) = delivered(&fifo);
        assert_eq!(got, ports);
        assert!(report.is_clean());
        assert!(ports.iter().all(|&p| x.word(p).load(SeqCst) == 0));
    }

    #[test]
    fn every_port_is_deliverable() {
        let x = FifoXen::new(4);
        let fifo = x.abi();
        bind(&fifo, 1..4096);
        for p in 1..4096 {
            x.set_priority(p, (p % 16) as usize);
            x.raise(p);
        }
        let (mut got, report) = delivered(&fifo);
        assert_eq!(report.delivered, 4095);
        assert!(report.is_clean());
        got.sort_unstable();
        assert_eq!(got, (1..4096).collect::<Vec<_>>());
    }

    #[test]
    fn higher_priority_queues_go_first() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [10, 11, 12, 20, 21, 22, 30]);
        for p in [10, 11, 12] {
            x.set_priority(p, LOW);
        }
        for p in [20, 21, 22] {
            x.set_priority(p, 0);
        }
        for p in [10, 11, 30, 20, 12, 21] {
            x.raise(p);
        }
        let mut got = Vec::new();
        fifo.demux(|p| {
            got.push(p.0);
            // An urgent event raised while the lowest queue is served goes next.
            if p.0 == 10 {
                x.raise(22);
            }
        });
        assert_eq!(got, [20, 21, 30, 10, 22, 11, 12]);
    }

    #[test]
    fn masked_event_waits_and_unmask_asks_for_the_hypercall() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        assert_eq!(x.word(9).load(SeqCst), MASKED, "pages start masked");
        x.raise(9);
        assert_eq!(x.word(9).load(SeqCst), PENDING | MASKED, "pending, not queued");
        assert_eq!(x.upcall_pending().load(SeqCst), 0);
        assert_eq!(delivered(&fifo).0, []);

        assert_eq!(fifo.unmask(Port(9)), Ok(Unmask::NeedsHypercall));
        assert_eq!(x.word(9).load(SeqCst), PENDING | MASKED, "left for Xen to unmask");
        x.follow(9, Unmask::NeedsHypercall);
        assert_eq!(delivered(&fifo).0, [9]);

        // Without an event waiting, unmasking is ours alone.
        fifo.mask(Port(9)).unwrap();
        assert_eq!(fifo.unmask(Port(9)), Ok(Unmask::Done));
        assert_eq!(x.word(9).load(SeqCst), 0);
        assert_eq!(fifo.unmask(Port(9)), Ok(Unmask::Done), "already unmasked");
    }

    #[test]
    fn unmask_of_a_word_xen_holds_busy_is_left_to_xen() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        x.word(9).store(MASKED | BUSY, SeqCst);
        assert_eq!(fifo.unmask(Port(9)), Ok(Unmask::NeedsHypercall));
        assert_eq!(x.word(9).load(SeqCst), MASKED | BUSY, "not unmasked under Xen's feet");
    }

    #[test]
    fn polled_port_is_read_and_cleared_without_delivery() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        assert_eq!(fifo.is_pending(Port(8)), Ok(false));
        x.raise(8);
        assert_eq!(fifo.is_pending(Port(8)), Ok(true));
        assert_eq!(fifo.clear_pending(Port(8)), Ok(true));
        assert_eq!(fifo.clear_pending(Port(8)), Ok(false));
        assert_eq!(fifo.unmask(Port(8)), Ok(Unmask::Done));
        assert_eq!(delivered(&fifo).0, []);

        // Cleared while queued: the walk unlinks it without delivering.
        x.raise(8);
        assert_eq!(fifo.clear_pending(Port(8)), Ok(true));
        let (got, report) = delivered(&fifo);
        assert_eq!((got, report.delivered), (vec![], 0));
        assert_eq!(x.word(8).load(SeqCst), 0);
    }

    #[test]
    fn an_event_raised_again_while_queued_is_delivered_once() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [3, 4, 5]);
        x.raise(3);
        x.raise(4);
        x.raise(3);
        let mut got = Vec::new();
        fifo.demux(|p| {
            got.push(p.0);
            if p.0 == 3 {
                x.raise(4);
            }
        });
        assert_eq!(got, [3, 4]);

        // Once delivered, raising it again is a new event, even from its own handler.
        x.raise(5);
        let mut got = Vec::new();
        fifo.demux(|p| {
            got.push(p.0);
            if got.len() == 1 {
                x.raise(5);
            }
        });
        assert_eq!(got, [5, 5]);
    }

    #[test]
    fn each_vcpu_walks_the_queues_of_its_own_ports() {
        let x = FifoXen::new(2);
        let fifo = x.abi();
        let other = x.queues_of(&fifo, 1);
        bind(&fifo, [5, 6, 7, 1500]);
        for p in [6, 1500] {
            x.bind_vcpu(p, 1);
        }
        for p in [5, 6, 7, 1500] {
            x.raise(p);
        }
        assert_eq!(x.upcall_pending_of(1).load(SeqCst), 1);
        assert_eq!(delivered(&fifo).0, [5, 7]);
        let mut got = Vec::new();
        let report = other.demux(|p| got.push(p.0));
        assert_eq!(got, [6, 1500]);
        assert!(report.is_clean());
        assert_eq!(x.upcall_pending_of(1).load(SeqCst), 0);
        assert_eq!(x.ready_of(1).load(SeqCst), 0);

        // The port operations of the boot vCPU's view reach the other vCPU's ports.
        fifo.mask(Port(6)).unwrap();
        x.raise(6);
        x.raise(1500);
        let mut got = Vec::new();
        other.demux(|p| got.push(p.0));
        assert_eq!(got, [1500]);
        assert_eq!(fifo.unmask(Port(6)), Ok(Unmask::NeedsHypercall));
        x.follow(6, Unmask::NeedsHypercall);
        let mut got = Vec::new();
        other.demux(|p| got.push(p.0));
        assert_eq!(got, [6]);
        assert_eq!(delivered(&fifo).0, []);
    }

    #[test]
    fn ports_follow_the_registered_pages() {
        let x = FifoXen::new(0);
        let fifo = x.bare::<2>();
        assert_eq!(fifo.max_ports(), 0);
        assert!(!fifo.covers(Port(0)));
        assert_eq!(fifo.mask(Port(0)), Err(BadPort(Port(0))));
        assert_eq!(delivered_n(&fifo), 0);

        assert_eq!(pages_needed_for(Port(1)), 1);
        assert_eq!(pages_needed_for(Port(1023)), 1);
        assert_eq!(pages_needed_for(Port(1024)), 2);
        assert_eq!(pages_needed_for(Port(LINK_MASK)), MAX_EVENT_ARRAY_PAGES);

        x.grow(&fifo).unwrap();
        assert!(fifo.covers(Port(1023)) && !fifo.covers(Port(1024)));
        assert_eq!(fifo.unmask(Port(1024)), Err(BadPort(Port(1024))));
        x.grow(&fifo).unwrap();
        assert_eq!(fifo.max_ports(), 2048);
        assert_eq!(fifo.unmask(Port(1024)), Ok(Unmask::Done));
        assert_eq!(x.grow(&fifo), Err(ArrayFull));
        assert_eq!(fifo.max_ports(), 2048);
        assert_eq!(fifo.is_pending(Port(u32::MAX)), Err(BadPort(Port(u32::MAX))));
    }

    #[test]
    fn a_restart_forgets_every_page() {
        let x = FifoXen::new(0);
        let fifo = x.bare::<2>();
        x.grow(&fifo).unwrap();
        x.grow(&fifo).unwrap();
        assert_eq!(fifo.max_ports(), 2048);
        // SAFETY: nothing else runs on this Fifo; the simulated control block is zero.
        unsafe { fifo.restart() };
        assert_eq!(fifo.max_ports(), 0);
        assert_eq!(fifo.mask(Port(5)), Err(BadPort(Port(5))));
        assert_eq!(delivered_n(&fifo), 0);
    }

    #[test]
    fn a_handler_may_register_a_page_while_earlier_ports_keep_working() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [5, 6, 7]);
        x.raise(5);
        x.raise(6);
        let mut got = Vec::new();
        let report = fifo.demux(|p| {
            got.push(p.0);
            if p.0 == 5 {
                // Binding port 1500 takes a second page.
                assert!(!fifo.covers(Port(1500)));
                x.grow(&fifo).unwrap();
                bind(&fifo, [1500]);
                x.raise(1500);
                x.raise(7);
            }
        });
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(got, [5, 6, 1500, 7]);
        assert_eq!(fifo.max_ports(), 2048);

        fifo.mask(Port(6)).unwrap();
        for p in [5, 6, 7, 1500] {
            x.raise(p);
        }
        assert_eq!(delivered(&fifo).0, [5, 7, 1500]);
        assert_eq!(fifo.clear_pending(Port(6)), Ok(true));
    }

    #[test]
    fn lookups_racing_with_registration_see_whole_pages() {
        use std::sync::atomic::AtomicBool;
        let x = FifoXen::new(0);
        let fifo = x.bare::<8>();
        x.grow(&fifo).unwrap();
        bind(&fifo, [1]);
        let (started, done) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(SeqCst) {
                    // Every page the count admits is there, masked as prepared.
                    let pages = fifo.max_ports() / EVENT_WORDS_PER_PAGE as u32;
                    for page in 0..pages {
                        let last = Port((page + 1) * EVENT_WORDS_PER_PAGE as u32 - 1);
                        assert_eq!(fifo.is_pending(last), Ok(false));
                    }
                    fifo.mask(Port(1)).unwrap();
                    assert_eq!(fifo.unmask(Port(1)), Ok(Unmask::Done));
                    started.store(true, SeqCst);
                }
            });
            while !started.load(SeqCst) {
                std::hint::spin_loop();
            }
            while x.grow(&fifo).is_ok() {}
            done.store(true, SeqCst);
        });
        assert_eq!(fifo.max_ports(), 8 * EVENT_WORDS_PER_PAGE as u32);
    }

    fn delivered_n<const N: usize>(fifo: &Fifo<'_, N>) -> u32 {
        fifo.demux(|_| {}).delivered
    }

    #[test]
    fn a_link_beyond_the_pages_drops_the_rest_of_its_queue() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [3, 4, 6]);
        x.set_priority(6, 0);
        x.raise(3);
        x.raise(4);
        let w = x.word(3).load(SeqCst);
        assert_eq!(w & LINK_MASK, 4);
        x.word(3).store(w & !LINK_MASK | 2000, SeqCst);
        x.raise(6);

        let (got, report) = delivered(&fifo);
        assert_eq!(got, [6, 3]);
        assert_eq!(report.bad_link, Some(BadLink { queue: DEFAULT as u8, port: Port(2000) }));
        assert_eq!(report.delivered, 2);
        assert_eq!(x.word(4).load(SeqCst), PENDING | LINKED, "lost with its queue");
        assert_eq!(delivered(&fifo), (vec![], DemuxReport::default()));
    }

    #[test]
    fn a_head_beyond_the_pages_is_reported_and_other_queues_are_served() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [3]);
        x.head(2).store(70_000, SeqCst);
        x.ready().fetch_or(1 << 2, SeqCst);
        x.raise(3);
        let (got, report) = delivered(&fifo);
        assert_eq!(got, [3]);
        assert_eq!(report.bad_link, Some(BadLink { queue: 2, port: Port(70_000) }));
        assert_eq!(x.ready().load(SeqCst), 0);
        assert_eq!(x.upcall_pending().load(SeqCst), 0);
    }

    #[test]
    fn garbage_ready_bits_are_reported_and_ignored() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [3]);
        x.raise(3);
        // Queue 4's bit has no head behind it: nothing was ever queued there.
        x.ready().fetch_or(0xdead_0000 | 1 << 4, SeqCst);
        let (got, report) = delivered(&fifo);
        assert_eq!(got, [3]);
        assert_eq!(
            report,
            DemuxReport { delivered: 1, bogus_ready: 0xdead_0000, ..Default::default() }
        );
    }

    #[test]
    fn cycles_in_the_links_end_at_the_first_port_seen_again() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        x.word(10).store(PENDING | LINKED | 11, SeqCst);
        x.word(11).store(PENDING | LINKED | 10, SeqCst);
        x.word(12).store(PENDING | LINKED | 12, SeqCst);
        x.head(3).store(10, SeqCst);
        x.head(4).store(12, SeqCst);
        x.ready().store(1 << 3 | 1 << 4, SeqCst);
        let (got, report) = delivered(&fifo);
        assert_eq!(got, [10, 11, 12]);
        assert!(report.is_clean());
    }

    #[test]
    fn a_cycle_rewritten_as_fast_as_it_is_walked_is_cut_short() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        // Raised first, but in a lower queue than the cycle, so its ready bit is taken and
        // then left waiting.
        bind(&fifo, [50]);
        x.set_priority(50, 9);
        x.raise(50);
        x.word(10).store(PENDING | LINKED | 11, SeqCst);
        x.word(11).store(PENDING | LINKED | 10, SeqCst);
        x.head(3).store(10, SeqCst);
        x.ready().fetch_or(1 << 3, SeqCst);

        let mut got = Vec::new();
        let report = fifo.demux(|p| {
            got.push(p.0);
            let other = if p.0 == 10 { 11 } else { 10 };
            x.word(p.0).store(PENDING | LINKED | other, SeqCst);
        });
        assert!(report.cut_short);
        assert_eq!(report.delivered, 1024 + 16);
        assert!(!got.contains(&50));
        assert_eq!(x.upcall_pending().load(SeqCst), 1, "so Xen comes back for the rest");

        // Left alone, the walk finishes the cycle and serves the queue it had to leave.
        let (got, report) = delivered(&fifo);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(got, [10, 11, 50]);
        assert_eq!(x.upcall_pending().load(SeqCst), 0);
    }

    #[test]
    fn an_upcall_flag_that_stays_set_cannot_hold_demux() {
        use std::sync::atomic::AtomicBool;
        let x = FifoXen::new(1);
        let fifo = x.abi();
        let flag = x.upcall_pending();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(SeqCst) {
                    flag.store(1, SeqCst);
                }
            });
            while flag.load(SeqCst) == 0 {}
            // Whether it sees the flag set on every pass or not, it returns.
            let report = fifo.demux(|_| {});
            stop.store(true, SeqCst);
            assert_eq!(report.delivered, 0);
        });
    }

    #[test]
    fn a_self_raising_port_does_not_starve_its_queue() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        bind(&fifo, [1, 2, 3]);
        for p in [1, 2, 3] {
            x.raise(p);
        }
        let mut got = Vec::new();
        let report = fifo.demux(|p| {
            got.push(p.0);
            if p.0 == 1 {
                x.raise(1);
            }
        });
        assert!(report.cut_short);
        assert_eq!(&got[..4], [1, 2, 3, 1]);
        assert_eq!(got.iter().filter(|&&p| p != 1).count(), 2);
        // It stops raising itself: the one event left is delivered and the walk ends.
        assert_eq!(delivered(&fifo).0, [1]);
    }

    #[test]
    fn each_event_is_handled_exactly_once_under_interleaving() {
        const PORTS: u32 = 4096;
        let x = FifoXen::new(4);
        let fifo = x.abi();
        bind(&fifo, 1..PORTS);
        let mut raised = vec![0u32; PORTS as usize];
        let mut handled = vec![0u32; PORTS as usize];
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for p in 1..PORTS {
            x.set_priority(p, (next() % 16) as usize);
        }
        // Raising a pending port is not a new event, so only idle ones are raised.
        let raise = |p: u32, raised: &mut Vec<u32>| {
            if p != 0 && x.word(p).load(SeqCst) & PENDING == 0 {
                x.raise(p);
                raised[p as usize] += 1;
            }
        };
        for _ in 0..200 {
            for _ in 0..20 {
                raise(next() % PORTS, &mut raised);
            }
            let report = fifo.demux(|p| {
                handled[p.0 as usize] += 1;
                // Handlers raise other events sometimes, as completions do.
                let q = next() % PORTS;
                if q.is_multiple_of(4) {
                    raise(q, &mut raised);
                }
            });
            assert!(report.is_clean(), "{report:?}");
        }
        assert_eq!(raised, handled);
        assert!((1..PORTS).all(|p| x.word(p).load(SeqCst) & LINKED == 0));
    }
}
