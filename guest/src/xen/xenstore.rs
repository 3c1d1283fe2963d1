//! The xenstore connection (Xen only): the xenbus client over the page and event channel
//! start_info names. The event handler only raises a flag; requests, replies and watch
//! events are handled by whoever uses the client (a blocking call, or `service`).

use super::evtchn;
use crate::{pvops, time};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use events::Port;
use ring::byte::{Consumer, Producer};
use xenbus::wire::interface::{REQ_RING, RSP_RING};
use xenbus::{Timeout, Transport, Xenstore};

/// The xenstore event channel (0 before `init`).
static PORT: AtomicU32 = AtomicU32::new(0);
/// Where the xenstore page is mapped (0 before `init`).
static PAGE_VA: AtomicU64 = AtomicU64::new(0);

pub fn page_va() -> u64 {
    PAGE_VA.load(Ordering::Relaxed)
}

fn port() -> Port {
    Port(PORT.load(Ordering::Relaxed))
}

/// Not an IrqMutex: blocking calls hold it while they wait for xenstored with events
/// enabled; the event handler never takes it.
static CLIENT: spin::Mutex<Option<Xenstore<Channel>>> = spin::Mutex::new(None);

/// The client's side effects, through this kernel's event channels and clock.
pub struct Channel {
    port: Port,
}

impl Transport for Channel {
    fn notify(&mut self) {
        // A failed send leaves the request in the ring for xenstored's next look.
        let _ = evtchn::send(self.port);
    }

    fn wait(&mut self, deadline_ns: u64) -> Result<(), Timeout> {
        if time::wait_until(|| evtchn::take_fired(self.port), deadline_ns) {
            Ok(())
        } else {
            Err(Timeout)
        }
    }

    fn now_ns(&self) -> u64 {
        pvops::clock_ns()
    }
}

/// Connects to xenstored through our store page (at `page`) and its event channel.
///
/// # Safety
/// `page` is the xenstore page start_info names, mapped for good and used by nothing else.
pub unsafe fn init(page: *mut u8, port: u32) -> Result<(), evtchn::Error> {
    // SAFETY: forwarded contract; the layouts are those of xenstore_domain_interface, and
    // this client is the page's only producer of requests and consumer of replies.
    let (req, rsp) = unsafe { (Producer::new(page, REQ_RING), Consumer::new(page, RSP_RING)) };
    let port = Port(port);
    *CLIENT.lock() = Some(Xenstore::new(req, rsp, Channel { port }));
    PORT.store(port.0, Ordering::Relaxed);
    PAGE_VA.store(page as u64, Ordering::Relaxed);
    evtchn::bind_recording(port)
}

/// Why the connection could not be carried over a resume.
#[derive(Debug)]
pub enum ResumeError {
    Bind(evtchn::Error),
    Xenstore(xenbus::Error),
    NoClient,
}

impl core::fmt::Display for ResumeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResumeError::Bind(e) => write!(f, "binding its event channel: {e}"),
            ResumeError::Xenstore(e) => write!(f, "{e}"),
            ResumeError::NoClient => f.write_str("no connection to carry over"),
        }
    }
}

/// After a resume in a new domain: the same page, a new event channel `port`, a new
/// xenstored to tell about our watches (see `Xenstore::resume`). Events are enabled: the
/// watches are registered with blocking calls.
pub fn resume(port: u32) -> Result<(), ResumeError> {
    let port = Port(port);
    PORT.store(port.0, Ordering::Relaxed);
    UNREAD.store(false, Ordering::SeqCst);
    evtchn::bind_recording(port).map_err(ResumeError::Bind)?;
    match with(|xs| xs.resume(Channel { port })) {
        Some(Ok(0)) => Ok(()),
        Some(Ok(n)) => {
            log::error!("xenstore: {n} watches lost in the resume");
            Ok(())
        }
        Some(Err(e)) => Err(ResumeError::Xenstore(e)),
        None => Err(ResumeError::NoClient),
    }
}

/// Runs `f` on the client; `None` when there is none (natively, or before `init`).
pub fn with<R>(f: impl FnOnce(&mut Xenstore<Channel>) -> R) -> Option<R> {
    CLIENT.lock().as_mut().map(f)
}

/// Set when a poll stopped at its budget with more in the reply ring: no event will say so.
static UNREAD: AtomicBool = AtomicBool::new(false);

/// Takes in what xenstored sent (a bounded amount a call) and runs the watch handlers it
/// triggered.
pub fn service() {
    let more = UNREAD.swap(false, Ordering::SeqCst);
    if evtchn::take_fired(port()) || more || with(|xs| xs.pending_events() > 0) == Some(true) {
        with(|xs| {
            if let Err(e) = xs.poll() {
                log::error!("xenstore: {e}");
            }
            xs.dispatch_watches();
            UNREAD.store(xs.has_unread(), Ordering::SeqCst);
        });
    }
}

/// Whether there is something for `service` to do. (Read without the client's lock: a
/// blocking call holds it while it waits, and its waits may ask.)
pub fn signalled() -> bool {
    evtchn::has_fired(port()) || UNREAD.load(Ordering::SeqCst)
}
