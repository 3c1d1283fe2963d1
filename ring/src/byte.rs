//! The byte ring of `io/console.h` and `io/xs_wire.h`: two power-of-two character arrays
//! (one per direction) and four free-running `u32` indices on a page shared with a backend.
//! Each protocol crate describes where its arrays and indices sit with a [`Layout`].
//!
//! We are the producer of one array and the consumer of the other. The backend owns the
//! other two indices and may publish anything: an index that claims more data (or more free
//! space) than the array holds is reported as [`RingError::Corrupt`] and nothing is touched.

use core::sync::atomic::{fence, AtomicU32, Ordering};

use crate::volatile;

/// Where one direction of a byte ring lives inside its shared page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the character array.
    pub data: usize,
    /// Size of the character array: a power of two.
    pub size: u32,
    /// Offset of the consumer index.
    pub cons: usize,
    /// Offset of the producer index.
    pub prod: usize,
}

/// The other side published indices that cannot be true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `prod - cons` exceeds the array size.
    Corrupt { prod: u32, cons: u32 },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::Corrupt { prod, cons } => {
                write!(f, "ring indices corrupt: prod={prod:#x} cons={cons:#x}")
            }
        }
    }
}

/// One direction of a byte ring, seen from one end.
struct Direction {
    data: *mut u8,
    mask: u32,
    size: u32,
    cons: *const AtomicU32,
    prod: *const AtomicU32,
}

impl Direction {
    /// # Safety
    /// `page` points to memory, valid for the lifetime of the value, that holds `layout`
    /// (offsets in bounds, indices 4-byte aligned), and no one else in this domain uses the
    /// indices this end owns.
    unsafe fn new(page: *mut u8, layout: Layout) -> Self {
        assert!(layout.size.is_power_of_two());
        // SAFETY: the caller promises the offsets lie inside the shared page.
        unsafe {
            Direction {
                data: page.add(layout.data),
                mask: layout.size - 1,
                size: layout.size,
                cons: page.add(layout.cons).cast::<AtomicU32>(),
                prod: page.add(layout.prod).cast::<AtomicU32>(),
            }
        }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: `new`'s contract keeps the index valid, aligned and alive as long as self.
        unsafe { &*self.cons }
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: as for `cons`.
        unsafe { &*self.prod }
    }

    /// Where `len` bytes from free-running index `from` lie in the array: at most two
    /// contiguous pieces (the second after the wrap), each as (array offset, range of the
    /// caller's buffer). `len` is at most the array size.
    fn pieces(
        &self,
        from: u32,
        len: usize,
    ) -> impl Iterator<Item = (usize, core::ops::Range<usize>)> {
        debug_assert!(len <= self.size as usize);
        let at = (from & self.mask) as usize;
        let first = len.min(self.size as usize - at);
        [(at, 0..first), (0, first..len)].into_iter().filter(|(_, r)| !r.is_empty())
    }

    /// Bytes between the two indices, validated against the array size.
    fn filled(prod: u32, cons: u32, size: u32) -> Result<u32, RingError> {
        let filled = prod.wrapping_sub(cons);
        if filled > size {
            return Err(RingError::Corrupt { prod, cons });
        }
        Ok(filled)
    }
}

/// The end of a byte ring that we produce into (console `out`, xenstore `req`).
pub struct Producer(Direction);

// SAFETY: an end owns its indices and array slots exclusively (constructor contract); the
// pointers stay valid wherever the value moves, and all shared state is accessed atomically
// or volatilely.
unsafe impl Send for Producer {}
// SAFETY: as for Producer.
unsafe impl Send for Consumer {}

impl Producer {
    /// # Safety
    /// `page` points to a page shared with the consumer, valid for the lifetime of the
    /// returned value, laid out as `layout` says; no one else in this domain produces into it.
    pub unsafe fn new(page: *mut u8, layout: Layout) -> Self {
        // SAFETY: forwarded contract.
        Producer(unsafe { Direction::new(page, layout) })
    }

