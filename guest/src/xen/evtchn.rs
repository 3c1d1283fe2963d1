//! Event channels in this kernel (Xen only): the ABI in use (FIFO when Xen offers it, else
//! 2-level), the handler registry, and the upcall's demultiplexer. Natively there are no
//! event channels and nothing here is called.

use crate::arch::xen_common;
use crate::cmdline::EvtchnAbi;
use crate::smp::MAX_CPUS;
use crate::sync::IrqMutex;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use events::fifo::{self, EventArrayPage};
use events::{
    EventAbi, Fifo, Handler, HandlerError, Handlers, Port, PortOwners, TwoLevel, Unmask, VcpuQueues,
};
use hypercall::{abi, Errno};

/// Ports the registry covers: the 2-level limit. FIFO could name more; we bind far fewer.
const PORTS: usize = events::two_level::NR_PORTS;

enum Abi {
    TwoLevel(TwoLevel<'static>),
    /// Boxed: the page table of a FIFO view is a kilobyte, the 2-level view a few words.
    Fifo(Box<Fifo<'static>>),
}

impl Abi {
    fn get(&self) -> &dyn EventAbi {
        match self {
            Abi::TwoLevel(t) => t,
            Abi::Fifo(f) => &**f,
        }
    }
}

/// Chosen once at boot.
static ABI: spin::Once<Abi> = spin::Once::new();
/// What serves before the choice (the console polls its port from the first log line).
static BOOT_VIEW: spin::Once<TwoLevel<'static>> = spin::Once::new();
static HANDLERS: IrqMutex<Handlers<PORTS>> = IrqMutex::new(Handlers::new());
/// Serializes growing the FIFO event array (the hypercall and registering the page).
static FIFO_GROW: IrqMutex<()> = IrqMutex::new(());
/// The pages FIFO shares with Xen, by pfn: the control block first, then the event array
/// pages in Xen's order. A resume in a new domain registers the same pages again (their
/// machine frames may have changed).
static FIFO_PAGES: IrqMutex<Vec<u64>> = IrqMutex::new(Vec::new());
/// The other vCPUs' FIFO control blocks, by vCPU and pfn (see [`init_vcpu`]).
static VCPU_CONTROL: IrqMutex<Vec<(u32, u64)>> = IrqMutex::new(Vec::new());
/// Which vCPU each port is bound to (see [`bind_to_vcpu`]).
static OWNERS: PortOwners = PortOwners::new();
/// How each vCPU other than the boot one walks the events bound to it (see [`init_vcpu`]).
static VCPU_VIEW: [spin::Once<VcpuView>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];

enum VcpuView {
    TwoLevel(TwoLevel<'static>),
    Fifo(VcpuQueues<'static>),
}

/// Counts resumes in a new domain: a port bound in an earlier epoch no longer exists, and
/// its number may since name another one of ours, so its owner must not close it.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The current port epoch (see [`EPOCH`]).
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

#[derive(Debug)]
pub enum Error {
    Xen(Errno),
    Registry(HandlerError),
    BadPort(Port),
    NoMemory,
    /// The vCPU has no event state of ours (it never started).
    NoVcpu(usize),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Xen(e) => write!(f, "hypercall failed: {e}"),
            Error::Registry(e) => write!(f, "{e}"),
            Error::BadPort(p) => write!(f, "{p} is beyond the event ABI's ports"),
            Error::NoMemory => write!(f, "no memory for event array pages"),
            Error::NoVcpu(v) => write!(f, "vCPU {v} takes no events"),
        }
    }
}

fn abi() -> &'static dyn EventAbi {
    match ABI.get() {
        Some(abi) => abi.get(),
        None => BOOT_VIEW.call_once(xen_common::two_level),
    }
}

pub fn abi_name() -> &'static str {
    match ABI.get() {
        _ if !crate::pvops::is_xen() => "none",
        Some(Abi::Fifo(_)) => "fifo",
        _ => "2-level",
    }
}

/// A zeroed page of ours, kept for good, for Xen to share with us (its frame as Xen names
/// it and our address); recorded in [`FIFO_PAGES`].
fn shared_page() -> Result<(u64, NonNull<u8>), Error> {
    let pfn = crate::mm::alloc_zeroed_frames(1).map_err(|_| Error::NoMemory)?;
    FIFO_PAGES.lock().push(pfn);
    Ok(page_of(pfn))
}

