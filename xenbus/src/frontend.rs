//! A frontend's side of xenbus: finding our devices under `device/<class>/<id>`, learning
//! their backend, and the XenbusState handshake with it (`io/xenbus.h`).
//!
//! The toolstack writes a device's keys while we may already be looking, and the backend
//! moves through its states at its own pace, so every read of something another domain is
//! still writing waits for it (through a watch, [`Xenstore::wait_for`]) up to a deadline.
//! The backend path and id are the toolstack's claims and are validated like any reply.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use log::warn;

use crate::client::{Error, Transport, Xenstore};
use crate::state::XenbusState;
use crate::store::{check_path, parse_string, parse_u64, Store};
use crate::wire::XsError;

/// One of our devices and the backend serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// `vif`, `vbd`, ...
    pub class: String,
    pub id: u32,
    /// Our directory, `device/<class>/<id>` (relative to our domain's home).
    pub path: String,
    /// The backend's directory, an absolute path.
    pub backend: String,
    /// The domain serving the device.
    pub backend_id: u16,
}

/// The ids of our devices of `class`; none if the toolstack created no such device. Names
/// that are not numbers are logged and skipped, so one bad entry hides no other device.
pub fn device_ids<T: Transport>(xs: &mut Xenstore<T>, class: &str) -> Result<Vec<u32>, Error> {
    check_class(class)?;
    let names = match xs.directory(&format!("device/{class}")) {
        Err(Error::Xs(XsError::NoEnt)) => return Ok(Vec::new()),
        other => other?,
    };
    let mut ids = Vec::new();
    for name in names {
        match parse_u64(name.as_bytes()).and_then(|n| u32::try_from(n).ok()) {
            Some(id) => ids.push(id),
            None => warn!("xenbus: ignoring device/{class}/{name}: not a device id"),
        }
    }
    Ok(ids)
}

/// The value at `path` once it exists and is non-empty, waiting up to `timeout_ns`. Empty
/// counts as not written yet: xenstored creates missing parents with empty values.
pub fn wait_for_value<T: Transport>(
    xs: &mut Xenstore<T>,
    path: &str,
    timeout_ns: u64,
) -> Result<Vec<u8>, Error> {
    xs.wait_for(path, timeout_ns, |xs| match xs.read(path) {
        Ok(v) if !v.is_empty() => Ok(Some(v)),
        Ok(_) | Err(Error::Xs(XsError::NoEnt)) => Ok(None),
        Err(e) => Err(e),
    })
}

/// Device `class`/`id` with its backend, waiting up to `timeout_ns` in all for the
/// toolstack to write `backend` and `backend-id`.
pub fn probe<T: Transport>(
    xs: &mut Xenstore<T>,
    class: &str,
    id: u32,
    timeout_ns: u64,
) -> Result<Device, Error> {
    check_class(class)?;
    let deadline = xs.deadline_in(timeout_ns);
    let path = format!("device/{class}/{id}");
    let backend = parse_string(wait_for_value(xs, &format!("{path}/backend"), timeout_ns)?)?;
    if !backend.starts_with('/') || check_path(&backend).is_err() {
        return Err(Error::BadValue);
    }
    let left = deadline.saturating_sub(xs.transport().now_ns());
    let backend_id = wait_for_value(xs, &format!("{path}/backend-id"), left)?;
    let backend_id =
        parse_u64(&backend_id).and_then(|n| u16::try_from(n).ok()).ok_or(Error::BadValue)?;
    Ok(Device { class: class.into(), id, path, backend, backend_id })
}

