//! Xen's side of both event channel ABIs, on heap memory standing in for the shared pages,
//! for host tests. Each simulator raises events the way Xen's `evtchn_*_set_pending` does,
//! as another agent on the same memory, and lets tests write anything there.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};

use xen_sys::{
    evtchn_fifo_control_block, shared_info, vcpu_info, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINKED,
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_PENDING,
    EVTCHN_FIFO_PRIORITY_DEFAULT,
};

use crate::fifo::{self, ArrayFull, EventArrayPage, Fifo, VcpuQueues, EVENT_WORDS_PER_PAGE};
use crate::{EventAbi, PortOwners, TwoLevel, Unmask};

pub const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
pub const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
pub const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
pub const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;
const QUEUES: usize = EVTCHN_FIFO_MAX_QUEUES as usize;

/// A simulated Xen and the guest's view of the memory it shares, so that one test body can
/// run against either ABI.
pub trait FakeXen {
    type Abi<'a>: EventAbi
    where
        Self: 'a;

    /// The guest's view, as the guest would set it up.
    fn abi(&self) -> Self::Abi<'_>;

    /// Raises an event on `port`, as Xen does when the other end notifies it.
    fn raise(&self, port: u32);

    /// Does what [`EventAbi::unmask`] told the guest to do.
    fn follow(&self, port: u32, action: Unmask);
}

/// Leaks a zeroed `T` onto the heap.
///
/// # Safety
/// All-zero bytes are a valid `T`.
unsafe fn zeroed<T>() -> NonNull<T> {
    // SAFETY: the caller vouches for the zero value.
    NonNull::from(Box::leak(unsafe { Box::<T>::new_zeroed().assume_init() }))
}

/// A zeroed `shared_info`, vCPU 0's `vcpu_info` inside it.
pub struct TwoLevelXen(NonNull<shared_info>);

impl TwoLevelXen {
    pub fn new() -> Self {
        // SAFETY: `shared_info` is integers only.
        TwoLevelXen(unsafe { zeroed() })
    }

    fn word(&self, field: *mut u64) -> &AtomicU64 {
        // SAFETY: the callers pass a field of the live `shared_info`, which `&self` keeps
        // alive and which the tests access only atomically.
        unsafe { AtomicU64::from_ptr(field) }
    }
}

impl TwoLevelXen {
    /// vCPU `vcpu`'s view in a domain whose ports `owners` records.
    pub fn view_of<'a>(&'a self, owners: &'a PortOwners, vcpu: u8) -> TwoLevel<'a> {
        // SAFETY: as for `abi`, with vcpu_info[vcpu].
        unsafe {
            let v = NonNull::new_unchecked(&raw mut (*self.0.as_ptr()).vcpu_info[vcpu as usize]);
            TwoLevel::new(self.0, v).for_vcpu(owners, vcpu)
        }
    }

    /// vCPU `vcpu`'s upcall flag.
    pub fn upcall_pending_of(&self, vcpu: usize) -> &AtomicU8 {
        // SAFETY: in the live `shared_info`, accessed only atomically.
        unsafe {
            AtomicU8::from_ptr(&raw mut (*self.0.as_ptr()).vcpu_info[vcpu].evtchn_upcall_pending)
        }
    }

    /// `evtchn_2l_set_pending` for a port bound to `vcpu`.
    pub fn raise_on(&self, port: u32, vcpu: usize) {
        let s = self.0.as_ptr();
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        // SAFETY: fields of the live `shared_info`; only their addresses are taken.
        let (pending, mask, sel) = unsafe {
            (
                &raw mut (*s).evtchn_pending[word],
                &raw mut (*s).evtchn_mask[word],
                &raw mut (*s).vcpu_info[vcpu].evtchn_pending_sel,
            )
        };
        let (pending, mask, sel) = (self.word(pending), self.word(mask), self.word(sel));
        if pending.fetch_or(bit, SeqCst) & bit != 0 {
            return;
        }
        if mask.load(SeqCst) & bit == 0 && sel.fetch_or(1 << word, SeqCst) & (1 << word) == 0 {
            self.upcall_pending_of(vcpu).store(1, SeqCst);
        }
    }

    /// `EVTCHNOP_unmask` of a port bound to `vcpu` (`evtchn_2l_unmask`).
    pub fn unmask_hypercall(&self, port: u32, vcpu: usize) {
        let s = self.0.as_ptr();
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        // SAFETY: as in `raise_on`.
        let (pending, mask) =
            unsafe { (&raw mut (*s).evtchn_pending[word], &raw mut (*s).evtchn_mask[word]) };
        if self.word(mask).fetch_and(!bit, SeqCst) & bit != 0
            && self.word(pending).load(SeqCst) & bit != 0
        {
            self.word(pending).fetch_and(!bit, SeqCst);
            self.raise_on(port, vcpu);
        }
    }
}