fn page_of(pfn: u64) -> (u64, NonNull<u8>) {
    let va = crate::arch::pfn_to_virt(pfn) as *mut u8;
    // SAFETY: the direct map never maps address 0.
    (crate::pvops::pfn_to_frame(pfn), unsafe { NonNull::new_unchecked(va) })
}

/// Chooses the event ABI: FIFO if asked or offered, with 2-level as the fallback.
pub fn init(choice: EvtchnAbi) {
    // Ports start out unmasked under 2-level: until a driver binds a handler to one, its
    // events (the console backend's notifications, for one) must not raise upcalls.
    let two_level = xen_common::two_level();
    for port in 0..PORTS as u32 {
        let _ = two_level.mask(Port(port));
    }
    if choice != EvtchnAbi::TwoLevel {
        match init_fifo() {
            Ok(fifo) => {
                ABI.call_once(|| Abi::Fifo(Box::new(fifo)));
                log::info!("event channels: FIFO");
                return;
            }
            Err(e) => log::warn!("event channels: FIFO unavailable ({e}), using 2-level"),
        }
    }
    ABI.call_once(|| Abi::TwoLevel(two_level.for_vcpu(&OWNERS, 0)));
    log::info!("event channels: 2-level");
}

fn init_fifo() -> Result<Fifo<'static>, Error> {
    let (control_mfn, control) = shared_page()?;
    hypercall::ops::evtchn_init_control(control_mfn, 0, 0).map_err(Error::Xen)?;
    // SAFETY: the control block is our page, zeroed, registered with Xen for vCPU 0 and
    // kept for good; vcpu_info 0 lives in shared_info, mapped for good. Only the FIFO code
    // touches either through atomics from now on.
    let fifo =
        unsafe { Fifo::new(control.cast(), NonNull::new_unchecked(xen_common::vcpu().as_ptr())) };
    // Page 0 now, so the ports already bound (console, timer) are covered at once.
    add_array_page(&fifo)?;
    Ok(fifo)
}

/// Gives Xen one more event array page and registers it with `fifo`.
fn add_array_page(fifo: &Fifo<'static>) -> Result<(), Error> {
    let (mfn, page) = shared_page()?;
    register_array_page(fifo, mfn, page)
}

fn register_array_page(fifo: &Fifo<'static>, mfn: u64, page: NonNull<u8>) -> Result<(), Error> {
    let page = page.cast::<EventArrayPage>();
    // SAFETY: our page, not shared with Xen yet (or, after a resume, any longer): masking
    // its ports first keeps Xen from queueing any of them before we know the page.
    fifo::init_array_page(unsafe { &mut *page.as_ptr() });
    hypercall::ops::evtchn_expand_array(mfn).map_err(Error::Xen)?;
    // SAFETY: Xen accepted exactly this page in the expand_array above; it is ours for
    // good; callers hold FIFO_GROW (or are the one-CPU boot), so registrations don't overlap.
    unsafe { fifo.add_array_page(page) }.map_err(|_| Error::NoMemory)
}

/// Readies vCPU `vcpu` (not the boot one) to take the events bound to it, before it
/// starts: a view of its own to walk them, and under FIFO a control block of its own
/// (without one Xen drops every event of a port bound to it, masked or not, so a vCPU
/// polling its kick port would never see a kick either). Nothing to do if it has them.
pub fn init_vcpu(vcpu: u32) -> Result<(), Error> {
    let cpu = vcpu as usize;
    if cpu == 0 || cpu >= MAX_CPUS || VCPU_VIEW[cpu].is_completed() {
        return Ok(());
    }
    // SAFETY: the vCPU's vcpu_info was placed before it starts and stays where it is; this
    // kernel reaches its event fields only atomically.
    let vcpu_info = unsafe { NonNull::new_unchecked(crate::smp::vcpu_info_of(cpu) as *mut _) };
    let Some(Abi::Fifo(array)) = ABI.get() else {
        // SAFETY: shared_info is mapped for good, its event fields reached only atomically.
        let view = unsafe {
            TwoLevel::new(NonNull::new_unchecked(xen_common::shared_info_va() as *mut _), vcpu_info)
        };
        VCPU_VIEW[cpu].call_once(|| VcpuView::TwoLevel(view.for_vcpu(&OWNERS, vcpu as u8)));
        return Ok(());
    };
    let mut blocks = VCPU_CONTROL.lock();
    let pfn = crate::mm::alloc_zeroed_frames(1).map_err(|_| Error::NoMemory)?;
    let (mfn, control) = page_of(pfn);
    hypercall::ops::evtchn_init_control(mfn, 0, vcpu).map_err(Error::Xen)?;
    blocks.push((vcpu, pfn));
    // SAFETY: the control block is our page, zeroed, registered with Xen for this vCPU and
    // kept for good; only the FIFO code touches it, and this vCPU's event fields, through
    // atomics from now on. The view is this vCPU's only one.
    let queues = unsafe { array.other_vcpu(control.cast(), vcpu_info) };
    VCPU_VIEW[cpu].call_once(|| VcpuView::Fifo(queues));
    Ok(())
}

