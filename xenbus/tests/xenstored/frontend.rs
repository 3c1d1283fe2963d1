//! Device discovery, the XenbusState handshake and domain control, with the toolstack and a
//! backend played by scripts the fake runs while the client waits.

use std::sync::Arc;
use std::sync::Mutex;

use xenbus::control::{self, Feature, ShutdownRequest, SHUTDOWN_PATH};
use xenbus::frontend::{self, Device};
use xenbus::{Error, XenbusState, XsType};

use crate::fake::{setup, Fake};

const SECOND: u64 = 1_000_000_000;

fn backend_path(id: u32) -> String {
    format!("/local/domain/0/backend/vif/1/{id}")
}

/// What the toolstack writes for a vif, minus the keys a test wants to hold back.
fn plug(fake: &mut Fake, id: u32, skip: &[&str]) {
    let fe = format!("device/vif/{id}");
    let be = backend_path(id);
    for (key, value) in [("backend", be.as_str()), ("backend-id", "0"), ("state", "1")] {
        if !skip.contains(&key) {
            fake.set(&format!("{fe}/{key}"), value.as_bytes());
        }
    }
    fake.set(&format!("{be}/state"), b"1");
}

fn state_of(fake: &Fake, path: &str) -> Option<u32> {
    std::str::from_utf8(fake.get(path)?).ok()?.parse().ok()
}

/// A backend that follows the frontend like Linux's netback, one step per idle round.
fn netback(fake: &mut Fake) -> bool {
    let (fe, be) = ("device/vif/0/state".to_string(), format!("{}/state", backend_path(0)));
    let (Some(f), Some(b)) = (state_of(fake, &fe), state_of(fake, &be)) else { return false };
    let next = match (f, b) {
        (_, 1) => 2,
        (3 | 4, 2) => 4,
        (5, 1..=4) => 5,
        (6, 5) => 6,
        (1, 6) => 2,
        _ => return false,
    };
    fake.set(&be, format!("{next}").as_bytes());
    true
}

#[test]
fn discovery_waits_for_the_toolstack() {
    let (mut xs, fake) = setup();
    plug(&mut fake.lock().unwrap(), 0, &[]);
    plug(&mut fake.lock().unwrap(), 1, &["backend-id"]);
    fake.lock().unwrap().set("device/vif/junk/backend", b"/x");
    // The toolstack writes vif 1's backend-id only once we are waiting for it.
    fake.lock().unwrap().on_idle = Some(Box::new(|f| {
        let key = "device/vif/1/backend-id";
        f.get(key).is_none() && {
            f.set(key, b"0");
            true
        }
    }));
    assert_eq!(frontend::device_ids(&mut xs, "vif").unwrap(), [0, 1]);
    let devices = frontend::discover(&mut xs, "vif", SECOND).unwrap();
    assert_eq!(
        devices[1],
        Device {
            class: "vif".into(),
            id: 1,
            path: "device/vif/1".into(),
            backend: backend_path(1),
            backend_id: 0,
        }
    );
    assert_eq!(devices.len(), 2);
    assert_eq!(frontend::device_ids(&mut xs, "vbd").unwrap(), []);
    assert_eq!(frontend::device_ids(&mut xs, "v/bd"), Err(Error::InvalidArgument));
    // Every wait removed its watch.
    let f = fake.lock().unwrap();
    assert_eq!(f.count(XsType::Watch), f.count(XsType::Unwatch));
}

#[test]
fn keys_never_written_time_out() {
    let (mut xs, fake) = setup();
    plug(&mut fake.lock().unwrap(), 0, &["backend"]);
    assert_eq!(frontend::probe(&mut xs, "vif", 0, SECOND / 100), Err(Error::Timeout));
    assert!(fake.lock().unwrap().now >= SECOND / 100);
    assert_eq!(fake.lock().unwrap().count(XsType::Unwatch), 1);
}

#[test]
fn backend_keys_are_validated() {
    let (mut xs, fake) = setup();
    for (key, value) in [
        ("backend", &b"backend/vif/1/0"[..]),
        ("backend", b"/local/\xff"),
        ("backend-id", b"zero"),
        ("backend-id", b"65536"),
    ] {
        plug(&mut fake.lock().unwrap(), 0, &[]);
        fake.lock().unwrap().set(&format!("device/vif/0/{key}"), value);
        assert_eq!(frontend::probe(&mut xs, "vif", 0, SECOND), Err(Error::BadValue), "{key}");
    }
}