impl Drop for TwoLevelXen {
    fn drop(&mut self) {
        // SAFETY: leaked from a Box in `new`, and no view outlives `self`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl FakeXen for TwoLevelXen {
    type Abi<'a> = TwoLevel<'a>;

    fn abi(&self) -> TwoLevel<'_> {
        // SAFETY: `vcpu_info[0]` lies inside the live `shared_info`; the tests access the
        // event fields only through `TwoLevel` views and atomics.
        unsafe {
            let vcpu = NonNull::new_unchecked(&raw mut (*self.0.as_ptr()).vcpu_info[0]);
            TwoLevel::new(self.0, vcpu)
        }
    }

    /// `evtchn_2l_set_pending`, for a port bound to vCPU 0.
    fn raise(&self, port: u32) {
        self.raise_on(port, 0);
    }

    fn follow(&self, _port: u32, action: Unmask) {
        // Unmasking already marked the event for the upcall; the simulated Xen has no
        // return-to-guest to force.
        assert_ne!(action, Unmask::NeedsHypercall, "not a 2-level request");
    }
}

/// How many vCPUs the FIFO simulator has.
pub const FIFO_VCPUS: usize = 2;

/// Xen's FIFO state for a domain of [`FIFO_VCPUS`] vCPUs: each vCPU's control block,
/// `vcpu_info` and queue tails, the event array pages it accepted, and each port's
/// priority and vCPU.
pub struct FifoXen {
    controls: [NonNull<evtchn_fifo_control_block>; FIFO_VCPUS],
    vcpus: [NonNull<vcpu_info>; FIFO_VCPUS],
    pages: RefCell<Vec<NonNull<EventArrayPage>>>,
    tails: [[Cell<u32>; QUEUES]; FIFO_VCPUS],
    priorities: RefCell<HashMap<u32, usize>>,
    bound: RefCell<HashMap<u32, usize>>,
}

impl FifoXen {
    /// A control block registered for each vCPU and `pages` event array pages accepted.
    pub fn new(pages: usize) -> Self {
        let x = FifoXen {
            // SAFETY: both are integers only.
            controls: std::array::from_fn(|_| unsafe { zeroed() }),
            // SAFETY: as above.
            vcpus: std::array::from_fn(|_| unsafe { zeroed() }),
            pages: RefCell::new(Vec::new()),
            tails: Default::default(),
            priorities: RefCell::new(HashMap::new()),
            bound: RefCell::new(HashMap::new()),
        };
        for _ in 0..pages {
            x.expand_array();
        }
        x
    }

    /// What the guest does before `EVTCHNOP_expand_array`, and what Xen does in it.
    fn expand_array(&self) -> NonNull<EventArrayPage> {
        let mut page = Box::new([0; EVENT_WORDS_PER_PAGE]);
        fifo::init_array_page(&mut page);
        let page = NonNull::from(Box::leak(page));
        self.pages.borrow_mut().push(page);
        page
    }

