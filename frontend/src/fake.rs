//! The guest's side effects as every driver's host tests fake them (feature `test-utils`):
//! [`Pages`] over the grant crate's fake memory and grant table, [`EventChannel`] over
//! [`FakePorts`], both for a [`FakeEnv`] over a fake backend's world. A driver's fake
//! backend (blkback, netback) is its world: it holds a [`FakeGrantTable`] and
//! [`FakePorts`] and says how the backend serves its rings while the driver waits.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

pub use grant::fake::{
    FakeEnv, FakeGrantTable, FakePage, FakeRing, Grant, HasGrantTable, RingAllocError,
};
pub use ring::fake::{any_nonzero, extend_cycle, Held, SharedMem};
use xenbus::fake::{Client, Fake};

use crate::Timeout;
use crate::{DeviceError, DomId, EventChannel, FrontRing, GrantRef, Pages, Pod, SharedRing};

/// The first port [`FakePorts`] hands out; the next ones follow.
pub const FIRST_PORT: u32 = 7;

/// Nanoseconds the fake clock advances per wait in which the backend did something.
pub const WAIT_STEP_NS: u64 = 1_000;

/// The guest's event channels and clock, as a driver sees them, and what the guest's watch
/// on the backend's state would report.
pub struct FakePorts {
    /// The only domain a port may be offered to: the backend's.
    pub remote: DomId,
    /// `alloc_unbound` fails once this many ports were allocated.
    pub limit: usize,
    pub allocated: Vec<u32>,
    pub closed: Vec<u32>,
    /// Notifications per port.
    pub notifies: BTreeMap<u32, usize>,
    pub now: u64,
    /// The backend left Connected.
    pub backend_closing: bool,
    /// Ports of an earlier domain ([`new_domain`](Self::new_domain)): Xen forgot them, and
    /// the guest ignores a driver's notify or close of one, as this fake does.
    pub gone: Vec<u32>,
}

impl FakePorts {
    pub fn new(remote: DomId) -> Self {
        FakePorts {
            remote,
            limit: usize::MAX,
            allocated: Vec::new(),
            closed: Vec::new(),
            notifies: BTreeMap::new(),
            now: 0,
            backend_closing: false,
            gone: Vec::new(),
        }
    }

    /// The guest was restored in a new domain: every port so far is gone. New ones get new
    /// numbers here (Xen may reuse them; the guest's port epochs guard against that).
    pub fn new_domain(&mut self) {
        let open: Vec<u32> =
            self.allocated.iter().copied().filter(|p| !self.closed.contains(p)).collect();
        self.gone.extend(open);
        self.backend_closing = false;
    }

    /// The port allocated last, if any: the one a backend finds published.
    pub fn last(&self) -> Option<u32> {
        self.allocated.last().copied()
    }

    /// Notifications on `port` so far.
    pub fn notifies(&self, port: u32) -> usize {
        self.notifies.get(&port).copied().unwrap_or(0)
    }

    pub fn is_closed(&self, port: u32) -> bool {
        self.closed.contains(&port)
    }
}

/// A fake backend's state, as the fake guest environment needs it.
pub trait FakeBackend: HasGrantTable {
    fn ports(&mut self) -> &mut FakePorts;

    /// The backend's work while the driver waits: answers what is on its rings, returns
    /// how many requests it answered.
    fn serve(&mut self) -> usize;
}

/// Makes `$world` a [`FakeBackend`] (and [`HasGrantTable`]) from its fields `table`
/// ([`FakeGrantTable`]) and `ports` ([`FakePorts`]) and its inherent `serve(&mut self) ->
/// usize`: what every driver's fake backend has.
#[macro_export]
macro_rules! fake_backend {
    ($world:ty) => {
        impl $crate::fake::HasGrantTable for $world {
            fn grant_table(&mut self) -> &mut $crate::fake::FakeGrantTable {
                &mut self.table
            }
        }

        impl $crate::fake::FakeBackend for $world {
            fn ports(&mut self) -> &mut $crate::fake::FakePorts {
                &mut self.ports
            }

            fn serve(&mut self) -> usize {
                <$world>::serve(self)
            }
        }
    };
}

impl<Req: Pod, Rsp: Pod> SharedRing<Req, Rsp> for FakeRing<Req, Rsp> {
    fn front(&mut self) -> &mut FrontRing<Req, Rsp> {
        &mut self.front
    }

    fn grant_refs(&self) -> &[GrantRef] {
        &self.refs
    }
}

impl<W: HasGrantTable> Pages for FakeEnv<W> {
    type Ring<Req: Pod, Rsp: Pod> = FakeRing<Req, Rsp>;

    /// Refuses more pages than the table's `max_ring_pages` (a guest without multi-page
    /// rings, by default) with [`DeviceError::NoMemory`].
    fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        backend: DomId,
        pages: usize,
    ) -> Result<FakeRing<Req, Rsp>, DeviceError> {
        let mut w = self.world();
        let table = w.grant_table();
        table.ring_requests.push(pages);
        if pages > table.max_ring_pages {
            return Err(DeviceError::NoMemory);
        }
        table.alloc_ring(pages, backend).map_err(|e| match e {
            RingAllocError::NoMemory => DeviceError::NoMemory,
            RingAllocError::Grant(e) => DeviceError::Grant(e),
        })
    }

    fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: FakeRing<Req, Rsp>) {
        self.world().grant_table().free_ring(ring)
    }
}

