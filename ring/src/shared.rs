//! The request/response ring of `io/ring.h`, front side, for any request and response type.
//!
//! The shared pages start with a 64-byte header (`req_prod, req_event, rsp_prod, rsp_event`,
//! then padding) followed by a power-of-two array of slots, each a union of one request and
//! one response. We produce requests into free slots and consume the responses the backend
//! writes back into the same slots.
//!
//! The backend is another domain and may be buggy or hostile. Its `rsp_prod` is checked
//! against the number of requests we published before any slot is read, and each response
//! is copied out of shared memory exactly once, so a backend rewriting a slot behind our
//! back cannot make us see two different values.

use core::fmt;
use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};
use core::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};

/// The page size ring protocols count in, whatever the guest's own page size.
pub const PAGE_SIZE: usize = 4096;

/// Bytes before the first slot: `offsetof(struct __name##_sring, ring)`.
pub const HEADER_SIZE: usize = 64;

/// Plain data that can cross a shared page in either direction.
///
/// # Safety
/// Implementors guarantee that the type
/// 1. has no padding bytes, so writing it never leaks uninitialised memory to the other side;
/// 2. accepts every bit pattern, so reading whatever the other side wrote is a valid value.
///
/// Integers and arrays of `Pod` qualify; structs are best declared with [`pod!`](crate::pod),
/// which checks both properties at build time instead of asking for an `unsafe impl`.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! primitive_pod {
    ($($t:ty),*) => {
        // SAFETY: primitive integers have no padding and no invalid bit patterns.
        $(unsafe impl Pod for $t {})*
    };
}
primitive_pod!(u8, u16, u32, u64, i8, i16, i32, i64);

// SAFETY: an array has no padding between elements of a padding-free type, and every bit
// pattern of it is a sequence of valid `T`s.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// Declares a `#[repr(C)]`, `Copy` struct and implements [`Pod`](crate::shared::Pod) for it
/// after checking, at build time, that every field is `Pod` and that the fields' sizes add
/// up to the struct's size (no padding). Padding the C layout has must be spelled out as
/// explicit fields.
///
/// This lets driver crates under `#![forbid(unsafe_code)]` declare ABI structs: the one
/// `unsafe impl` is here, justified by the checks this macro expands next to it.
#[macro_export]
macro_rules! pod {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        const _: () = {
            const fn field_is_pod<T: $crate::shared::Pod>() {}
            $(field_is_pod::<$ty>();)*
            assert!(
                ::core::mem::size_of::<$name>() == 0 $(+ ::core::mem::size_of::<$ty>())*,
                "pod! struct has padding: spell it out as explicit fields",
            );
        };

        // SAFETY: `repr(C)`, every field is `Pod` and the fields fill the struct exactly
        // (both checked just above), so the struct has no padding and no invalid bit pattern.
        unsafe impl $crate::shared::Pod for $name {}
    };
}

/// Largest power of two not above `n` (`__RD32` in ring.h), 0 for 0.
const fn round_down_pow2(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// Number of slots a ring of `pages` pages holds for these request and response types: the
/// `__RING_SIZE` of ring.h. Zero when not even one slot fits.
pub const fn ring_size<Req: Pod, Rsp: Pod>(pages: usize) -> u32 {
    let bytes = pages.saturating_mul(PAGE_SIZE);
    if bytes < HEADER_SIZE {
        return 0;
    }
    let slots = round_down_pow2((bytes - HEADER_SIZE) / size_of::<Entry<Req, Rsp>>());
    // Free-running 32-bit indices tell a full ring from an empty one only up to 2^31 slots.
    if slots > 1 << 31 {
        1 << 31
    } else {
        slots as u32
    }
}

/// Bytes per slot of a ring of these request and response types: the size of
/// `union __name##_sring_entry`. A backend (or a test's fake of one) finds slot `i` at
/// `HEADER_SIZE + (i % ring_size) * slot_size`.
pub const fn slot_size<Req: Pod, Rsp: Pod>() -> usize {
    size_of::<Entry<Req, Rsp>>()
}

/// `struct __name##_sring` up to its `ring[]` array. Every field is atomic because the backend
/// may write any of them at any time; we never form a reference to non-atomic shared bytes.
#[repr(C)]
struct Header {
    req_prod: AtomicU32,
    req_event: AtomicU32,
    rsp_prod: AtomicU32,
    rsp_event: AtomicU32,
    /// The `pvt` union (netif's `smartpoll_active`, ...): unused by these protocols' fronts.
    pvt: [AtomicU8; 4],
    pad: [AtomicU8; 44],
}

const _: () = assert!(size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(Header, req_prod) == 0);
const _: () = assert!(core::mem::offset_of!(Header, req_event) == 4);
const _: () = assert!(core::mem::offset_of!(Header, rsp_prod) == 8);
const _: () = assert!(core::mem::offset_of!(Header, rsp_event) == 12);
const _: () = assert!(core::mem::offset_of!(Header, pvt) == 16);
const _: () = assert!(core::mem::offset_of!(Header, pad) == 20);

/// `union __name##_sring_entry`: one slot, holding a request or the response to it.
#[repr(C)]
union Entry<Req: Pod, Rsp: Pod> {
    req: Req,
    rsp: Rsp,
}

/// `push_request` found no free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFull;

impl fmt::Display for RingFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request ring full")
    }
}