/// A new port for events to vCPU `vcpu` from our own, to be polled and never delivered (a
/// vCPU's kick port): covered by the ABI, masked, not pending.
pub fn bind_polled_ipi(vcpu: u32) -> Result<Port, Error> {
    let port = Port(hypercall::ops::evtchn_bind_ipi(vcpu).map_err(Error::Xen)?);
    if let Err(e) = cover(port).and_then(|()| mask(port)) {
        let _ = hypercall::ops::evtchn_close(port.0);
        return Err(e);
    }
    clear_pending(port);
    Ok(port)
}

/// Makes sure the ABI can name `port` (FIFO: enough event array pages).
fn cover(port: Port) -> Result<(), Error> {
    let Some(Abi::Fifo(fifo)) = ABI.get() else { return Ok(()) };
    let _serial = FIFO_GROW.lock();
    while !fifo.covers(port) {
        add_array_page(fifo)?;
    }
    Ok(())
}

/// Runs the handlers of every pending, unmasked port bound to the calling vCPU. Called by
/// the upcall with events masked.
pub fn dispatch_pending() {
    let mut deliver = |port| {
        // Copied out so that the handler runs without the registry locked.
        let handler = HANDLERS.lock().get(port);
        match handler {
            Some((handler, ctx)) => handler(port, ctx),
            // Another domain may bind a port in our table that we never asked for (a
            // privileged one can allocate it) and notify it without end: masked, it costs
            // us nothing more.
            None => {
                let masked = if mask(port).is_ok() { "masked" } else { "cannot mask it" };
                log::error!("event on {port}, which has no handler: {masked}");
            }
        }
    };
    let report = match crate::smp::current() {
        0 => abi().demux(&mut deliver),
        cpu => match VCPU_VIEW.get(cpu).and_then(spin::Once::get) {
            Some(VcpuView::TwoLevel(view)) => view.demux(deliver),
            Some(VcpuView::Fifo(queues)) => queues.demux(deliver),
            // Nothing can be bound to it.
            None => return,
        },
    };
    if !report.is_clean() {
        log::error!("event channel memory looks corrupted: {report:?}");
    }
}

/// Whether `vcpu` can have ports bound to it: the boot vCPU, or one [`init_vcpu`] readied.
fn takes_events(vcpu: usize) -> Result<(), Error> {
    if vcpu == 0 || VCPU_VIEW.get(vcpu).is_some_and(spin::Once::is_completed) {
        Ok(())
    } else {
        Err(Error::NoVcpu(vcpu))
    }
}

/// Has `port`'s events delivered on vCPU `vcpu` from now on (`EVTCHNOP_bind_vcpu`), which
/// must have started (see [`init_vcpu`]). The port ends up unmasked.
pub fn bind_to_vcpu(port: Port, vcpu: usize) -> Result<(), Error> {
    takes_events(vcpu)?;
    // Masked across the move, so that no event lands between Xen's binding and ours:
    // unmasking then has it delivered where it now belongs.
    mask(port)?;
    let moved = hypercall::ops::evtchn_bind_vcpu(port.0, vcpu as u32).map_err(Error::Xen);
    if moved.is_ok() {
        OWNERS.set(port, vcpu as u8).map_err(|e| Error::BadPort(e.0))?;
    }
    unmask(port)?;
    moved
}

