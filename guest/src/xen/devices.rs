//! The disks and network interfaces the toolstack gives us, found as Linux's xenbus probe
//! finds them: one listing when xenstore comes up, then a watch on `device` that sees every
//! frontend directory appear (late from a device model such as QEMU's qdisk, or by `xl
//! block-attach` / `xl network-attach`) and go. Changes after boot are printed (`device:
//! vbd/51760 added`) and queued for whoever serves them (`stay`'s control loop).

use super::xenstore;
use crate::{println, pvops, time};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use xenbus::frontend::{DeviceChange, DeviceList};

pub const VBD: &str = "vbd";
pub const VIF: &str = "vif";

static LIST: spin::Mutex<Option<DeviceList>> = spin::Mutex::new(None);
/// Changes since boot not yet taken; bounded, the oldest dropped first.
static NEWS: spin::Mutex<VecDeque<DeviceChange>> = spin::Mutex::new(VecDeque::new());
const MAX_NEWS: usize = 64;
const WATCH_TOKEN: &str = "devices";

/// Lists our devices and watches for more. A failure leaves the boot's listing (or none)
/// and says so: devices added later would go unseen.
pub fn init() {
    let started = xenstore::with(|xs| {
        let mut list = DeviceList::new(&[VBD, VIF]);
        let found = list.rescan(xs);
        *LIST.lock() = Some(list);
        let boot: Vec<_> = found?.into_iter().map(|c| describe(&c).1).collect();
        log::info!(
            "devices at boot: {}",
            if boot.is_empty() { "none".into() } else { boot.join(" ") }
        );
        xs.watch(
            "device",
            WATCH_TOKEN,
            alloc::boxed::Box::new(|xs, event| {
                let changes = match LIST.lock().as_mut() {
                    Some(list) => list.on_event(xs, &event.path),
                    None => return,
                };
                match changes {
                    Ok(changes) => changes.into_iter().for_each(announce),
                    Err(e) => log::warn!("devices: relisting after {}: {e}", event.path),
                }
            }),
        )
    });
    if let Some(Err(e)) = started {
        log::error!("devices: cannot watch device/ ({e}): devices added later go unseen");
    }
}

fn describe(change: &DeviceChange) -> (&'static str, alloc::string::String) {
    match change {
        DeviceChange::Added { class, id } => ("added", alloc::format!("{class}/{id}")),
        DeviceChange::Removed { class, id } => ("removed", alloc::format!("{class}/{id}")),
    }
}

fn announce(change: DeviceChange) {
    let (what, device) = describe(&change);
    println!("device: {device} {what}");
    let mut news = NEWS.lock();
    if news.len() == MAX_NEWS {
        news.pop_front();
    }
    news.push_back(change);
}

/// The oldest change not yet taken.
pub fn take_news() -> Option<DeviceChange> {
    xenstore::service();
    NEWS.lock().pop_front()
}

/// The devices of `class` the toolstack has given us now, by id.
pub fn ids(class: &str) -> Vec<u32> {
    xenstore::service();
    LIST.lock().as_ref().map(|l| l.ids(class)).unwrap_or_default()
}

/// Whether device `class`/`id` is there, waiting up to `timeout_ns` for it to appear: the
/// toolstack's device model may write its nodes only after we started. A request from the
/// toolstack to go ends the wait.
pub fn wait_for(class: &str, id: u32, timeout_ns: u64) -> bool {
    let present = || LIST.lock().as_ref().is_some_and(|l| l.contains(class, id));
    let deadline = pvops::clock_ns().saturating_add(timeout_ns);
    loop {
        xenstore::service();
        if present() {
            return true;
        }
        if pvops::clock_ns() >= deadline || super::control::requested().is_some() {
            return false;
        }
        time::wait_until(xenstore::signalled, deadline);
    }
}
