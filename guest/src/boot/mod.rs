//! Boot: each entry path sets up its platform, then both continue in [`kernel_main`].

pub mod native;
pub mod pvh;
pub mod xen_pv;
pub mod xen_pvh;

use crate::cmdline::{self, Options};
use crate::{println, pvops};

/// The command line, copied out of the loader's memory (which we reuse).
struct SavedCmdline {
    bytes: [u8; 1024],
    len: usize,
}

static CMDLINE: spin::Once<SavedCmdline> = spin::Once::new();

/// Keeps the command line, up to the first NUL; only the first call counts.
pub fn save_cmdline(raw: &[u8]) {
    CMDLINE.call_once(|| {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len()).min(1024);
        let mut bytes = [0; 1024];
        bytes[..len].copy_from_slice(&raw[..len]);
        SavedCmdline { bytes, len }
    });
}

/// The command line as text (invalid UTF-8 is cut at the first bad byte).
pub fn cmdline() -> &'static str {
    let Some(saved) = CMDLINE.get() else { return "" };
    cmdline::text(&saved.bytes[..saved.len])
}

pub fn options() -> Options<'static> {
    cmdline::parse(cmdline())
}

/// What both Xen boot paths set up last, in this order, before the kernel proper: the event
/// ABI, the timer's VIRQ, the grant table, and xenstore on `store_page` and `store_port`.
///
/// # Safety
/// `store_page` is this domain's xenstore page, mapped for good and shared only with
/// xenstored; the caller's platform setup (upcalls, memory) is complete.
unsafe fn start_xen_services(options: Options<'static>, store_page: *mut u8, store_port: u32) -> ! {
    // Before the event ABI and the clock take its address.
    if let Err(e) = crate::arch::xen_common::place_vcpu_info(0) {
        boot_failed(format_args!("the boot vCPU's vcpu_info: {e}"));
    }
    crate::time::set_idle_poll(options.idle_poll);
    crate::xen::evtchn::init(options.evtchn);
    crate::time::xen_common::report_tsc_mode();
    if let Err(e) = crate::time::xen_common::init_timer() {
        boot_failed(format_args!("binding VIRQ_TIMER: {e}"));
    }
    if let Err(e) = crate::xen::gnttab::init() {
        boot_failed(format_args!("grant table: {e}"));
    }
    // SAFETY: forwarded contract.
    if let Err(e) = unsafe { crate::xen::xenstore::init(store_page, store_port) } {
        boot_failed(format_args!("xenstore event channel: {e}"));
    }
    kernel_main(options)
}

/// Says why boot cannot go on, on whatever console there is, and stops as a failure.
fn boot_failed(why: core::fmt::Arguments<'_>) -> ! {
    crate::console::emergency(format_args!("boot failed: {why}\n"));
    pvops::shutdown(pvops::Halt::Failure)
}

/// The kernel's code for the pv_ops patcher, which sits below the memory and CPU code.
fn kernel_text() -> pvops::patch::KernelText {
    /// # Safety
    /// As for `mm::paging::set_writable`.
    unsafe fn set_writable(va: u64, writable: bool) -> Result<(), &'static str> {
        use crate::mm::paging::{self, MapError};
        // SAFETY: forwarded contract.
        unsafe { paging::set_writable(va, writable) }.map_err(|e| match e {
            MapError::NoMemory(_) => "no frame for a page table",
            MapError::HugePage => "inside a huge page",
            MapError::AlreadyMapped => "already mapped",
            MapError::NotMapped => "not mapped",
            MapError::ForeignFrame(_) => "a page table names a frame not ours",
        })
    }
    pvops::patch::KernelText {
        range: crate::arch::text_range(),
        set_writable,
        serialize: crate::arch::cpu::serialize,
    }
}

/// Everything after platform setup: report, run the self-tests, shut down with their result.
pub fn kernel_main(options: Options<'static>) -> ! {
    crate::arch::stack::paint();
    crate::time::mark_boot();
    // SAFETY: platform setup is done on the one CPU we run, with interrupts (events) still
    // disabled, and this is the only call; the text is the linker's.
    unsafe { pvops::patch::apply(options.pvpatch, kernel_text()) };
    log::info!("command line: '{}'", cmdline());
    for w in options.warnings() {
        log::warn!("command line: {w}");
    }
    if options.dropped_warnings > 0 {
        log::warn!("command line: {} more problems not shown", options.dropped_warnings);
    }
    let (free, total) = crate::mm::frame_stats();
    let (heap_used, heap_free) = crate::mm::heap_stats();
    log::info!(
        "memory: {} of {} pages free, heap {} KiB ({} KiB used)",
        free,
        total,
        (heap_used + heap_free) / 1024,
        heap_used / 1024
    );
    if let Err(e) = crate::arch::stack::protect() {
        log::error!("stack: cannot unmap the guard page ({e:?}): an overflow would go unnoticed");
    }
    // Platform setup is done (handlers installed, stray event sources masked): from here
    // on the kernel runs with interrupts (events) enabled.
    pvops::irq_enable();
    match crate::smp::start_all() {
        Ok(n) if n > 1 => log::info!("smp: {n} CPUs online"),
        Ok(_) => {}
        Err((cpu, e)) => log::warn!(
            "smp: cpu {cpu} of {} not started: {e}; going on with {}",
            crate::smp::present(),
            crate::smp::count()
        ),
    }
    if pvops::is_xen() {
        // From here the toolstack may ask us to go at any time, and devices may come.
        crate::xen::control::arm();
        crate::xen::balloon::arm();
        crate::xen::devices::init();
        if let Err(e) = crate::net::start() {
            log::error!("net: {e}");
        }
    }
    let report = crate::selftest::run(&options);
    println!("{report}");
    if pvops::is_xen() {
        crate::xen::control::publish_result(&alloc::format!("{report}"));
        crate::xen::control::honour_request();
    }
    if options.bench != crate::cmdline::Selection::None {
        crate::bench::run(&options.bench);
        crate::xen::control::honour_request();
    }
    if let Some(fault) = options.fault {
        log::warn!("fault={fault:?} requested: failing on purpose");
        crate::arch::cpu::fault(fault);
    }
    let app_ok = match options.app {
        Some(app) if pvops::is_xen() => {
            let ok = crate::apps::run(app, options.dev, options.seed);
            crate::xen::control::honour_request();
            ok
        }
        Some(app) => {
            println!("app: {} needs Xen's block devices", app.name());
            false
        }
        None => true,
    };
    if options.stay && pvops::is_xen() {
        crate::xen::control::serve();
    }
    let ok = report.failed == 0 && app_ok;
    pvops::shutdown(if ok { pvops::Halt::Poweroff } else { pvops::Halt::Failure })
}
