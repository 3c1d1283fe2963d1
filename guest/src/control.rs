//! Domain control (Xen only): the toolstack's `xl shutdown`, `xl reboot` and friends arrive
//! as writes to `control/shutdown`. With `stay` on the command line the kernel serves them
//! after its tests instead of powering off at once.

use crate::pvops::{self, Halt};
use crate::{println, xenstore};
use core::sync::atomic::{AtomicU8, Ordering};
use xenbus::control::{self, Feature, ShutdownRequest};
use xenbus::Store;

const NONE: u8 = 0;
const POWEROFF: u8 = 1;
const REBOOT: u8 = 2;

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

/// Serves control/shutdown, and the network if there is one, until the toolstack asks us
/// to go, then goes.
pub fn serve() -> ! {
    let armed = xenstore::with(|xs| {
        control::advertise(xs, &[Feature::Poweroff, Feature::Reboot])?;
        xs.watch(
            control::SHUTDOWN_PATH,
            "control",
            alloc::boxed::Box::new(|xs, _| match control::take_shutdown_request(xs) {
                Ok(request) => handle(request),
                Err(e) => log::error!("reading {}: {e}", control::SHUTDOWN_PATH),
            }),
        )
    });
    match armed {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            log::error!("cannot watch {}: {e}", control::SHUTDOWN_PATH);
            pvops::shutdown(Halt::Failure)
        }
        None => {
            log::error!("no xenstore connection to serve the toolstack on");
            pvops::shutdown(Halt::Failure)
        }
    }
    println!("control: ready");
    loop {
        xenstore::service();
        crate::net::poll();
        match REQUESTED.load(Ordering::SeqCst) {
            POWEROFF => {
                println!("control: shutdown poweroff");
                pvops::shutdown(Halt::Poweroff)
            }
            REBOOT => {
                println!("control: shutdown reboot");
                pvops::shutdown(Halt::Reboot)
            }
            _ => {}
        }
        crate::net::wait_or(pvops::clock_ns() + 1_000_000_000, xenstore::signalled);
    }
}

fn handle(request: Option<ShutdownRequest>) {
    let Some(request) = request else { return };
    log::info!("toolstack asks: {request:?}");
    let next = match request {
        ShutdownRequest::Poweroff | ShutdownRequest::Halt => POWEROFF,
        ShutdownRequest::Reboot => REBOOT,
        ShutdownRequest::Suspend => {
            log::warn!("suspend is not supported: request acknowledged and ignored");
            NONE
        }
        ShutdownRequest::Other(what) => {
            log::warn!("unknown control/shutdown request '{what}' ignored");
            NONE
        }
    };
    REQUESTED.store(next, Ordering::SeqCst);
}