    /// Copies as much of `bytes` as fits and publishes it; returns how many bytes went in.
    /// The caller notifies the consumer when this returns more than zero.
    pub fn write(&mut self, bytes: &[u8]) -> Result<usize, RingError> {
        let d = &self.0;
        // Acquire: the consumer's index publishes that it finished reading those slots.
        let cons = d.cons().load(Ordering::Acquire);
        let prod = d.prod().load(Ordering::Relaxed);
        let free = (d.size - Direction::filled(prod, cons, d.size)?) as usize;
        let n = free.min(bytes.len());
        for (at, piece) in d.pieces(prod, n) {
            // SAFETY: `pieces` keeps each piece inside the array that `new` vouched for, and
            // `bytes` is our own memory; volatile because the consumer in another domain
            // reads the array concurrently.
            unsafe { volatile::copy_in(&bytes[piece], d.data.add(at)) };
        }
        // Release: the bytes must be visible before the index that announces them.
        d.prod().store(prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    /// Bytes the consumer has not yet taken.
    pub fn pending(&self) -> Result<u32, RingError> {
        let d = &self.0;
        let cons = d.cons().load(Ordering::Acquire);
        Direction::filled(d.prod().load(Ordering::Relaxed), cons, d.size)
    }
}

/// The end of a byte ring that we consume from (console `in`, xenstore `rsp`).
pub struct Consumer(Direction);

impl Consumer {
    /// # Safety
    /// As for [`Producer::new`], with us as the only consumer.
    pub unsafe fn new(page: *mut u8, layout: Layout) -> Self {
        // SAFETY: forwarded contract.
        Consumer(unsafe { Direction::new(page, layout) })
    }

    /// Bytes the producer has published and we have not read.
    pub fn available(&self) -> Result<u32, RingError> {
        let d = &self.0;
        let prod = d.prod().load(Ordering::Acquire);
        Direction::filled(prod, d.cons().load(Ordering::Relaxed), d.size)
    }

    /// Copies up to `buf.len()` published bytes into `buf`, each read once, and frees them.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        let d = &self.0;
        // Acquire: the data the producer wrote before publishing `prod` is visible after it.
        let prod = d.prod().load(Ordering::Acquire);
        let cons = d.cons().load(Ordering::Relaxed);
        let n = (Direction::filled(prod, cons, d.size)? as usize).min(buf.len());
        for (at, piece) in d.pieces(cons, n) {
            // SAFETY: each piece lies inside the array; volatile because the producer may
            // (wrongly) be writing it right now: we take whatever byte is there, once.
            unsafe { volatile::copy_out(d.data.add(at), &mut buf[piece]) };
        }
        // The reads above must complete before the producer may reuse their slots.
        fence(Ordering::Release);
        d.cons().store(cons.wrapping_add(n as u32), Ordering::Relaxed);
        Ok(n)
    }

    /// Frees everything published without reading it; returns how many bytes that was.
    /// For a ring whose producer was replaced (a resume in a new domain): what the old one
    /// left is the tail of a conversation the new one knows nothing of.
    pub fn discard(&mut self) -> Result<u32, RingError> {
        let d = &self.0;
        let prod = d.prod().load(Ordering::Acquire);
        let n = Direction::filled(prod, d.cons().load(Ordering::Relaxed), d.size)?;
        d.cons().store(prod, Ordering::Release);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    /// The console page's `out` ring and the xenstore page's rings (io/console.h,
    /// io/xs_wire.h), as the console and xenbus crates describe them.
    const CONSOLE_OUT: Layout = Layout { data: 1024, size: 2048, cons: 3080, prod: 3084 };
    const CONSOLE_IN: Layout = Layout { data: 0, size: 1024, cons: 3072, prod: 3076 };
    const XS_REQ: Layout = Layout { data: 0, size: 1024, cons: 2048, prod: 2052 };
    const XS_RSP: Layout = Layout { data: 1024, size: 1024, cons: 2056, prod: 2060 };

    fn page() -> Box<Page> {
        Box::new(Page([0; 4096]))
    }

    fn index(page: &mut Page, off: usize) -> &AtomicU32 {
        // SAFETY: test-only view of an aligned u32 inside the page.
        unsafe { &*page.0.as_mut_ptr().add(off).cast::<AtomicU32>() }
    }

    #[test]
    fn console_round_trip_across_wrap() {
        let mut p = page();
        let base = p.0.as_mut_ptr();
        // SAFETY: the page outlives both ends; each end is unique.
        let (mut tx, mut rx) =
            unsafe { (Producer::new(base, CONSOLE_OUT), Consumer::new(base, CONSOLE_OUT)) };
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for round in 0..100u32 {
            let chunk: Vec<u8> = (0..777u32).map(|i| (i ^ round) as u8).collect();
            let n = tx.write(&chunk).unwrap();
            sent.extend_from_slice(&chunk[..n]);
            let mut buf = [0u8; 500];
            let m = rx.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..m]);
        }
        let mut buf = [0u8; 4096];
        loop {
            let m = rx.read(&mut buf).unwrap();
            if m == 0 {
                break;
            }
            got.extend_from_slice(&buf[..m]);
        }
        assert_eq!(sent, got);
        assert!(sent.len() > 3 * 2048, "the test must wrap the ring several times");
    }