#[test]
fn handshake_close_and_reconnect() {
    let (mut xs, fake) = setup();
    plug(&mut fake.lock().unwrap(), 0, &[]);
    fake.lock().unwrap().on_idle = Some(Box::new(netback));
    let dev = frontend::probe(&mut xs, "vif", 0, SECOND).unwrap();
    use XenbusState::*;

    assert_eq!(dev.wait_for_backend(&mut xs, SECOND, |s| s == InitWait), Ok(InitWait));
    dev.set_state(&mut xs, Connected).unwrap();
    assert_eq!(dev.wait_for_backend(&mut xs, SECOND, |s| s == Connected), Ok(Connected));
    assert_eq!(dev.state(&mut xs), Ok(Connected));

    dev.close(&mut xs, SECOND).unwrap();
    assert_eq!((dev.state(&mut xs), dev.backend_state(&mut xs)), (Ok(Closed), Ok(Closed)));

    assert_eq!(dev.reconnect(&mut xs, SECOND), Ok(InitWait));
    assert_eq!(dev.state(&mut xs), Ok(Initialising));
    dev.set_state(&mut xs, Connected).unwrap();
    assert_eq!(dev.wait_for_backend(&mut xs, SECOND, |s| s == Connected), Ok(Connected));
}

/// A backend the toolstack is taking away (Closing with `online` 0, as `xl block-detach`
/// leaves it) is returned as it is, for the driver to refuse; with `online` 1 a closed
/// backend is asked for a new handshake.
#[test]
fn attach_leaves_a_device_being_removed_alone() {
    use XenbusState::*;
    let (mut xs, fake) = setup();
    plug(&mut fake.lock().unwrap(), 0, &[]);
    fake.lock().unwrap().set(&format!("{}/state", backend_path(0)), b"5");
    fake.lock().unwrap().set(&format!("{}/online", backend_path(0)), b"0");
    fake.lock().unwrap().on_idle = Some(Box::new(netback));
    let (_, state) = frontend::attach(&mut xs, "vif", 0, SECOND).unwrap();
    assert_eq!(state, Closing);
    assert_eq!(fake.lock().unwrap().get("device/vif/0/state"), Some(&b"1"[..]), "not touched");

    fake.lock().unwrap().set(&format!("{}/online", backend_path(0)), b"1");
    let (_, state) = frontend::attach(&mut xs, "vif", 0, SECOND).unwrap();
    assert_eq!(state, InitWait);
}

#[test]
fn a_stuck_or_vanished_backend() {
    let (mut xs, fake) = setup();
    plug(&mut fake.lock().unwrap(), 0, &[]);
    let dev = frontend::probe(&mut xs, "vif", 0, SECOND).unwrap();
    let r = dev.wait_for_backend(&mut xs, SECOND / 10, |s| s == XenbusState::Connected);
    assert_eq!(r, Err(Error::Timeout));

    // Unplugged: the backend's directory goes away, which counts as closed.
    fake.lock().unwrap().on_idle = Some(Box::new(|f| {
        let gone = f.get(&format!("{}/state", backend_path(0))).is_none();
        !gone && {
            f.remove(&backend_path(0));
            true
        }
    }));
    dev.close(&mut xs, SECOND).unwrap();
    assert_eq!(dev.backend_state(&mut xs), Ok(XenbusState::Unknown));

    fake.lock().unwrap().set(&dev.backend_state_path(), b"connected");
    assert_eq!(dev.backend_state(&mut xs), Err(Error::BadValue));
}

#[test]
fn shutdown_requests_are_taken_once() {
    let (mut xs, fake) = setup();
    assert_eq!(control::take_shutdown_request(&mut xs), Ok(None));
    fake.lock().unwrap().set(SHUTDOWN_PATH, b"reboot");
    assert_eq!(control::take_shutdown_request(&mut xs), Ok(Some(ShutdownRequest::Reboot)));
    assert_eq!(fake.lock().unwrap().get(SHUTDOWN_PATH), Some(&b""[..]));
    assert_eq!(control::take_shutdown_request(&mut xs), Ok(None));

    // The toolstack wrote again while our transaction ran: xenstored says EAGAIN, we retry.
    fake.lock().unwrap().set(SHUTDOWN_PATH, b"poweroff");
    fake.lock().unwrap().conflicts = 1;
    assert_eq!(control::take_shutdown_request(&mut xs), Ok(Some(ShutdownRequest::Poweroff)));

    fake.lock().unwrap().set(SHUTDOWN_PATH, b"\xff");
    assert_eq!(control::take_shutdown_request(&mut xs), Err(Error::BadValue));
}