/// Before `vcpu` goes down: the ports moved to it go back to the boot vCPU. A per-vCPU
/// virtual IRQ cannot move; its events wait for the vCPU to come back.
pub fn move_ports_home(vcpu: usize) {
    if vcpu == 0 || vcpu >= MAX_CPUS {
        return;
    }
    for port in OWNERS.of(vcpu as u8) {
        if let Err(e) = bind_to_vcpu(port, 0) {
            log::warn!("{port} stays with vCPU {vcpu}, which goes down: {e}");
        }
    }
}

/// Registers `handler` for `port`, a port Xen bound to the boot vCPU, and unmasks it.
pub fn bind(port: Port, handler: Handler, ctx: usize) -> Result<(), Error> {
    bind_on(port, 0, handler, ctx)
}

/// [`bind`] for a port Xen bound to `vcpu`: recorded as that vCPU's before it is unmasked,
/// so that its first event is not taken for another vCPU's. A port number comes back after
/// a close, so every bind records its vCPU afresh.
fn bind_on(port: Port, vcpu: usize, handler: Handler, ctx: usize) -> Result<(), Error> {
    cover(port)?;
    OWNERS.set(port, vcpu as u8).map_err(|e| Error::BadPort(e.0))?;
    HANDLERS.lock().register(port, handler, ctx).map_err(Error::Registry)?;
    unmask(port)
}

/// Ports that fired since their owner last took the news, for drivers that do their work
/// outside the upcall: the handler only records, the driver polls its rings when it looks.
static FIRED: [AtomicU64; PORTS / 64] = [const { AtomicU64::new(0) }; PORTS / 64];
/// Of those, the ports the handler masked ([`bind_throttled`] ones).
static THROTTLED: [AtomicU64; PORTS / 64] = [const { AtomicU64::new(0) }; PORTS / 64];

fn fired_bit(port: Port) -> Option<(&'static AtomicU64, &'static AtomicU64, u64)> {
    let i = port.0 as usize / 64;
    Some((FIRED.get(i)?, THROTTLED.get(i)?, 1 << (port.0 % 64)))
}

/// The handler's context for a port bound with [`bind_throttled`].
const THROTTLE: usize = 1;

/// Records that `port` fired; a throttled port is also masked until its owner takes the
/// news: a backend that notifies without pause then costs one upcall per look of its
/// driver, not one per notification (Linux's lateeoi). Events that come meanwhile stay
/// pending, and unmasking delivers them.
fn record_fired(port: Port, ctx: usize) {
    if let Some((fired, throttled, bit)) = fired_bit(port) {
        if ctx == THROTTLE && mask(port).is_ok() {
            throttled.fetch_or(bit, Ordering::SeqCst);
        }
        fired.fetch_or(bit, Ordering::SeqCst);
    }
}

/// Binds `port` to a handler that only records that it fired (see [`take_fired`]): for
/// xenstore's port, whose other end is the toolstack.
pub fn bind_recording(port: Port) -> Result<(), Error> {
    bind_recorded(port, 0)
}

/// [`bind_recording`], throttled (see [`record_fired`]): for a backend's port.
pub fn bind_throttled(port: Port) -> Result<(), Error> {
    bind_recorded(port, THROTTLE)
}

fn bind_recorded(port: Port, ctx: usize) -> Result<(), Error> {
    let Some((fired, throttled, bit)) = fired_bit(port) else {
        return Err(Error::BadPort(port));
    };
    // A port number can come back after a close: nothing of its last owner carries over.
    fired.fetch_and(!bit, Ordering::SeqCst);
    throttled.fetch_and(!bit, Ordering::SeqCst);
    bind(port, record_fired, ctx)
}

/// Whether `port` fired since the last [`take_fired`], forgetting it, and letting it fire
/// again (see [`record_fired`]).
pub fn take_fired(port: Port) -> bool {
    let Some((fired, throttled, bit)) = fired_bit(port) else { return false };
    if fired.fetch_and(!bit, Ordering::SeqCst) & bit == 0 {
        return false;
    }
    if throttled.fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
        if let Err(e) = unmask(port) {
            log::error!("event channel {}: cannot unmask it: {e}", port.0);
        }
    }
    true
}

