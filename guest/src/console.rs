//! The console: the backends pv_ops writes through, `print!`/`println!`, the `log` logger,
//! and the panic handler.

use crate::pvops;
use crate::sync::{IrqMutex, IrqMutexGuard};
use console::{Doorbell, Stalled, Uart16550, XenRing};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use events::Port;

static UART: IrqMutex<Option<Uart16550>> = IrqMutex::new(None);
static XEN: IrqMutex<Option<XenConsole>> = IrqMutex::new(None);
/// Bytes the console could not deliver (backend stalled or broken).
static LOST: AtomicU64 = AtomicU64::new(0);
/// Set once the kernel is dying: the console locks are then taken by force.
static DYING: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &'static IrqMutex<T>) -> IrqMutexGuard<'static, T> {
    if DYING.load(Ordering::Relaxed) {
        m.lock_for_crash()
    } else {
        m.lock()
    }
}

pub fn lost_bytes() -> u64 {
    LOST.load(Ordering::Relaxed)
}

enum XenConsole {
    /// A domU's PV console page.
    Ring { ring: XenRing, door: PortDoorbell },
    /// dom0 writes through the hypervisor.
    ConsoleIo,
    /// A PVH domU before its console page is mapped: Xen's debug port, which shows in
    /// Xen's own log (`xl dmesg`), so that an early boot failure is still seen somewhere.
    DebugPort,
}

/// Signals xenconsoled through the console event channel and sleeps in SCHEDOP_poll on it.
struct PortDoorbell {
    port: Port,
    last_progress_ns: u64,
    /// The backend stalled once: don't wait for it again until it makes progress.
    stalled: bool,
}

/// Xen's debug console port for HVM and PVH guests.
const XEN_DEBUG_PORT: u16 = 0xe9;

/// How long a full ring may stay full before output is dropped.
const STALL_NS: u64 = 5_000_000_000;
/// One poll sleeps at most this long, so a notification lost to a race costs little.
const POLL_NS: u64 = 10_000_000;

impl Doorbell for PortDoorbell {
    fn notify(&mut self) {
        self.last_progress_ns = pvops::clock_ns();
        self.stalled = false;
        // A failed send leaves the bytes in the ring for the backend's next look; there is
        // no console left to report the failure on.
        let _ = hypercall::ops::evtchn_send(self.port.0);
    }

    fn wait(&mut self) -> Result<(), Stalled> {
        let now = pvops::clock_ns();
        if self.stalled || now.saturating_sub(self.last_progress_ns) > STALL_NS {
            self.stalled = true;
            return Err(Stalled);
        }
        crate::xen::evtchn::clear_pending(self.port);
        let deadline = crate::time::xen_common::system_time_ns() + POLL_NS;
        let _ = hypercall::ops::sched_poll(&[self.port.0], deadline);
        Ok(())
    }
}

pub fn init_native() {
    // SAFETY: natively we own the machine's COM1 and run in ring 0.
    *UART.lock() = Some(unsafe { Uart16550::init(console::uart16550::COM1) });
}

/// # Safety
/// `page` is this domU's console page, mapped for good, and `port` its event channel.
pub unsafe fn init_xen_ring(page: *mut u8, port: u32) {
    // SAFETY: forwarded contract.
    let ring = unsafe { XenRing::new(page) };
    let door = PortDoorbell { port: Port(port), last_progress_ns: 0, stalled: false };
    *XEN.lock() = Some(XenConsole::Ring { ring, door });
}

/// After a resume in a new domain: the console page stays where it was (the toolstack keeps
/// its pfn), but its event channel is a new one.
pub fn resume_xen_ring(port: u32) {
    if let Some(XenConsole::Ring { door, .. }) = lock(&XEN).as_mut() {
        *door =
            PortDoorbell { port: Port(port), last_progress_ns: pvops::clock_ns(), stalled: false };
    }
}

pub fn init_xen_dom0() {
    *XEN.lock() = Some(XenConsole::ConsoleIo);
}

pub fn init_xen_debug_port() {
    *XEN.lock() = Some(XenConsole::DebugPort);
}

/// The native console op.
///
/// # Safety
/// `bytes` points to `len` readable bytes.
pub unsafe extern "C" fn native_write(bytes: *const u8, len: usize) -> usize {
    // SAFETY: the pv_ops call site passes a valid slice.
    let bytes = unsafe { core::slice::from_raw_parts(bytes, len) };
    match lock(&UART).as_mut() {
        Some(uart) => {
            uart.write(bytes);
            0
        }
        None => len,
    }
}

/// The Xen console op.
///
/// # Safety
/// `bytes` points to `len` readable bytes.
pub unsafe extern "C" fn xen_write(bytes: *const u8, len: usize) -> usize {
    // SAFETY: the pv_ops call site passes a valid slice.
    let bytes = unsafe { core::slice::from_raw_parts(bytes, len) };
    let lost = match lock(&XEN).as_mut() {
        Some(XenConsole::Ring { ring, door }) => match ring.write_all(bytes, door) {
            Ok(()) => 0,
            Err(console::xen_ring::Error::Stalled { written }) => len - written,
            Err(console::xen_ring::Error::Ring(_)) => len,
        },
        Some(XenConsole::ConsoleIo) => match hypercall::ops::console_io_write(bytes) {
            Ok(()) => 0,
            Err(_) => len,
        },
        Some(XenConsole::DebugPort) => {
            for &b in bytes {
                // SAFETY: only set up under PVH (ring 0), where port 0xe9 is Xen's debug
                // console.
                unsafe { crate::arch::native::outb(XEN_DEBUG_PORT, b) };
            }
            0
        }
        None => len,
    };
    LOST.fetch_add(lost as u64, Ordering::Relaxed);
    lost
}

/// Waits, up to `timeout_ns`, until xenconsoled has taken everything from the console ring:
/// a domain that shuts down (or crashes) with output still in the ring loses it, and its
/// last lines are the ones that say why.
pub fn drain(timeout_ns: u64) {
    let deadline = pvops::clock_ns().saturating_add(timeout_ns);
    let mut guard = lock(&XEN);
    let Some(XenConsole::Ring { ring, door }) = guard.as_mut() else { return };
    while ring.unconsumed().is_ok_and(|n| n > 0) && pvops::clock_ns() < deadline {
        door.notify();
        if door.wait().is_err() {
            return;
        }
    }
}

/// Collects formatted output into whole lines (or 256-byte pieces), so that a line costs
/// one console write (one notification under Xen) rather than one per fragment.
struct LineWriter {
    buf: [u8; 256],
    len: usize,
}

impl LineWriter {
    fn flush(&mut self) {
        if self.len > 0 {
            pvops::console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter { buf: [0; 256], len: 0 };
    let _ = w.write_fmt(args);
    w.flush();
}

/// Last words: prints even if the code that died held the console.
pub fn emergency(args: fmt::Arguments<'_>) {
    DYING.store(true, Ordering::Relaxed);
    print(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::print(format_args!("{}\n", format_args!($($arg)*))));
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = pvops::clock_ns();
        print(format_args!(
            "[{:5}.{:06}] {:<5} {}: {}\n",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1000,
            record.level(),
            record.target(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logger(level: log::LevelFilter) {
    // A second call (there is none) would keep the first logger: nothing to report.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if PANICKING.swap(true, Ordering::Relaxed) {
        // Panicked while reporting a panic: stop without another word.
        pvops::shutdown(pvops::Halt::Failure);
    }
    emergency(format_args!("\npanic: {info}\n"));
    pvops::shutdown(pvops::Halt::Failure)
}
