//! Domain control (Xen only): the toolstack's `xl shutdown`, `xl reboot` and friends arrive
//! as writes to `control/shutdown`. The watch on it is armed as soon as xenstore is up, in
//! every mode, as Linux's is: a request during the tests or an app ends them cleanly and the
//! guest goes as asked. With `stay` on the command line the kernel goes on serving after its
//! tests instead of powering off at once.

use super::xenstore;
use crate::println;
use crate::pvops::{self, Halt};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use xenbus::control::{self, Feature, ShutdownRequest};
use xenbus::frontend::DeviceChange;
use xenbus::{Store, Xenstore};

const NONE: u8 = 0;
const POWEROFF: u8 = 1;
const REBOOT: u8 = 2;
const SUSPEND: u8 = 3;

/// What the last control/shutdown request asked for.
static REQUESTED: AtomicU8 = AtomicU8::new(NONE);

/// The self-test result line, once the tests ran.
static RESULT: spin::Once<alloc::string::String> = spin::Once::new();

pub fn result() -> Option<&'static str> {
    RESULT.get().map(|s| s.as_str())
}

/// Publishes the boot's result where the toolstack can read it (`xenstore-read
/// /local/domain/<id>/data/selftest`) and the status page shows it.
pub fn publish_result(result: &str) {
    RESULT.call_once(|| result.into());
    let written = xenstore::with(|xs| xs.write("data/selftest", result.as_bytes()));
    if let Some(Err(e)) = written {
        log::warn!("cannot publish the self-test result: {e}");
    }
}

/// Advertises what we honour and watches `control/shutdown`. Without it the toolstack's
/// requests go unanswered until xl gives up and destroys us: say so loudly.
pub fn arm() {
    let armed = xenstore::with(|xs| {
        control::advertise(xs, &[Feature::Poweroff, Feature::Reboot, Feature::Suspend])?;
        xs.watch(
            control::SHUTDOWN_PATH,
            "control",
            alloc::boxed::Box::new(|xs, _| match control::take_shutdown_request(xs) {
                Ok(request) => handle(request),
                Err(e) => log::error!("reading {}: {e}", control::SHUTDOWN_PATH),
            }),
        )?;
        xs.watch(control::CPU_PATH, "cpu", alloc::boxed::Box::new(|xs, _| vcpus_wanted(xs)))?;
        // Now, not when the watch's first event is served: the self-tests use the vCPUs.
        vcpus_wanted(xs);
        Ok::<(), xenbus::Error>(())
    });
    match armed {
        Some(Ok(())) => ARMED.store(true, Ordering::SeqCst),
        Some(Err(e)) => log::error!("cannot watch {}: {e}", control::SHUTDOWN_PATH),
        None => log::error!("no xenstore connection to serve the toolstack on"),
    }
}

static ARMED: AtomicBool = AtomicBool::new(false);

/// What the toolstack has asked for and not yet had, after a look at xenstore.
pub fn requested() -> Option<&'static str> {
    xenstore::service();
    match REQUESTED.load(Ordering::SeqCst) {
        POWEROFF => Some("poweroff"),
        REBOOT => Some("reboot"),
        _ => None,
    }
}

/// Suspends if the toolstack asked for it (`xl save`, `xl migrate`): for a loop that holds
/// a disk, between its requests. Returns, once the domain runs again, whether it is a new
/// domain (then the disk must [`crate::blk::resume`]; the network already did); `None` if
/// no suspend was asked for.
pub fn honour_suspend() -> Option<bool> {
    xenstore::service();
    REQUESTED
        .compare_exchange(SUSPEND, NONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
        .then(super::suspend::suspend)
}

/// Goes as the toolstack asked, if it asked; a suspend returns once the domain runs again
/// (in this domain or a new one), the request done.
pub fn honour_request() {
    if honour_suspend().is_some() {
        return;
    }
    let Some(what) = requested() else { return };
    println!("control: shutdown {what}");
    pvops::shutdown(if REQUESTED.load(Ordering::SeqCst) == REBOOT {
        Halt::Reboot
    } else {
        Halt::Poweroff
    })
}

/// Serves control/shutdown, the network if there is one and devices that come and go, until
/// the toolstack asks us to go, then goes.
pub fn serve() -> ! {
    if !ARMED.load(Ordering::SeqCst) {
        log::error!("cannot serve the toolstack without the watch on {}", control::SHUTDOWN_PATH);
        pvops::shutdown(Halt::Failure)
    }
    println!("control: ready");
    loop {
        crate::smp::apply_availability();
        let ballooning = super::balloon::service();
        crate::net::poll();
        while let Some(change) = super::devices::take_news() {
            serve_new_device(change);
        }
        honour_request();
        // A balloon on its way goes on at once; else the loop waits for news.
        let wait_ns = if ballooning { 0 } else { 1_000_000_000 };
        crate::net::wait_or(pvops::clock_ns() + wait_ns, xenstore::signalled);
    }
}

/// A device that appeared while we serve: a disk is connected once, to show what it is
/// (`blk: xvdd attached: sectors=<n> sector_size=<n> mode=ro|rw`); a vif becomes the
/// network if there is none.
fn serve_new_device(change: DeviceChange) {
    let DeviceChange::Added { class, id } = change else { return };
    match class.as_str() {
        super::devices::VBD => crate::blk::describe(id),
        super::devices::VIF if crate::net::info().is_none() => {
            if let Err(e) = crate::net::start_on(id) {
                log::error!("net: vif {id}: {e}");
            }
        }
        _ => {}
    }
}

/// `xl vcpu-set`: which of our vCPUs the toolstack wants in service, applied at once if no
/// call runs (else at the next).
fn vcpus_wanted(xs: &mut Xenstore<xenstore::Channel>) {
    for cpu in 1..crate::smp::count() {
        match control::vcpu_available(xs, cpu as u32) {
            Ok(available) => crate::smp::want_available(cpu, available),
            Err(e) => log::warn!("cpu/{cpu}/availability: {e}; vCPU {cpu} left as it is"),
        }
    }
    crate::smp::apply_availability();
}

fn handle(request: Option<ShutdownRequest>) {
    let Some(request) = request else { return };
    log::info!("toolstack asks: {request:?}");
    let next = match request {
        ShutdownRequest::Poweroff | ShutdownRequest::Halt => POWEROFF,
        ShutdownRequest::Reboot => REBOOT,
        ShutdownRequest::Suspend => SUSPEND,
        ShutdownRequest::Other(what) => {
            log::warn!("unknown control/shutdown request '{what}' ignored");
            NONE
        }
    };
    // An unknown request does not erase one still to be honoured.
    if next != NONE {
        REQUESTED.store(next, Ordering::SeqCst);
    }
}