impl<W: FakeBackend> EventChannel for FakeEnv<W> {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, DeviceError> {
        let mut w = self.world();
        let ports = w.ports();
        assert_eq!(remote, ports.remote, "port offered to a domain that is not the backend");
        if ports.allocated.len() >= ports.limit {
            return Err(DeviceError::EventChannel);
        }
        let port = FIRST_PORT + ports.allocated.len() as u32;
        ports.allocated.push(port);
        Ok(port)
    }

    fn notify(&mut self, port: u32) {
        let mut w = self.world();
        let ports = w.ports();
        if ports.gone.contains(&port) {
            return;
        }
        assert!(ports.allocated.contains(&port) && !ports.is_closed(port), "notify on port {port}");
        *ports.notifies.entry(port).or_default() += 1;
    }

    fn close(&mut self, port: u32) {
        let mut w = self.world();
        let ports = w.ports();
        if ports.gone.contains(&port) {
            return;
        }
        assert!(ports.allocated.contains(&port), "closing a port never allocated");
        assert!(!ports.is_closed(port), "closing a port twice");
        ports.closed.push(port);
    }

    fn wait(&mut self, port: u32, deadline_ns: u64) -> Result<(), Timeout> {
        let mut w = self.world();
        assert!(w.ports().allocated.contains(&port), "waiting on port {port}");
        if w.serve() > 0 {
            w.ports().now += WAIT_STEP_NS;
            Ok(())
        } else {
            let ports = w.ports();
            ports.now = ports.now.max(deadline_ns);
            Err(Timeout)
        }
    }

    fn now_ns(&self) -> u64 {
        self.0.borrow_mut().ports().now
    }

    fn backend_closing(&mut self) -> bool {
        self.world().ports().backend_closing
    }
}

/// A backend's keys: `defaults`, overridden by `extra`; a key given the value `-` is left
/// out. Sorted by key.
pub fn backend_keys(defaults: &[(&str, &str)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut keys: BTreeMap<String, String> =
        defaults.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    keys.retain(|_, v| v != "-");
    keys.into_iter().collect()
}

/// A fake device: its backend's world, and how a test plugs it in and connects its driver.
pub trait FakeDevice: FakeBackend + Sized {
    type Driver;
    type Error;

    /// A fresh world whose backend offers `extra` (the device's own meaning: disk keys,
    /// backend features...), with the toolstack's keys written to `store` and the backend's
    /// side of the handshake installed as its idle step.
    fn plug(store: &mut Fake, extra: &[(&str, &str)]) -> Rc<RefCell<Self>>;

    /// The driver's `connect` over `env`.
    fn connect(xs: &mut Client, env: FakeEnv<Self>) -> Result<Self::Driver, Self::Error>;

    /// What the toolstack does for the device when the guest is restored in a new domain:
    /// the old backend is gone (its rings unmapped, its directories removed), and a fresh
    /// one offering `extra` is plugged in their place, the disk or network behind it kept.
    fn replug(world: &Rc<RefCell<Self>>, store: &mut Fake, extra: &[(&str, &str)]);
}

/// Everything a driver's host test needs: the xenstore client, the fake xenstored behind
/// it, and the fake backend's world.
pub struct Rig<W> {
    pub xs: Client,
    pub store: Arc<Mutex<Fake>>,
    pub world: Rc<RefCell<W>>,
}

impl<W: FakeDevice> Rig<W> {
    /// The fakes, with the device plugged and its backend offering `extra`.
    pub fn new(extra: &[(&str, &str)]) -> Self {
        let (xs, store) = xenbus::fake::setup();
        let world = W::plug(&mut store.lock().unwrap(), extra);
        Rig { xs, store, world }
    }

    pub fn connect(&mut self) -> Result<W::Driver, W::Error> {
        let env = self.env();
        W::connect(&mut self.xs, env)
    }

    /// The guest's side as a driver gets it, over this rig's world.
    pub fn env(&self) -> FakeEnv<W> {
        FakeEnv(self.world.clone())
    }

    /// A rig and a connected driver.
    pub fn connected(extra: &[(&str, &str)]) -> (Self, W::Driver)
    where
        W::Error: core::fmt::Debug,
    {
        let mut rig = Rig::new(extra);
        let driver = rig.connect().expect("handshake");
        (rig, driver)
    }
}

impl<W: FakeDevice> Rig<W> {
    /// The guest was restored in a new domain: the backend dropped every mapping, every
    /// event channel is gone, and a fresh backend offering `extra` waits for the driver
    /// (see [`FakeDevice::replug`]).
    pub fn new_domain(&mut self, extra: &[(&str, &str)]) {
        {
            let mut w = self.world.borrow_mut();
            w.grant_table().held.clear();
            w.ports().new_domain();
        }
        W::replug(&self.world, &mut self.store.lock().unwrap(), extra);
    }
}

impl<W> Rig<W> {
    pub fn w(&self) -> RefMut<'_, W> {
        self.world.borrow_mut()
    }

    pub fn store_get(&self, key: &str) -> Option<String> {
        self.store.lock().unwrap().get_string(key)
    }
}