#[test]
fn a_shutdown_watch_hands_requests_to_the_guest() {
    let (mut xs, fake) = setup();
    control::advertise(&mut xs, &[Feature::Poweroff, Feature::Reboot, Feature::Suspend]).unwrap();
    assert_eq!(fake.lock().unwrap().get("control/feature-reboot"), Some(&b"1"[..]));
    assert_eq!(fake.lock().unwrap().get("control/feature-sysrq"), None);

    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    let handler = Box::new(move |xs: &mut crate::fake::Client, _: &xenbus::WatchEvent| {
        if let Some(req) = control::take_shutdown_request(xs).unwrap() {
            log.lock().unwrap().push(req);
        }
    });
    xs.watch(SHUTDOWN_PATH, "shutdown", handler).unwrap();
    xs.dispatch_watches();
    assert!(got.lock().unwrap().is_empty());
    fake.lock().unwrap().set(SHUTDOWN_PATH, b"suspend");
    xs.wait(u64::MAX).unwrap();
    xs.poll().unwrap();
    // The handler's own write of "" fires the watch again, harmlessly.
    assert_eq!(xs.dispatch_watches(), 2);
    assert_eq!(*got.lock().unwrap(), [ShutdownRequest::Suspend]);
}

/// Devices that appear and go while the guest runs (a device model writing its nodes late,
/// `xl block-attach`, `xl block-detach`) are seen from the watch on `device`; the
/// handshake's own writes below a known device cost no request.
#[test]
fn device_list_follows_the_toolstack() {
    use frontend::{DeviceChange, DeviceList};
    let (mut xs, fake) = setup();
    plug(&mut fake.lock().unwrap(), 0, &[]);
    fake.lock().unwrap().set("device/vbd/51728/backend", b"/local/domain/0/backend/vbd/1/51728");
    let mut list = DeviceList::new(&["vbd", "vif"]);
    let added = |class: &str, id| DeviceChange::Added { class: class.into(), id };
    let removed = |class: &str, id| DeviceChange::Removed { class: class.into(), id };
    assert_eq!(list.rescan(&mut xs).unwrap(), [added("vbd", 51728), added("vif", 0)]);
    assert_eq!(list.rescan(&mut xs).unwrap(), []);

    let directories = |fake: &Arc<Mutex<Fake>>| fake.lock().unwrap().count(XsType::Directory);
    let before = directories(&fake);
    for path in ["device/vif/0/state", "device/vbd/51728/ring-ref", "device/vkbd/0", "data/x"] {
        assert_eq!(list.on_event(&mut xs, path).unwrap(), [], "{path}");
    }
    let absolute = "/local/domain/7/device/vif/0/tx-ring-ref";
    assert_eq!(list.on_event(&mut xs, absolute).unwrap(), []);
    fake.lock().unwrap().set("device/vif/junk/backend", b"/x");
    assert_eq!(list.on_event(&mut xs, "device/vif/junk/backend").unwrap(), []);
    assert_eq!(
        directories(&fake),
        before,
        "events below known devices, or no device, relist nothing"
    );

    // A key of a device not yet known relists its class, wherever the event points.
    fake.lock().unwrap().set("device/vbd/51760/backend", b"/local/domain/0/backend/qdisk/1/51760");
    assert_eq!(list.on_event(&mut xs, "device/vbd/51760/backend").unwrap(), [added("vbd", 51760)]);
    assert!(list.contains("vbd", 51760));
    fake.lock().unwrap().remove("device/vbd/51728");
    assert_eq!(list.on_event(&mut xs, "device/vbd/51728").unwrap(), [removed("vbd", 51728)]);
    assert_eq!(list.ids("vbd"), [51760]);
    fake.lock().unwrap().remove("device/vif");
    assert_eq!(list.on_event(&mut xs, "device").unwrap(), [removed("vif", 0)]);
    assert_eq!(list.ids("vif"), []);
}

/// However many entries xenstored lists, the list keeps a bounded number.
#[test]
fn device_list_is_bounded() {
    let (mut xs, fake) = setup();
    for id in 0..300 {
        fake.lock().unwrap().set(&format!("device/vif/{id}/backend-id"), b"0");
    }
    let mut list = frontend::DeviceList::new(&["vif"]);
    assert_eq!(list.rescan(&mut xs).unwrap().len(), frontend::MAX_DEVICES_PER_CLASS);
}
