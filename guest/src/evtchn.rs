//! Event channels in this kernel: the handler registry and the upcall's demultiplexer
//! (Xen PV; natively no event channels exist and nothing here is called).

use crate::sync::IrqMutex;
use events::{Handler, HandlerError, Handlers, Port, TwoLevel};
use hypercall::Errno;

const PORTS: usize = events::two_level::NR_PORTS;

static HANDLERS: IrqMutex<Handlers<PORTS>> = IrqMutex::new(Handlers::new());
/// The demultiplexer's state (where the last scan stopped); only the upcall uses it.
static DEMUX: IrqMutex<Option<TwoLevel<'static>>> = IrqMutex::new(None);

#[derive(Debug)]
pub enum Error {
    Xen(Errno),
    Registry(HandlerError),
    BadPort(Port),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Xen(e) => write!(f, "hypercall failed: {e}"),
            Error::Registry(e) => write!(f, "{e}"),
            Error::BadPort(p) => write!(f, "{p} is beyond the 2-level ABI"),
        }
    }
}

/// Runs the handlers of every pending, unmasked port. Called by the upcall with events
/// masked.
pub fn dispatch_pending() {
    let mut demux = DEMUX.lock();
    let demux = demux.get_or_insert_with(crate::arch::xen::two_level);
    demux.demux(|port| {
        // Copied out so that the handler runs without the registry locked.
        let handler = HANDLERS.lock().get(port);
        match handler {
            Some((handler, ctx)) => handler(port, ctx),
            None => log::warn!("event on {port}, which has no handler"),
        }
    });
}

/// Registers `handler` for `port` and unmasks it.
pub fn bind(port: Port, handler: Handler, ctx: usize) -> Result<(), Error> {
    HANDLERS.lock().register(port, handler, ctx).map_err(Error::Registry)?;
    unmask(port)
}

/// Binds a virtual IRQ of vcpu 0 to a new port with `handler`.
pub fn bind_virq(virq: u32, handler: Handler, ctx: usize) -> Result<Port, Error> {
    let port = Port(hypercall::ops::evtchn_bind_virq(virq, 0).map_err(Error::Xen)?);
    if let Err(e) = bind(port, handler, ctx) {
        let _ = hypercall::ops::evtchn_close(port.0);
        return Err(e);
    }
    Ok(port)
}

/// Unregisters and closes `port`.
pub fn close(port: Port) -> Result<(), Error> {
    let _ = crate::arch::xen::two_level().mask(port);
    HANDLERS.lock().unregister(port).map_err(Error::Registry)?;
    hypercall::ops::evtchn_close(port.0).map_err(Error::Xen)
}

pub fn unmask(port: Port) -> Result<(), Error> {
    let upcall = crate::arch::xen::two_level().unmask(port).map_err(|e| Error::BadPort(e.0))?;
    if upcall {
        // Unmasking made an event deliverable: let Xen deliver it if events are enabled.
        crate::arch::xen::force_event_delivery();
    }
    Ok(())
}

/// Clears `port`'s pending bit (for ports we poll rather than take upcalls for).
pub fn clear_pending(port: Port) {
    let _ = crate::arch::xen::two_level().clear_pending(port);
}

pub fn is_pending(port: Port) -> bool {
    crate::arch::xen::two_level().is_pending(port).unwrap_or(false)
}