/// Device `class`/`id` ([`probe`]) once its backend is ready for a handshake, each wait
/// bounded by `timeout_ns`: InitWait or beyond, after a [`Device::reconnect`] if an earlier
/// connection (ours or the backend's) left it closed. Returns the backend's state, which
/// the driver checks is InitWait, Initialised or Connected before it sets up its rings.
///
/// A closed backend whose `online` is 0 is not asked again: the toolstack is removing the
/// device (`xl block-detach` writes `online = 0` with Closing), and it stays closed.
pub fn attach<T: Transport>(
    xs: &mut Xenstore<T>,
    class: &str,
    id: u32,
    timeout_ns: u64,
) -> Result<(Device, XenbusState), Error> {
    use XenbusState::*;
    let device = probe(xs, class, id, timeout_ns)?;
    let mut state = device.wait_for_backend(xs, timeout_ns, |s| s >= InitWait)?;
    let offline = matches!(read_optional(xs, &device.backend, "online"), Ok(Some(0)));
    if matches!(state, Closing | Closed) && !offline {
        // A backend that sees us Initialising again gets ready for a fresh handshake.
        state = device.reconnect(xs, timeout_ns)?;
    }
    Ok((device, state))
}

/// Why a number the backend published cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendValueError {
    /// Reading it failed.
    Xenstore(Error),
    /// It is there but makes no sense (`key`: the node's name in the backend's directory).
    Bad { key: &'static str, why: &'static str },
}

/// A number the backend may have written in its directory `dir`; `None` if the node does
/// not exist.
pub fn read_optional(
    xs: &mut impl Store,
    dir: &str,
    key: &'static str,
) -> Result<Option<u64>, BackendValueError> {
    match xs.read_u64(&format!("{dir}/{key}")) {
        Ok(v) => Ok(Some(v)),
        Err(Error::Xs(XsError::NoEnt)) => Ok(None),
        Err(Error::BadValue) => Err(BackendValueError::Bad { key, why: "not a number" }),
        Err(e) => Err(BackendValueError::Xenstore(e)),
    }
}

/// A `feature-*` node: absent or 0 is off, 1 is on, anything else is refused.
pub fn read_flag(
    xs: &mut impl Store,
    dir: &str,
    key: &'static str,
) -> Result<bool, BackendValueError> {
    match read_optional(xs, dir, key)? {
        None | Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(_) => Err(BackendValueError::Bad { key, why: "not 0 or 1" }),
    }
}

/// All our devices of `class`, each probed with `timeout_ns`.
pub fn discover<T: Transport>(
    xs: &mut Xenstore<T>,
    class: &str,
    timeout_ns: u64,
) -> Result<Vec<Device>, Error> {
    device_ids(xs, class)?.into_iter().map(|id| probe(xs, class, id, timeout_ns)).collect()
}

/// A device of ours that came or went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChange {
    Added { class: String, id: u32 },
    Removed { class: String, id: u32 },
}

/// The frontends of some classes the toolstack has given us, kept current as Linux's
/// xenbus probe keeps them: from a watch on `device`, whose events name the nodes that
/// changed. The toolstack may add a device at any time (`xl block-attach`, or a device model
/// that writes its nodes once the domain runs) and remove one (`xl block-detach`).
#[derive(Clone, Debug, Default)]
pub struct DeviceList {
    classes: Vec<String>,
    known: BTreeSet<(String, u32)>,
}

/// The longest listing kept of one class: far more than any toolstack gives a domain,
/// and a bound whatever xenstored says.
pub const MAX_DEVICES_PER_CLASS: usize = 256;

impl DeviceList {
    /// Tracks `classes` (e.g. `vbd`, `vif`); call [`DeviceList::rescan`] to fill it.
    pub fn new(classes: &[&str]) -> Self {
        DeviceList { classes: classes.iter().map(|&c| c.into()).collect(), known: BTreeSet::new() }
    }

    /// Lists every tracked class again; what came and went since the last look.
    pub fn rescan<T: Transport>(
        &mut self,
        xs: &mut Xenstore<T>,
    ) -> Result<Vec<DeviceChange>, Error> {
        let mut changes = Vec::new();
        for class in self.classes.clone() {
            changes.extend(self.rescan_class(xs, &class)?);
        }
        Ok(changes)
    }