/// The backend published an index that cannot be true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `rsp_prod` claims more responses than we have published requests awaiting one
    /// (it ran ahead, or went backwards and wrapped): `RING_RESPONSE_PROD_OVERFLOW`,
    /// tightened from the ring size to the requests actually in flight.
    ProducerOverflow {
        /// The backend's `rsp_prod`.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
        /// The `req_prod` we last published.
        req_prod: u32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::ProducerOverflow { rsp_prod, rsp_cons, req_prod } => write!(
                f,
                "backend rsp_prod {rsp_prod:#x} beyond requests in flight \
                 (rsp_cons {rsp_cons:#x}, req_prod {req_prod:#x})"
            ),
        }
    }
}

/// The front end of a request/response ring: `struct __name##_front_ring` and the
/// `RING_*` macros a frontend uses.
pub struct FrontRing<Req: Pod, Rsp: Pod> {
    header: NonNull<Header>,
    slots: NonNull<Entry<Req, Rsp>>,
    size: u32,
    /// Requests written into slots, published or not.
    req_prod_pvt: u32,
    /// The `req_prod` we last published. Kept privately rather than re-read from the page,
    /// which the backend could have scribbled over.
    req_prod_pub: u32,
    /// Responses consumed.
    rsp_cons: u32,
}

// SAFETY: the ring is the only user of the front side of its pages (contract of `new`) and
// holds no thread-bound state; `Pod` types are plain data.
unsafe impl<Req: Pod, Rsp: Pod> Send for FrontRing<Req, Rsp> {}

impl<Req: Pod, Rsp: Pod> FrontRing<Req, Rsp> {
    /// Initialises the shared header (`SHARED_RING_INIT`) and attaches the front end to it
    /// (`FRONT_RING_INIT`), with room for [`ring_size`]`::<Req, Rsp>(pages)` slots.
    ///
    /// Call this before the pages are granted to the backend, as `XEN_FRONT_RING_INIT` is.
    ///
    /// # Safety
    /// 1. `base` points to `pages * PAGE_SIZE` bytes, aligned to `PAGE_SIZE`, that stay
    ///    mapped, readable and writable for as long as the returned ring exists.
    /// 2. Within this domain, nothing but the returned ring accesses those bytes while it
    ///    exists (another domain, the backend, may write anything anywhere at any time).
    ///
    /// # Panics
    /// If `base` is not page-aligned or the pages are too small for one slot: both are the
    /// caller's bugs, not the backend's.
    pub unsafe fn new(base: NonNull<u8>, pages: usize) -> Self {
        const {
            assert!(
                align_of::<Entry<Req, Rsp>>() <= HEADER_SIZE,
                "slots must start right after the 64-byte header"
            );
        }
        assert!(
            (base.as_ptr() as usize).is_multiple_of(PAGE_SIZE),
            "ring pages must be page-aligned"
        );
        let size = ring_size::<Req, Rsp>(pages);
        assert!(size > 0, "ring pages too small for one slot");

        let header = base.cast::<Header>();
        // SAFETY: HEADER_SIZE is within the pages (size > 0 means at least one slot follows).
        let slots = unsafe { base.add(HEADER_SIZE) }.cast::<Entry<Req, Rsp>>();
        // SAFETY: the header is in bounds, page-aligned hence aligned for `Header`, and
        // `Header` is all atomics, which tolerate concurrent writes by the backend.
        let h = unsafe { header.as_ref() };
        h.req_prod.store(0, Ordering::Relaxed);
        h.rsp_prod.store(0, Ordering::Relaxed);
        h.req_event.store(1, Ordering::Relaxed);
        h.rsp_event.store(1, Ordering::Relaxed);
        for b in h.pvt.iter().chain(h.pad.iter()) {
            b.store(0, Ordering::Relaxed);
        }
        FrontRing { header, slots, size, req_prod_pvt: 0, req_prod_pub: 0, rsp_cons: 0 }
    }

