//! The PV console ring (`io/console.h`): we produce into `out`, xenconsoled consumes it and
//! signals the console event channel when it has made room.

use core::mem::{offset_of, size_of};
use ring::byte::{Layout, Producer, RingError};

/// `struct xencons_interface` (io/console.h).
#[repr(C)]
struct XenconsInterface {
    input: [u8; 1024],
    output: [u8; 2048],
    in_cons: u32,
    in_prod: u32,
    out_cons: u32,
    out_prod: u32,
}

const _: () = assert!(size_of::<XenconsInterface>() == 3088);
const _: () = assert!(offset_of!(XenconsInterface, output) == 1024);
const _: () = assert!(offset_of!(XenconsInterface, out_cons) == 3080);

/// The `out` ring: we produce, xenconsoled consumes.
pub const OUT: Layout = Layout {
    data: offset_of!(XenconsInterface, output),
    size: 2048,
    cons: offset_of!(XenconsInterface, out_cons),
    prod: offset_of!(XenconsInterface, out_prod),
};

/// How the ring reaches its backend: the guest implements this with event channels.
pub trait Doorbell {
    /// Tells the backend there is new output.
    fn notify(&mut self);
    /// Sleeps until the backend signals (or a short while passes). `Err` means the backend
    /// has made no progress for so long that waiting more is pointless.
    fn wait(&mut self) -> Result<(), Stalled>;
}

/// The backend stopped consuming output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stalled;

/// Why output was not (entirely) delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The backend stopped consuming; `written` bytes went out before it did.
    Stalled { written: usize },
    /// The backend published impossible indices: the ring is no longer usable.
    Ring(RingError),
}

/// The guest's end of a PV console page.
pub struct XenRing {
    out: Producer,
}

impl XenRing {
    /// # Safety
    /// `page` is the console page shared with the console backend, mapped for the lifetime of
    /// the value, and this is the only producer of its `out` ring.
    pub unsafe fn new(page: *mut u8) -> Self {
        // SAFETY: forwarded contract; the layout is that of xencons_interface.
        XenRing { out: unsafe { Producer::new(page, OUT) } }
    }

    /// Writes all of `bytes`, waiting for the backend whenever the ring is full, so that no
    /// byte is lost however long the output.
    pub fn write_all(&mut self, bytes: &[u8], door: &mut impl Doorbell) -> Result<(), Error> {
        let mut written = 0;
        while written < bytes.len() {
            let n = self.out.write(&bytes[written..]).map_err(Error::Ring)?;
            written += n;
            if n > 0 {
                door.notify();
            }
            if written < bytes.len() {
                door.wait().map_err(|Stalled| Error::Stalled { written })?;
            }
        }
        Ok(())
    }

    /// Output the backend has not consumed yet.
    pub fn unconsumed(&self) -> Result<u32, RingError> {
        self.out.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::byte::Consumer;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    /// A backend that drains the ring each time the guest waits.
    struct FakeBackend {
        rx: Consumer,
        got: Vec<u8>,
        notifies: usize,
        stall_after: Option<usize>,
        waits: usize,
    }

    impl Doorbell for FakeBackend {
        fn notify(&mut self) {
            self.notifies += 1;
        }
        fn wait(&mut self) -> Result<(), Stalled> {
            self.waits += 1;
            if self.stall_after.is_some_and(|n| self.waits > n) {
                return Err(Stalled);
            }
            let mut buf = [0u8; 300];
            let n = self.rx.read(&mut buf).unwrap();
            self.got.extend_from_slice(&buf[..n]);
            Ok(())
        }
    }

    fn setup(stall_after: Option<usize>) -> (Box<Page>, XenRing, FakeBackend) {
        let mut page = Box::new(Page([0; 4096]));
        let base = page.0.as_mut_ptr();
        // SAFETY: the boxed page outlives both ends (returned together, dropped together).
        let (tx, rx) = unsafe { (XenRing::new(base), Consumer::new(base, OUT)) };
        (page, tx, FakeBackend { rx, got: Vec::new(), notifies: 0, stall_after, waits: 0 })
    }

    #[test]
    fn output_far_larger_than_the_ring_arrives_whole() {
        let (_page, mut tx, mut be) = setup(None);
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 256) as u8).collect();
        tx.write_all(&data, &mut be).unwrap();
        let mut buf = [0u8; 4096];
        let n = be.rx.read(&mut buf).unwrap();
        be.got.extend_from_slice(&buf[..n]);
        assert_eq!(be.got, data);
        assert!(be.notifies >= 65536 / 2048);
    }

    #[test]
    fn a_stalled_backend_is_reported_with_what_went_out() {
        let (_page, mut tx, mut be) = setup(Some(2));
        let err = tx.write_all(&[b'x'; 5000], &mut be).unwrap_err();
        // 2048 initially, then two drains of 300 bytes made room for 600 more.
        assert_eq!(err, Error::Stalled { written: 2048 + 600 });
    }
}
