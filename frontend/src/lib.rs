//! The frontend core: what every split driver (blkfront, netfront) has in common, so that
//! each keeps only its protocol.
//!
//! - [`DeviceError`]: the failures that are not the protocol's own: the device broke or
//!   closed, the guest ran out of pages, grants or ports, xenstore or a backend value failed
//!   during the handshake. Each driver's error wraps it.
//! - [`Pages`], [`SharedRing`], [`EventChannel`]: what a driver needs from the guest
//!   (pages, grants, rings, an event channel, a clock), implemented once by the guest for
//!   every driver and once by [`fake`] for their tests.
//! - [`attach`]: the first step of every handshake, up to a backend ready to connect.
//! - The granted-page pool ([`grant::pool`], with its [`grant::Grants`] environment trait)
//!   and the table of requests in flight ([`ring::slots`]) live beside the memory and rings
//!   they manage and are re-exported here.
//! - [`fake`] (feature `test-utils`): the guest's side as the drivers' host tests and the
//!   fuzz targets fake it.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(feature = "test-utils")]
pub mod fake;

use core::fmt;

pub use grant::pool::{Granted, Grants, PagePool, PoolStats, Settled, Spare};
pub use grant::{DomId, GrantError, GrantRef, Page, PAGE_SIZE};
pub use ring::shared::{FrontRing, Pod};
pub use ring::slots::SlotTable;

use xenbus::client::{Transport, Xenstore};
use xenbus::frontend::{BackendValueError, Device};
use xenbus::XenbusState;

/// Why a device failed for reasons every frontend shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The device is not connected (closed, or never was).
    NotConnected,
    /// The backend broke the protocol: it corrupted a ring, or holds more pages past their
    /// requests than the driver allows. Every request failed and the device is unusable.
    Broken,
    /// The guest could not give the driver a page.
    NoMemory,
    /// Granting a page to the backend failed.
    Grant(GrantError),
    /// The guest could not allocate an event channel.
    EventChannel,
    /// A xenstore operation failed during the handshake.
    Xenstore(xenbus::Error),
    /// The backend published a value that makes no sense (not a number, out of range...).
    BadBackendValue { key: &'static str, why: &'static str },
    /// The backend lacks a feature the driver cannot do without.
    MissingFeature(&'static str),
    /// The backend closed (or vanished) during the handshake, or left Connected while
    /// connected (the toolstack is detaching the device).
    BackendClosed,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::NotConnected => f.write_str("device not connected"),
            DeviceError::Broken => {
                f.write_str("the backend broke the protocol (its rings, or pages it keeps)")
            }
            DeviceError::NoMemory => f.write_str("out of pages"),
            DeviceError::Grant(e) => write!(f, "{e}"),
            DeviceError::EventChannel => f.write_str("cannot allocate an event channel"),
            DeviceError::Xenstore(e) => write!(f, "{e}"),
            DeviceError::BadBackendValue { key, why } => write!(f, "backend's {key}: {why}"),
            DeviceError::MissingFeature(key) => write!(f, "backend lacks {key}"),
            DeviceError::BackendClosed => f.write_str("backend closed the device"),
        }
    }
}

impl From<BackendValueError> for DeviceError {
    fn from(e: BackendValueError) -> Self {
        match e {
            BackendValueError::Xenstore(e) => DeviceError::Xenstore(e),
            BackendValueError::Bad { key, why } => DeviceError::BadBackendValue { key, why },
        }
    }
}

impl From<xenbus::Error> for DeviceError {
    fn from(e: xenbus::Error) -> Self {
        DeviceError::Xenstore(e)
    }
}

impl From<GrantError> for DeviceError {
    fn from(e: GrantError) -> Self {
        DeviceError::Grant(e)
    }
}

/// Implements the conversions a driver's error type needs to wrap [`DeviceError`] in its
/// variant `Device`, so that `?` works on everything the core and xenbus return.
#[macro_export]
macro_rules! wrap_device_error {
    ($driver_error:ty) => {
        impl From<$crate::DeviceError> for $driver_error {
            fn from(e: $crate::DeviceError) -> Self {
                <$driver_error>::Device(e)
            }
        }

        impl From<$crate::GrantError> for $driver_error {
            fn from(e: $crate::GrantError) -> Self {
                <$driver_error>::Device(e.into())
            }
        }

        impl From<xenbus::Error> for $driver_error {
            fn from(e: xenbus::Error) -> Self {
                <$driver_error>::Device(e.into())
            }
        }

        impl From<xenbus::frontend::BackendValueError> for $driver_error {
            fn from(e: xenbus::frontend::BackendValueError) -> Self {
                <$driver_error>::Device(e.into())
            }
        }
    };
}

/// A shared ring the guest built for a driver: a [`FrontRing`] over pages it allocated
/// and granted writable to the backend, and the references of those grants, in page order
/// (published as `ring-ref`, `ring-ref0..N`, `tx-ring-ref`...).
///
/// The guest owns the memory: the driver hands the ring back through
/// [`Pages::free_ring`] when it closes or when the handshake fails.
pub trait SharedRing<Req: Pod, Rsp: Pod> {
    fn front(&mut self) -> &mut FrontRing<Req, Rsp>;
    /// One reference per ring page, in page order: as many as the pages asked of
    /// [`Pages::alloc_ring`], at least one.
    fn grant_refs(&self) -> &[GrantRef];
}