    fn rescan_class<T: Transport>(
        &mut self,
        xs: &mut Xenstore<T>,
        class: &str,
    ) -> Result<Vec<DeviceChange>, Error> {
        let mut now = device_ids(xs, class)?;
        if now.len() > MAX_DEVICES_PER_CLASS {
            warn!(
                "xenbus: {} devices of class {class}: only {MAX_DEVICES_PER_CLASS} kept",
                now.len()
            );
            now.truncate(MAX_DEVICES_PER_CLASS);
        }
        let mut changes = Vec::new();
        let before: Vec<u32> = self.ids(class);
        for &id in before.iter().filter(|id| !now.contains(id)) {
            self.known.remove(&(class.into(), id));
            changes.push(DeviceChange::Removed { class: class.into(), id });
        }
        for &id in now.iter().filter(|id| !before.contains(id)) {
            self.known.insert((class.into(), id));
            changes.push(DeviceChange::Added { class: class.into(), id });
        }
        Ok(changes)
    }

    /// Looks again at what an event of the watch on `device` may have changed. A key below
    /// a known device (the handshake's own writes, most events) changes no listing and costs
    /// no request; a device's directory itself, or anything of a device we do not know yet,
    /// relists its class.
    pub fn on_event<T: Transport>(
        &mut self,
        xs: &mut Xenstore<T>,
        path: &str,
    ) -> Result<Vec<DeviceChange>, Error> {
        match self.event_scope(path) {
            Scope::Nothing => Ok(Vec::new()),
            Scope::Class(class) => self.rescan_class(xs, &class),
            Scope::All => self.rescan(xs),
        }
    }

    fn event_scope(&self, path: &str) -> Scope {
        // Relative to our home (a relative watch's events are), or absolute below it.
        let rest = match path.find("device") {
            Some(0) => path,
            Some(i) if path.starts_with("/local/domain/") && path[..i].ends_with('/') => &path[i..],
            _ => return Scope::Nothing,
        };
        let mut parts = rest.split('/');
        if parts.next() != Some("device") {
            return Scope::Nothing;
        }
        let Some(class) = parts.next() else { return Scope::All };
        let Some(class) = self.classes.iter().find(|c| *c == class) else {
            return Scope::Nothing;
        };
        let Some(id) = parts.next() else { return Scope::Class(class.clone()) };
        // A name that is no device id is no device (a listing skips it, with a warning):
        // relisting for each of its events would only repeat that warning.
        let Some(id) = parse_u64(id.as_bytes()).and_then(|n| u32::try_from(n).ok()) else {
            return Scope::Nothing;
        };
        if parts.next().is_some() && self.contains(class, id) {
            Scope::Nothing
        } else {
            Scope::Class(class.clone())
        }
    }

    pub fn contains(&self, class: &str, id: u32) -> bool {
        self.known.contains(&(class.into(), id))
    }

    /// The known devices of `class`, by id.
    pub fn ids(&self, class: &str) -> Vec<u32> {
        self.known.iter().filter(|(c, _)| c == class).map(|&(_, id)| id).collect()
    }
}

enum Scope {
    Nothing,
    Class(String),
    All,
}

/// Device classes are single path components.
fn check_class(class: &str) -> Result<(), Error> {
    if class.is_empty() || class.contains('/') {
        return Err(Error::InvalidArgument);
    }
    check_path(class)
}

impl Device {
    pub fn state_path(&self) -> String {
        format!("{}/state", self.path)
    }

    pub fn backend_state_path(&self) -> String {
        format!("{}/state", self.backend)
    }

    /// Publishes our state to the backend.
    pub fn set_state<T: Transport>(
        &self,
        xs: &mut Xenstore<T>,
        state: XenbusState,
    ) -> Result<(), Error> {
        xs.write(&self.state_path(), format!("{}", state as u32).as_bytes())
    }

    /// Our state as the store has it; `Unknown` if we never wrote one.
    pub fn state<T: Transport>(&self, xs: &mut Xenstore<T>) -> Result<XenbusState, Error> {
        read_state(xs, &self.state_path())
    }

    /// The backend's state; `Unknown` if its node is gone (the device was unplugged) or not
    /// there yet, as Linux reads it.
    pub fn backend_state<T: Transport>(&self, xs: &mut Xenstore<T>) -> Result<XenbusState, Error> {
        read_state(xs, &self.backend_state_path())
    }