    /// Number of slots: `RING_SIZE`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Slots free for new requests: `RING_FREE_REQUESTS`. A slot becomes free once its
    /// response has been taken.
    pub fn free_requests(&self) -> u32 {
        self.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next free slot without publishing it; see
    /// [`commit_requests`](Self::commit_requests).
    pub fn push_request(&mut self, req: Req) -> Result<(), RingFull> {
        self.push_request_as(req)
    }

    /// Like [`push_request`](Self::push_request) for another layout that shares the slot,
    /// as blkif's discard and indirect requests or netif's extra-info slots do.
    pub fn push_request_as<T: Pod>(&mut self, req: T) -> Result<(), RingFull> {
        const {
            assert!(size_of::<T>() <= size_of::<Entry<Req, Rsp>>(), "does not fit a slot");
            assert!(align_of::<T>() <= align_of::<Entry<Req, Rsp>>(), "misaligned in a slot");
        }
        if self.free_requests() == 0 {
            return Err(RingFull);
        }
        let slot = self.slot(self.req_prod_pvt).cast::<T>();
        // SAFETY: `slot` is in bounds and aligned (checked above); volatile because the
        // backend can read the page at any time.
        unsafe { ptr::write_volatile(slot, req) };
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the pushed requests and says whether the backend must be notified:
    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`. The backend asks, through `req_event`, to be
    /// woken when the producer passes a given index; notify only if this publication did.
    pub fn commit_requests(&mut self) -> bool {
        let old = self.req_prod_pub;
        let new = self.req_prod_pvt;
        let h = self.header();
        // Release: the backend must see the slots written before it sees the new index.
        h.req_prod.store(new, Ordering::Release);
        // Publishing req_prod and reading req_event must not be reordered (store-load), or
        // we could miss a req_event the backend set after checking a stale req_prod.
        fence(Ordering::SeqCst);
        let event = h.req_event.load(Ordering::Relaxed);
        self.req_prod_pub = new;
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Copies out the next response, if the backend has published one.
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        self.take_response_as()
    }

    /// Like [`take_response`](Self::take_response) for another layout that shares the slot,
    /// as netif's extra-info slots on the receive ring.
    pub fn take_response_as<T: Pod>(&mut self) -> Result<Option<T>, RingError> {
        const {
            assert!(size_of::<T>() <= size_of::<Entry<Req, Rsp>>(), "does not fit a slot");
            assert!(align_of::<T>() <= align_of::<Entry<Req, Rsp>>(), "misaligned in a slot");
        }
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let slot = self.slot(self.rsp_cons).cast::<T>();
        // SAFETY: `slot` is in bounds and aligned (checked above); `T: Pod` accepts whatever
        // the backend wrote. One volatile read: the copy we return is the only one we use.
        let rsp = unsafe { ptr::read_volatile(slot) };
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Whether responses are waiting; if none, asks the backend to notify us for the next
    /// one and checks again, closing the race with a response published in between:
    /// `RING_FINAL_CHECK_FOR_RESPONSES`.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        let h = self.header();
        h.rsp_event.store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        // Store-load: the backend must see rsp_event before we look at rsp_prod again.
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }

    /// `rsp_prod - rsp_cons`, after checking it against the requests in flight.
    fn unconsumed_responses(&self) -> Result<u32, RingError> {
        // Acquire: slot contents are read only after the index that covers them.
        let rsp_prod = self.header().rsp_prod.load(Ordering::Acquire);
        let unconsumed = rsp_prod.wrapping_sub(self.rsp_cons);
        if unconsumed > self.req_prod_pub.wrapping_sub(self.rsp_cons) {
            return Err(RingError::ProducerOverflow {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pub,
            });
        }
        Ok(unconsumed)
    }

    fn header(&self) -> &Header {
        // SAFETY: `new`'s contract keeps the header mapped while `self` lives; it is all
        // atomics, so a shared reference is sound however the backend writes to it.
        unsafe { self.header.as_ref() }
    }

    /// The slot a free-running index maps to.
    fn slot(&self, idx: u32) -> *mut Entry<Req, Rsp> {
        // `size` is a power of two, so masking is `idx % size`, and the result is in bounds.
        let i = (idx & (self.size - 1)) as usize;
        // SAFETY: `i < size` and `new` checked that `size` slots fit in the pages.
        unsafe { self.slots.as_ptr().add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    /// Page-aligned zeroed memory standing in for granted pages.
    struct Pages {
        base: NonNull<u8>,
        layout: Layout,
    }

    impl Pages {
        fn new(pages: usize) -> Self {
            let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: the layout has a non-zero size.
            let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("out of memory");
            Pages { base, layout }
        }
    }

    impl Drop for Pages {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.base.as_ptr(), self.layout) };
        }
    }

    /// The other end, poking the pages as a backend would, honest or not.
    struct FakeBack<Req: Pod, Rsp: Pod> {
        base: NonNull<u8>,
        size: u32,
        req_cons: u32,
        rsp_prod_pvt: u32,
        _types: core::marker::PhantomData<(Req, Rsp)>,
    }

    impl<Req: Pod, Rsp: Pod> FakeBack<Req, Rsp> {
        fn new(pages: &Pages, n: usize) -> Self {
            FakeBack {
                base: pages.base,
                size: ring_size::<Req, Rsp>(n),
                req_cons: 0,
                rsp_prod_pvt: 0,
                _types: core::marker::PhantomData,
            }
        }

        fn index(&self, offset: usize) -> &AtomicU32 {
            // SAFETY: `offset` is one of the header's u32 fields, inside the live pages.
            unsafe { self.base.add(offset).cast::<AtomicU32>().as_ref() }
        }

        fn slot(&self, idx: u32) -> *mut Entry<Req, Rsp> {
            let i = (idx & (self.size - 1)) as usize;
            // SAFETY: in bounds of the ring the front end laid out over the same pages.
            unsafe { self.base.add(HEADER_SIZE).cast::<Entry<Req, Rsp>>().add(i).as_ptr() }
        }

        /// Consumes every published request, as RING_COPY_REQUEST would.
        fn take_requests(&mut self) -> Vec<Req> {
            let prod = self.index(0).load(Ordering::Acquire);
            let mut out = Vec::new();
            while self.req_cons != prod {
                // SAFETY: a published slot; `Req: Pod`.
                out.push(unsafe { ptr::read_volatile(self.slot(self.req_cons).cast::<Req>()) });
                self.req_cons = self.req_cons.wrapping_add(1);
            }
            out
        }

        /// Writes a response into the next response slot without publishing it.
        fn respond(&mut self, rsp: Rsp) {
            // SAFETY: a slot of the ring; `Rsp: Pod`.
            unsafe { ptr::write_volatile(self.slot(self.rsp_prod_pvt).cast::<Rsp>(), rsp) };
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        }

        fn publish(&self) {
            self.index(8).store(self.rsp_prod_pvt, Ordering::Release);
        }

        fn set_rsp_prod(&self, v: u32) {
            self.index(8).store(v, Ordering::Release);
        }

        fn set_req_event(&self, v: u32) {
            self.index(4).store(v, Ordering::Release);
        }

        fn rsp_event(&self) -> u32 {
            self.index(12).load(Ordering::Acquire)
        }
    }

    type Ring = FrontRing<u64, u64>;

    fn setup(pages: usize) -> (Pages, Ring, FakeBack<u64, u64>) {
        let mem = Pages::new(pages);
        // SAFETY: `mem` is page-aligned, outlives the ring in every test, and only the ring
        // and the fake backend (standing for the other domain) touch it.
        let ring = unsafe { Ring::new(mem.base, pages) };
        let back = FakeBack::new(&mem, pages);
        (mem, ring, back)
    }

    #[test]
    fn init_writes_the_shared_ring_init_values() {
        let mem = Pages::new(1);
        // SAFETY: fill the header with junk before init; in bounds of the live allocation.
        unsafe { ptr::write_bytes(mem.base.as_ptr(), 0xa5, HEADER_SIZE) };
        // SAFETY: as in `setup`.
        let _ring = unsafe { Ring::new(mem.base, 1) };
        let back = FakeBack::<u64, u64>::new(&mem, 1);
        assert_eq!([0, 4, 8, 12].map(|o| back.index(o).load(Ordering::Relaxed)), [0, 1, 0, 1]);
        for i in 16..HEADER_SIZE {
            // SAFETY: in bounds of the header.
            assert_eq!(unsafe { *mem.base.as_ptr().add(i) }, 0);
        }
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct E32([u64; 4]);
    // SAFETY: an array of u64: no padding, every bit pattern valid.
    unsafe impl Pod for E32 {}
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct E112([u64; 14]);
    // SAFETY: as for E32.
    unsafe impl Pod for E112 {}
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct E12([u32; 3]);
    // SAFETY: as for E32.
    unsafe impl Pod for E12 {}

    /// Values of `__CONST_RING_SIZE` printed by a C program against Xen 4.17's ring.h.
    #[test]
    fn ring_sizes_match_ring_h() {
        let pages = [1, 2, 4, 8, 16];
        let e32 = [64, 128, 256, 512, 1024];
        let e112 = [32, 64, 128, 256, 512];
        // netif_tx: 12-byte requests, 4-byte responses.
        let tx = [256, 512, 1024, 2048, 4096];
        for (i, &p) in pages.iter().enumerate() {
            assert_eq!(ring_size::<E32, E32>(p), e32[i], "e32 {p} pages");
            assert_eq!(ring_size::<E112, u64>(p), e112[i], "e112 {p} pages");
            assert_eq!(ring_size::<E12, u32>(p), tx[i], "tx {p} pages");
        }
        assert_eq!(ring_size::<E32, E32>(0), 0);
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(36), 32);
    }

    #[test]
    fn multi_page_ring_uses_all_slots() {
        let mem = Pages::new(4);
        // SAFETY: as in `setup`.
        let mut ring = unsafe { FrontRing::<E112, E112>::new(mem.base, 4) };
        let mut back = FakeBack::<E112, E112>::new(&mem, 4);
        assert_eq!(ring.size(), 128);
        for round in 0..3u64 {
            for i in 0..128u64 {
                ring.push_request(E112([round * 1000 + i; 14])).unwrap();
            }
            assert_eq!(ring.push_request(E112([0; 14])), Err(RingFull));
            ring.commit_requests();
            let reqs = back.take_requests();
            assert_eq!(reqs.len(), 128);
            for (i, r) in reqs.iter().enumerate() {
                assert_eq!(r.0, [round * 1000 + i as u64; 14]);
                back.respond(E112([!r.0[0]; 14]));
            }
            back.publish();
            for i in 0..128u64 {
                let rsp = ring.take_response().unwrap().unwrap();
                assert_eq!(rsp.0, [!(round * 1000 + i); 14]);
            }
            assert!(ring.take_response().unwrap().is_none());
        }
    }

    #[test]
    fn fill_and_drain() {
        let (_mem, mut ring, mut back) = setup(1);
        let n = ring.size();
        assert_eq!(n, 256);
        assert_eq!(ring.free_requests(), n);
        for i in 0..n {
            ring.push_request(u64::from(i)).unwrap();
            assert_eq!(ring.free_requests(), n - i - 1);
        }
        assert_eq!(ring.push_request(999), Err(RingFull));
        // Pushed but not committed: the backend sees nothing yet.
        assert!(back.take_requests().is_empty());
        ring.commit_requests();
        let reqs = back.take_requests();
        assert_eq!(reqs, (0..u64::from(n)).collect::<Vec<_>>());
        // A slot is free again only once its response has been taken.
        for r in &reqs {
            back.respond(r + 1);
        }
        assert_eq!(ring.free_requests(), 0);
        back.publish();
        for i in 0..u64::from(n) {
            assert_eq!(ring.take_response(), Ok(Some(i + 1)));
        }
        assert_eq!(ring.take_response(), Ok(None));
        assert_eq!(ring.free_requests(), n);
    }

    #[test]
    fn indices_wrap_around_many_times() {
        let (_mem, mut ring, mut back) = setup(1);
        // Start near the top of the index space so u32 wrap-around happens too.
        let start = u32::MAX - 1000;
        ring.req_prod_pvt = start;
        ring.req_prod_pub = start;
        ring.rsp_cons = start;
        back.req_cons = start;
        back.rsp_prod_pvt = start;
        back.index(0).store(start, Ordering::Relaxed);
        back.set_rsp_prod(start);
        let mut next = 0u64;
        let mut expect = 0u64;
        // Uneven batch sizes walk every slot position many times over.
        for batch in (1..200u32).cycle().take(3000) {
            let batch = batch.min(ring.free_requests());
            for _ in 0..batch {
                ring.push_request(next).unwrap();
                next += 1;
            }
            ring.commit_requests();
            for r in back.take_requests() {
                back.respond(r * 3);
            }
            back.publish();
            while let Some(rsp) = ring.take_response().unwrap() {
                assert_eq!(rsp, expect * 3);
                expect += 1;
            }
        }
        assert_eq!(expect, next);
        assert!(next > 100 * u64::from(ring.size()));
        assert!(ring.rsp_cons < start, "indices wrapped");
    }

    #[test]
    fn notify_follows_req_event() {
        let (_mem, mut ring, mut back) = setup(1);
        // SHARED_RING_INIT sets req_event = 1: the first request ever needs a notify.
        ring.push_request(1).unwrap();
        assert!(ring.commit_requests());
        // Nothing new published: never notify.
        assert!(!ring.commit_requests());
        // The backend is busy and has not asked for an event past index 1.
        ring.push_request(2).unwrap();
        assert!(!ring.commit_requests());
        // Backend drains and asks to be woken at the next request (req_event = req_cons+1).
        back.take_requests();
        back.set_req_event(3);
        ring.push_request(3).unwrap();
        ring.push_request(4).unwrap();
        assert!(ring.commit_requests(), "publication crossed req_event");
        // An event index further ahead is crossed only by a later publication.
        back.set_req_event(7);
        ring.push_request(5).unwrap();
        ring.push_request(6).unwrap();
        assert!(!ring.commit_requests());
        ring.push_request(7).unwrap();
        assert!(ring.commit_requests());
    }

    #[test]
    fn final_check_sets_rsp_event() {
        let (_mem, mut ring, mut back) = setup(1);
        ring.push_request(10).unwrap();
        ring.push_request(11).unwrap();
        ring.commit_requests();
        back.take_requests();
        assert_eq!(ring.final_check_for_responses(), Ok(false));
        assert_eq!(back.rsp_event(), 1, "wake us at the first response");
        back.respond(20);
        back.publish();
        // Work waiting: rsp_event left alone.
        assert_eq!(ring.final_check_for_responses(), Ok(true));
        assert_eq!(ring.take_response(), Ok(Some(20)));
        assert_eq!(ring.final_check_for_responses(), Ok(false));
        assert_eq!(back.rsp_event(), 2);
        back.respond(21);
        back.publish();
        assert_eq!(ring.final_check_for_responses(), Ok(true));
        assert_eq!(ring.take_response(), Ok(Some(21)));
        assert_eq!(ring.take_response(), Ok(None));
    }

    #[test]
    fn hostile_rsp_prod_ahead_of_requests_is_an_error() {
        let (_mem, mut ring, back) = setup(1);
        ring.push_request(1).unwrap();
        ring.push_request(2).unwrap();
        // Pushed but unpublished requests cannot have responses either.
        ring.push_request(3).unwrap();
        ring.commit_requests();
        ring.push_request(4).unwrap();
        back.set_rsp_prod(4);
        let err = RingError::ProducerOverflow { rsp_prod: 4, rsp_cons: 0, req_prod: 3 };
        assert_eq!(ring.take_response(), Err(err));
        assert_eq!(ring.final_check_for_responses(), Err(err));
        // Far beyond the ring, too.
        back.set_rsp_prod(1 << 20);
        assert!(matches!(ring.take_response(), Err(RingError::ProducerOverflow { .. })));
        // Nothing was consumed by the failed attempts.
        back.set_rsp_prod(3);
        assert_eq!(ring.take_response().map(|r| r.is_some()), Ok(true));
        assert_eq!(ring.rsp_cons, 1);
    }

    #[test]
    fn hostile_rsp_prod_going_backwards_is_an_error() {
        let (_mem, mut ring, mut back) = setup(1);
        for i in 0..4 {
            ring.push_request(i).unwrap();
        }
        ring.commit_requests();
        for r in back.take_requests() {
            back.respond(r);
        }
        back.publish();
        assert_eq!(ring.take_response(), Ok(Some(0)));
        assert_eq!(ring.take_response(), Ok(Some(1)));
        back.set_rsp_prod(1);
        assert_eq!(
            ring.take_response(),
            Err(RingError::ProducerOverflow { rsp_prod: 1, rsp_cons: 2, req_prod: 4 })
        );
        assert!(ring.final_check_for_responses().is_err());
    }

    #[test]
    fn a_response_is_copied_out_once() {
        let (mem, mut ring, mut back) = setup(1);
        ring.push_request(5).unwrap();
        ring.commit_requests();
        back.take_requests();
        back.respond(50);
        back.publish();
        let rsp = ring.take_response().unwrap().unwrap();
        // The backend rewrites the slot after we copied it: our copy does not change.
        // SAFETY: slot 0 of the live ring.
        unsafe { ptr::write_volatile(mem.base.as_ptr().add(HEADER_SIZE).cast::<u64>(), 666) };
        assert_eq!(rsp, 50);
    }

    #[test]
    fn other_layouts_share_slots() {
        let mem = Pages::new(1);
        // SAFETY: as in `setup`.
        let mut ring = unsafe { FrontRing::<E32, u64>::new(mem.base, 1) };
        let mut back = FakeBack::<E32, u64>::new(&mem, 1);
        ring.push_request_as(7u64).unwrap();
        ring.push_request(E32([1, 2, 3, 4])).unwrap();
        ring.commit_requests();
        let reqs = back.take_requests();
        assert_eq!(reqs[0].0[0], 7);
        assert_eq!(reqs[1].0, [1, 2, 3, 4]);
        back.respond(8);
        back.respond(9);
        back.publish();
        assert_eq!(ring.take_response_as::<u32>(), Ok(Some(8)));
        assert_eq!(ring.take_response(), Ok(Some(9)));
    }

    crate::pod! {
        /// Exercises the macro: explicit padding, nested arrays.
        #[derive(Debug, PartialEq, Eq, Default)]
        struct Declared {
            a: u8,
            pub b: [u8; 3],
            c: u32,
            d: [u16; 4],
        }
    }

    #[test]
    fn pod_macro_declares_repr_c_structs() {
        assert_eq!(size_of::<Declared>(), 16);
        assert_eq!(core::mem::offset_of!(Declared, c), 4);
        let d = Declared { a: 1, b: [2; 3], c: 3, d: [4; 4] };
        let mem = Pages::new(1);
        // SAFETY: as in `setup`.
        let mut ring = unsafe { FrontRing::<Declared, Declared>::new(mem.base, 1) };
        ring.push_request(d).unwrap();
        ring.commit_requests();
        let mut back = FakeBack::<Declared, Declared>::new(&mem, 1);
        assert_eq!(back.take_requests(), vec![d]);
        assert_eq!(Declared::default().c, 0);
    }

    #[test]
    fn errors_display() {
        assert_eq!(RingFull.to_string(), "request ring full");
        let e = RingError::ProducerOverflow { rsp_prod: 9, rsp_cons: 1, req_prod: 2 };
        assert!(e.to_string().contains("rsp_prod 0x9"));
    }
}