/// Whether `port` fired since the last [`take_fired`].
pub fn has_fired(port: Port) -> bool {
    fired_bit(port).is_some_and(|(fired, _, bit)| fired.load(Ordering::SeqCst) & bit != 0)
}

/// Binds a virtual IRQ of vcpu 0 to a new port with `handler`.
pub fn bind_virq(virq: u32, handler: Handler, ctx: usize) -> Result<Port, Error> {
    bind_virq_on(virq, 0, handler, ctx)
}

/// Binds virtual IRQ `virq` of `vcpu` (which must have started, see [`init_vcpu`]) to a new
/// port with `handler`, run on that vCPU.
pub fn bind_virq_on(virq: u32, vcpu: usize, handler: Handler, ctx: usize) -> Result<Port, Error> {
    takes_events(vcpu)?;
    let port = Port(hypercall::ops::evtchn_bind_virq(virq, vcpu as u32).map_err(Error::Xen)?);
    bind_or_close(port, vcpu, handler, ctx)
}

fn bind_or_close(port: Port, vcpu: usize, handler: Handler, ctx: usize) -> Result<Port, Error> {
    if let Err(e) = bind_on(port, vcpu, handler, ctx) {
        let _ = hypercall::ops::evtchn_close(port.0);
        return Err(e);
    }
    Ok(port)
}

/// Unregisters and closes `port`.
pub fn close(port: Port) -> Result<(), Error> {
    let _ = abi().mask(port);
    HANDLERS.lock().unregister(port).map_err(Error::Registry)?;
    hypercall::ops::evtchn_close(port.0).map_err(Error::Xen)?;
    // Its number may come back bound to the boot vCPU.
    let _ = OWNERS.set(port, 0);
    Ok(())
}

pub fn mask(port: Port) -> Result<(), Error> {
    abi().mask(port).map_err(|e| Error::BadPort(e.0))
}

pub fn unmask(port: Port) -> Result<(), Error> {
    match abi().unmask(port).map_err(|e| Error::BadPort(e.0))? {
        Unmask::Done => Ok(()),
        // Unmasking made an event deliverable: let Xen deliver it if events are enabled.
        Unmask::ForceUpcallCheck => {
            xen_common::force_event_delivery();
            Ok(())
        }
        Unmask::NeedsHypercall => hypercall::ops::evtchn_unmask(port.0).map_err(Error::Xen),
    }
}

pub fn send(port: Port) -> Result<(), Error> {
    hypercall::ops::evtchn_send(port.0).map_err(Error::Xen)
}

/// Clears `port`'s pending bit (for ports we poll rather than take upcalls for).
pub fn clear_pending(port: Port) {
    let _ = abi().clear_pending(port);
}

pub fn is_pending(port: Port) -> bool {
    abi().is_pending(port).unwrap_or(false)
}

/// After a resume in a new domain, where no port of ours exists: forgets every handler and
/// every fired mark, masks every 2-level port, and registers FIFO's control block and
/// event array pages again (the same pages, zeroed and masked: Xen starts with none).
/// Owners bind their ports anew; [`epoch`] tells them their old ones are gone.
pub fn resume_new_domain() -> Result<(), Error> {
    EPOCH.fetch_add(1, Ordering::SeqCst);
    HANDLERS.lock().clear();
    OWNERS.reset();
    for word in FIRED.iter().chain(THROTTLED.iter()) {
        word.store(0, Ordering::SeqCst);
    }
    let two_level = xen_common::two_level();
    for port in 0..PORTS as u32 {
        let _ = two_level.mask(Port(port));
    }
    let Some(Abi::Fifo(fifo)) = ABI.get() else { return Ok(()) };
    let _serial = FIFO_GROW.lock();
    let pages = FIFO_PAGES.lock().clone();
    let Some((&control, arrays)) = pages.split_first() else { return Ok(()) };
    let (control_mfn, control_page) = page_of(control);
    // SAFETY: the control block is our page, kept for good; Xen forgot it with the old
    // domain, and it must be zeroed before it is registered again.
    unsafe { core::ptr::write_bytes(control_page.as_ptr(), 0, crate::arch::PAGE_SIZE as usize) };
    hypercall::ops::evtchn_init_control(control_mfn, 0, 0).map_err(Error::Xen)?;
    // SAFETY: one vCPU, events masked: no demux or port operation runs; the control block
    // is zeroed and registered again above.
    unsafe { fifo.restart() };
    for &pfn in arrays {
        let (mfn, page) = page_of(pfn);
        register_array_page(fifo, mfn, page)?;
    }
    for &(vcpu, pfn) in VCPU_CONTROL.lock().iter() {
        let (mfn, page) = page_of(pfn);
        // SAFETY: as for vCPU 0's control block above.
        unsafe { core::ptr::write_bytes(page.as_ptr(), 0, crate::arch::PAGE_SIZE as usize) };
        hypercall::ops::evtchn_init_control(mfn, 0, vcpu).map_err(Error::Xen)?;
        if let Some(VcpuView::Fifo(queues)) = VCPU_VIEW[vcpu as usize].get() {
            // SAFETY: the vCPU is down (the other vCPUs went down for the suspend) and its
            // control block is zeroed and registered again above.
            unsafe { queues.restart() };
        }
    }
    Ok(())
}