    /// Waits up to `timeout_ns` for the backend's state to satisfy `done`, and returns it.
    pub fn wait_for_backend<T: Transport>(
        &self,
        xs: &mut Xenstore<T>,
        timeout_ns: u64,
        mut done: impl FnMut(XenbusState) -> bool,
    ) -> Result<XenbusState, Error> {
        let path = self.backend_state_path();
        xs.wait_for(&path, timeout_ns, |xs| {
            let s = read_state(xs, &path)?;
            Ok(done(s).then_some(s))
        })
    }

    /// The handshake's middle, every frontend's: writes `keys` (names under our directory,
    /// and their values) in one transaction, says `state` (Initialised or Connected, as the
    /// protocol has it), and waits for the backend to connect. Returns the state the backend
    /// ended in: Connected, or Closing, Closed or Unknown (its node gone: unplugged), which
    /// refuse the connection.
    pub fn publish<T: Transport>(
        &self,
        xs: &mut Xenstore<T>,
        keys: &[(String, String)],
        state: XenbusState,
        timeout_ns: u64,
    ) -> Result<XenbusState, Error> {
        use XenbusState::*;
        let path = &self.path;
        xs.transaction(|tx| {
            for (key, value) in keys {
                tx.write(&format!("{path}/{key}"), value.as_bytes())?;
            }
            Ok(())
        })?;
        self.set_state(xs, state)?;
        self.wait_for_backend(xs, timeout_ns, |s| {
            matches!(s, Connected | Closing | Closed | Unknown)
        })
    }

    /// A handshake that failed after we published something: says Closing, so that the
    /// backend lets go of what it mapped, and logs the failure (`driver`: whose, for the line).
    pub fn abandon<T: Transport>(
        &self,
        xs: &mut Xenstore<T>,
        driver: &str,
        why: &dyn core::fmt::Display,
    ) {
        warn!("{driver}: {}: handshake failed: {why}", self.path);
        if let Err(e) = self.set_state(xs, XenbusState::Closing) {
            warn!("{driver}: {}: cannot set Closing: {e}", self.path);
        }
    }

    /// Closes the connection: Closing, then (once the backend follows) Closed, until the
    /// backend is Closed too or gone. Each wait gets `timeout_ns`.
    ///
    /// A backend that is Closed already skips the Closing step: telling it Closing would move
    /// it back to Closing, and if it only looks after we went on to Initialising (it reads our
    /// latest state, not each one), it stays there instead of preparing to reconnect.
    pub fn close<T: Transport>(&self, xs: &mut Xenstore<T>, timeout_ns: u64) -> Result<(), Error> {
        use XenbusState::*;
        if self.backend_state(xs)? != Closed {
            self.set_state(xs, Closing)?;
            self.wait_for_backend(xs, timeout_ns, |s| matches!(s, Closing | Closed | Unknown))?;
        }
        self.set_state(xs, Closed)?;
        self.wait_for_backend(xs, timeout_ns, |s| matches!(s, Closed | Unknown))?;
        Ok(())
    }

    /// Closes the connection and starts over: back to Initialising, until the backend is
    /// ready for a new handshake (InitWait or beyond). Returns the backend's state; the driver
    /// then sets up its rings and moves on to Initialised/Connected itself.
    pub fn reconnect<T: Transport>(
        &self,
        xs: &mut Xenstore<T>,
        timeout_ns: u64,
    ) -> Result<XenbusState, Error> {
        use XenbusState::*;
        self.close(xs, timeout_ns)?;
        self.set_state(xs, Initialising)?;
        self.wait_for_backend(xs, timeout_ns, |s| matches!(s, InitWait | Initialised | Connected))
    }
}

fn read_state<T: Transport>(xs: &mut Xenstore<T>, path: &str) -> Result<XenbusState, Error> {
    match xs.read_state(path) {
        Err(Error::Xs(XsError::NoEnt)) => Ok(XenbusState::Unknown),
        other => other,
    }
}