/// Pages and grants, as the guest provides them to a driver: the data pages' side
/// ([`Grants`], what the page pool uses) and the shared rings.
pub trait Pages: Grants {
    /// Every ring is this type, one instance per request/response layout.
    type Ring<Req: Pod, Rsp: Pod>: SharedRing<Req, Rsp>;

    /// Allocates and zeroes `pages` pages for a shared ring, contiguous in our address space
    /// (the ring is one array across them; the frames behind them need not be contiguous,
    /// each is granted on its own), builds the [`FrontRing`] over all of them
    /// (`FrontRing::new(base, pages)`, the only `unsafe` step, which is the guest's), and
    /// grants each page writable to `backend`, references in page order.
    ///
    /// Errors are [`DeviceError::NoMemory`] (also: more pages than the guest gives one
    /// ring) or [`DeviceError::Grant`]; on error nothing stays allocated or granted.
    fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        backend: DomId,
        pages: usize,
    ) -> Result<Self::Ring<Req, Rsp>, DeviceError>;

    /// Takes back a ring the driver is done with, after the backend disconnected (or never
    /// connected): the guest ends its grants and frees the pages, or leaks them if a grant
    /// is still in use.
    fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: Self::Ring<Req, Rsp>);
}

/// The deadline passed without an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout;

/// A device's event channel, and the guest's clock and xenbus watch as the driver needs
/// them. Drivers that never block (netfront: its caller polls) use only the first three.
pub trait EventChannel {
    /// A new port bound to nothing yet that `remote` may connect to
    /// (`EVTCHNOP_alloc_unbound`). The guest routes the port's events to the driver once
    /// the driver's `connect` returns.
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, DeviceError>;

    /// Signals the backend: new requests are on a ring (`EVTCHNOP_send`).
    fn notify(&mut self, port: u32);

    /// Closes `port` (`EVTCHNOP_close`), after the backend disconnected.
    fn close(&mut self, port: u32);

    /// Blocks until `port` fired since the previous `wait` returned, or until
    /// [`now_ns`](Self::now_ns) reaches `deadline_ns`. An event that fired before the call
    /// must make it return at once: the driver checks the ring, then waits, and a response
    /// that arrived in between must not be missed until the deadline. Spurious returns are
    /// fine.
    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout>;

    /// A monotonic clock in nanoseconds.
    fn now_ns(&self) -> u64;

    /// Whether the backend left Connected (Closing, Closed, or its directory gone: the
    /// toolstack is taking the device away) since the driver connected. The guest learns
    /// it from a watch on the backend's `state`, as Linux's frontends do.
    fn backend_closing(&mut self) -> bool;
}

/// The first step of a frontend's handshake: finds `device/<class>/<id>` and its backend,
/// and waits until the backend is ready for us to connect (InitWait, Initialised or
/// Connected), taking a backend left Closed by an earlier connection back to a fresh start.
pub fn attach<T: Transport>(
    xs: &mut Xenstore<T>,
    class: &str,
    id: u32,
    timeout_ns: u64,
) -> Result<(Device, DomId), DeviceError> {
    use XenbusState::*;
    let (device, state) = xenbus::frontend::attach(xs, class, id, timeout_ns)?;
    if !matches!(state, InitWait | Initialised | Connected) {
        return Err(DeviceError::BackendClosed);
    }
    let backend = DomId(device.backend_id);
    Ok((device, backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum DriverError {
        Own,
        Device(DeviceError),
    }
    wrap_device_error!(DriverError);

    #[test]
    fn a_drivers_error_takes_every_shared_failure_through_question_mark() {
        fn grant() -> Result<(), DriverError> {
            Err(GrantError::Exhausted)?
        }
        fn xenstore() -> Result<(), DriverError> {
            Err(xenbus::Error::Timeout)?
        }
        fn value() -> Result<(), DriverError> {
            Err(BackendValueError::Bad { key: "sectors", why: "not a number" })?
        }
        assert_eq!(grant(), Err(DriverError::Device(DeviceError::Grant(GrantError::Exhausted))));
        assert_eq!(
            xenstore(),
            Err(DriverError::Device(DeviceError::Xenstore(xenbus::Error::Timeout)))
        );
        assert_eq!(
            value(),
            Err(DriverError::Device(DeviceError::BadBackendValue {
                key: "sectors",
                why: "not a number"
            }))
        );
        assert_ne!(DriverError::Own, DriverError::Device(DeviceError::Broken));
    }

    #[test]
    fn the_messages_name_what_failed_without_a_driver_prefix() {
        let bad = DeviceError::BadBackendValue { key: "sector-size", why: "not a power of two" };
        assert_eq!(bad.to_string(), "backend's sector-size: not a power of two");
        assert_eq!(
            DeviceError::MissingFeature("feature-rx-copy").to_string(),
            "backend lacks feature-rx-copy"
        );
        assert_eq!(DeviceError::BackendClosed.to_string(), "backend closed the device");
    }
}