/// Two of our own ports connected to each other: an event sent on one arrives on the
/// other. Port `b`'s handler counts, and (for `echo`) sends straight back; port `a`'s counts.
pub struct Loopback {
    pub a: Port,
    pub b: Port,
    counts: Box<Counts>,
}

struct Counts {
    a: AtomicU64,
    b: AtomicU64,
    /// The vCPU `b`'s handler last ran on.
    b_cpu: AtomicU64,
    echo: bool,
}

fn on_a(_: Port, ctx: usize) {
    // SAFETY: ctx is the address of the Loopback's boxed Counts, which outlives both
    // bindings (Loopback::drop closes them first).
    let counts = unsafe { &*(ctx as *const Counts) };
    counts.a.fetch_add(1, Ordering::SeqCst);
}

fn on_b(b: Port, ctx: usize) {
    // SAFETY: as for on_a.
    let counts = unsafe { &*(ctx as *const Counts) };
    counts.b_cpu.store(crate::smp::current() as u64, Ordering::SeqCst);
    counts.b.fetch_add(1, Ordering::SeqCst);
    if counts.echo {
        let _ = send(b);
    }
}

impl Loopback {
    pub fn new(echo: bool) -> Result<Loopback, Error> {
        let domid = hypercall::ops::own_domid().map_err(Error::Xen)?;
        let counts = Box::new(Counts {
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
            b_cpu: AtomicU64::new(0),
            echo,
        });
        let ctx = &*counts as *const Counts as usize;
        let a = Port(hypercall::ops::evtchn_alloc_unbound(abi::DOMID_SELF).map_err(Error::Xen)?);
        let b = match hypercall::ops::evtchn_bind_interdomain(domid, a.0) {
            Ok(b) => Port(b),
            Err(e) => {
                let _ = hypercall::ops::evtchn_close(a.0);
                return Err(Error::Xen(e));
            }
        };
        // Xen marks a freshly bound interdomain port pending, in case the remote end
        // signalled while it was unbound. Nothing was sent on this pair yet: drop it.
        clear_pending(b);
        bind_or_close(a, 0, on_a, ctx).inspect_err(|_| {
            let _ = hypercall::ops::evtchn_close(b.0);
        })?;
        if let Err(e) = bind_or_close(b, 0, on_b, ctx) {
            let _ = close(a);
            return Err(e);
        }
        Ok(Loopback { a, b, counts })
    }

    /// Events handled on (a, b) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.counts.a.load(Ordering::SeqCst), self.counts.b.load(Ordering::SeqCst))
    }

    /// The vCPU whose upcall last ran `b`'s handler.
    pub fn b_ran_on(&self) -> usize {
        self.counts.b_cpu.load(Ordering::SeqCst) as usize
    }

    /// With `echo`: a to b and back, once. With events enabled the whole trip completes
    /// on the way back from the send hypercall.
    pub fn round_trip(&self) {
        let before = self.counts.a.load(Ordering::SeqCst);
        let _ = send(self.a);
        while self.counts.a.load(Ordering::SeqCst) == before {
            core::hint::spin_loop();
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        for port in [self.a, self.b] {
            if let Err(e) = close(port) {
                log::error!("closing loopback {port}: {e}");
            }
        }
    }
}