    #[test]
    fn discard_frees_everything_published() {
        let mut p = page();
        let base = p.0.as_mut_ptr();
        // SAFETY: the page outlives both ends; each end is unique.
        let (mut tx, mut rx) =
            unsafe { (Producer::new(base, XS_RSP), Consumer::new(base, XS_RSP)) };
        assert_eq!(tx.write(&[7; 300]).unwrap(), 300);
        assert_eq!(rx.discard(), Ok(300));
        assert_eq!(rx.available(), Ok(0));
        assert_eq!(tx.write(&[8; 3]).unwrap(), 3);
        let mut buf = [0; 8];
        assert_eq!(rx.read(&mut buf), Ok(3));
        assert_eq!(&buf[..3], &[8; 3]);
        assert_eq!(rx.discard(), Ok(0));
    }

    #[test]
    fn producer_stops_when_full() {
        let mut p = page();
        let base = p.0.as_mut_ptr();
        // SAFETY: the page outlives the producer.
        let mut tx = unsafe { Producer::new(base, XS_REQ) };
        assert_eq!(tx.write(&[1; 1000]).unwrap(), 1000);
        assert_eq!(tx.write(&[2; 1000]).unwrap(), 24);
        assert_eq!(tx.write(&[3; 10]).unwrap(), 0);
        assert_eq!(tx.pending().unwrap(), 1024);
    }

    #[test]
    fn indices_are_wrapping() {
        let mut p = page();
        index(&mut p, XS_RSP.prod).store(5, Ordering::Relaxed);
        index(&mut p, XS_RSP.cons).store(u32::MAX - 2, Ordering::Relaxed);
        p.0[1024 + 1023] = b'a';
        p.0[1024..1024 + 5].copy_from_slice(b"bcdef");
        let base = p.0.as_mut_ptr();
        // SAFETY: the page outlives the consumer.
        let mut rx = unsafe { Consumer::new(base, XS_RSP) };
        let mut buf = [0u8; 16];
        // cons = 2^32 - 3, prod = 5: eight bytes available, starting at slot 1021.
        assert_eq!(rx.read(&mut buf).unwrap(), 8);
        assert_eq!(&buf[2..8], b"abcdef");
    }

    #[test]
    fn hostile_indices_are_errors() {
        let mut p = page();
        index(&mut p, CONSOLE_IN.prod).store(5000, Ordering::Relaxed);
        index(&mut p, CONSOLE_OUT.cons).store(3000, Ordering::Relaxed); // consumer ahead of our prod
        let base = p.0.as_mut_ptr();
        // SAFETY: the page outlives both ends.
        let (mut tx, mut rx) =
            unsafe { (Producer::new(base, CONSOLE_OUT), Consumer::new(base, CONSOLE_IN)) };
        let mut buf = [0u8; 8];
        assert_eq!(rx.read(&mut buf), Err(RingError::Corrupt { prod: 5000, cons: 0 }));
        assert_eq!(tx.write(b"x"), Err(RingError::Corrupt { prod: 0, cons: 3000 }));
        assert_eq!(index(&mut p, CONSOLE_OUT.prod).load(Ordering::Relaxed), 0);
        assert_eq!(index(&mut p, CONSOLE_IN.cons).load(Ordering::Relaxed), 0);
    }
}