    /// A guest view of vCPU 0 with no event array page registered.
    pub fn bare<const N: usize>(&self) -> Fifo<'_, N> {
        // SAFETY: both are live while `&self` is borrowed and accessed only atomically.
        unsafe { Fifo::new(self.controls[0], self.vcpus[0]) }
    }

    /// vCPU `vcpu`'s queues over `fifo`'s event array.
    pub fn queues_of<'a, const N: usize>(
        &'a self,
        fifo: &'a Fifo<'a, N>,
        vcpu: usize,
    ) -> VcpuQueues<'a, N> {
        // SAFETY: both are live while `&self` is borrowed and accessed only atomically.
        unsafe { fifo.other_vcpu(self.controls[vcpu], self.vcpus[vcpu]) }
    }

    /// `EVTCHNOP_bind_vcpu`, for a port not queued (as [`set_priority`](Self::set_priority)).
    pub fn bind_vcpu(&self, port: u32, vcpu: usize) {
        self.bound.borrow_mut().insert(port, vcpu);
    }

    /// The guest growing the event array by one page, through `EVTCHNOP_expand_array`.
    pub fn grow<'a, const N: usize>(&'a self, fifo: &Fifo<'a, N>) -> Result<(), ArrayFull> {
        let page = self.expand_array();
        // SAFETY: the page Xen just accepted, live while `&self` is borrowed, accessed only
        // atomically.
        unsafe { fifo.add_array_page(page) }
    }

    /// Port `port`'s event word, as Xen reaches it.
    pub fn word(&self, port: u32) -> &AtomicU32 {
        let page = self.pages.borrow()[port as usize / EVENT_WORDS_PER_PAGE];
        // SAFETY: a live page (freed only on drop), accessed only atomically.
        unsafe {
            AtomicU32::from_ptr(&raw mut (*page.as_ptr())[port as usize % EVENT_WORDS_PER_PAGE])
        }
    }

    /// vCPU 0's ready word.
    pub fn ready(&self) -> &AtomicU32 {
        self.ready_of(0)
    }

    pub fn ready_of(&self, vcpu: usize) -> &AtomicU32 {
        // SAFETY: in a live control block, accessed only atomically.
        unsafe { AtomicU32::from_ptr(&raw mut (*self.controls[vcpu].as_ptr()).ready) }
    }

    /// vCPU 0's head of `queue`.
    pub fn head(&self, queue: usize) -> &AtomicU32 {
        self.head_of(0, queue)
    }

    fn head_of(&self, vcpu: usize, queue: usize) -> &AtomicU32 {
        // SAFETY: in a live control block, accessed only atomically.
        unsafe { AtomicU32::from_ptr(&raw mut (*self.controls[vcpu].as_ptr()).head[queue]) }
    }

    /// vCPU 0's upcall flag.
    pub fn upcall_pending(&self) -> &AtomicU8 {
        self.upcall_pending_of(0)
    }

    pub fn upcall_pending_of(&self, vcpu: usize) -> &AtomicU8 {
        // SAFETY: in a live vcpu_info, accessed only atomically.
        unsafe { AtomicU8::from_ptr(&raw mut (*self.vcpus[vcpu].as_ptr()).evtchn_upcall_pending) }
    }

    /// `EVTCHNOP_set_priority`, for a port not queued (the simulator does not move queued
    /// events between queues as Xen does).
    pub fn set_priority(&self, port: u32, queue: usize) {
        self.priorities.borrow_mut().insert(port, queue);
    }

    fn priority(&self, port: u32) -> usize {
        let default = EVTCHN_FIFO_PRIORITY_DEFAULT as usize;
        self.priorities.borrow().get(&port).copied().unwrap_or(default)
    }

    /// `evtchn_fifo_set_link`: stores the link iff the word is still LINKED, clearing BUSY.
    fn set_link(word: &AtomicU32, link: u32) -> bool {
        let relink =
            |w: u32| (w & LINKED != 0).then_some(w & !(BUSY | EVTCHN_FIFO_LINK_MASK) | link);
        word.fetch_update(SeqCst, SeqCst, relink).is_ok()
    }
}

impl Drop for FifoXen {
    fn drop(&mut self) {
        // SAFETY: all leaked from Boxes in `new` and `expand_array`, and no view outlives
        // `self`.
        unsafe {
            for (control, vcpu) in self.controls.iter().zip(&self.vcpus) {
                drop(Box::from_raw(control.as_ptr()));
                drop(Box::from_raw(vcpu.as_ptr()));
            }
            for page in self.pages.take() {
                drop(Box::from_raw(page.as_ptr()));
            }
        }
    }
}

impl FakeXen for FifoXen {
    type Abi<'a> = Fifo<'a>;

    /// The guest's view with the pages Xen has so far.
    fn abi(&self) -> Fifo<'_> {
        let fifo = self.bare();
        for &page in self.pages.borrow().iter() {
            // SAFETY: Xen's pages in Xen's order, live while `&self` is borrowed, accessed
            // only atomically.
            unsafe { fifo.add_array_page(page) }.unwrap();
        }
        fifo
    }

    /// `evtchn_fifo_set_pending`.
    fn raise(&self, port: u32) {
        let word = self.word(port);
        word.fetch_or(PENDING, SeqCst);
        if word.load(SeqCst) & MASKED != 0 || word.fetch_or(LINKED, SeqCst) & LINKED != 0 {
            return;
        }
        let queue = self.priority(port);
        let vcpu = self.bound.borrow().get(&port).copied().unwrap_or(0);
        let tail = &self.tails[vcpu][queue];
        // A tail that is raised again was consumed, so its queue is empty.
        if tail.get() == port {
            tail.set(0);
        }
        let linked = tail.get() != 0 && Self::set_link(self.word(tail.get()), port);
        if !linked {
            self.head_of(vcpu, queue).store(port, SeqCst);
        }
        tail.set(port);
        if !linked && self.ready_of(vcpu).fetch_or(1 << queue, SeqCst) & (1 << queue) == 0 {
            self.upcall_pending_of(vcpu).store(1, SeqCst);
        }
    }

    /// `EVTCHNOP_unmask`: unmask, and queue the event if one is pending.
    fn follow(&self, port: u32, action: Unmask) {
        match action {
            Unmask::Done => {}
            Unmask::NeedsHypercall => {
                let word = self.word(port);
                word.fetch_and(!MASKED, SeqCst);
                if word.load(SeqCst) & PENDING != 0 {
                    self.raise(port);
                }
            }
            Unmask::ForceUpcallCheck => panic!("not a FIFO request"),
        }
    }
}
