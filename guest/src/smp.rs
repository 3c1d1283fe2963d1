//! The other CPUs (vCPUs): started once at boot through pv_ops' smp ops, each on a stack of
//! its own above an unmapped guard page and with a per-CPU area its `gs:` addresses, then
//! parked until the boot CPU hands it a call to run (Xen: polling its kick port; natively
//! `hlt`).
//!
//! [`on_each`] runs a closure on every started CPU at once, the caller's included, and
//! returns their results, as Linux's `smp_call_function` with `wait`; [`on`] runs one on
//! one CPU. Calls come from the boot CPU only, one at a time: a CPU's mailbox holds one.
//!
//! A CPU is woken for a call and parks again once it is done. Before the next call to it
//! the boot CPU waits until it has parked: a wake that came before the park could be lost
//! where the wake is `VCPUOP_up` (a vCPU down).
//!
//! The toolstack decides which vCPUs are in service (`xl vcpu-set`, through
//! `cpu/<n>/availability`): one it takes away finishes its call, if it has one, gets no
//! more, and goes down as Xen sees it (`VCPUOP_down`). One given back takes calls again. The
//! boot CPU stays.

use crate::arch::{pfn_to_virt, PAGE_SIZE};
use crate::{println, pvops};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// The most CPUs we use. Under Xen each vCPU's `vcpu_info` lives in its per-CPU area
/// (`VCPUOP_register_vcpu_info`), so shared_info's 32 slots do not limit them; the bitmaps
/// of CPUs below are one word.
pub const MAX_CPUS: usize = 64;

/// Stack pages of a secondary CPU (the guard page below them is extra).
const STACK_PAGES: u64 = 16;

/// How long a CPU may take to come up, or to take a call and park again.
const TIMEOUT_NS: u64 = 5_000_000_000;

/// What `gs:` addresses on each CPU: its number at offset 8 (see [`current`]) and, under
/// Xen, the address of its `vcpu_info` at offset 16 (see [`vcpu_info`]): normally
/// `vcpu_info_area` at offset 64, else its slot of shared_info.
#[repr(C, align(128))]
struct PerCpu {
    this: AtomicU64,
    cpu: AtomicU64,
    vcpu_info: AtomicU64,
    _reserved: [u64; 5],
    vcpu_info_area: VcpuInfoArea,
}

/// 64 bytes where Xen keeps a vCPU's `vcpu_info` once registered: 64-aligned in a
/// 128-aligned area, so never across a page, as Xen requires.
#[repr(C, align(64))]
struct VcpuInfoArea(core::cell::UnsafeCell<[u8; 64]>);

// SAFETY: the bytes are Xen's `vcpu_info`, which Xen writes at any time; the guest reaches
// them only through `xen_common::Vcpu`'s atomic and volatile accesses, never a reference.
unsafe impl Sync for VcpuInfoArea {}

const _: () = assert!(core::mem::offset_of!(PerCpu, vcpu_info_area) == 64);
const _: () = assert!(core::mem::size_of::<PerCpu>() == 128);

static PER_CPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        this: AtomicU64::new(0),
        cpu: AtomicU64::new(0),
        vcpu_info: AtomicU64::new(0),
        _reserved: [0; 5],
        vcpu_info_area: VcpuInfoArea(core::cell::UnsafeCell::new([0; 64])),
    }
}; MAX_CPUS];

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;

/// A CPU's mailbox: the call posted to it (a pointer to a `&(dyn Fn(usize) + Sync)` on the
/// poster's stack, valid until the poster saw DONE) and its state.
struct Mailbox {
    state: AtomicU8,
    call: AtomicUsize,
    online: AtomicBool,
}

static MAILBOX: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        state: AtomicU8::new(IDLE),
        call: AtomicUsize::new(0),
        online: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// CPUs started (the boot CPU included), and those the platform gives.
static STARTED: AtomicUsize = AtomicUsize::new(1);
static PRESENT: AtomicUsize = AtomicUsize::new(1);

/// Started CPUs the toolstack took out of service (bit n: cpu n), and what it wants that to
/// be (applied between calls, where no CPU has one).
static OUT_OF_SERVICE: AtomicU64 = AtomicU64::new(0);
static WANTED_OUT: AtomicU64 = AtomicU64::new(0);

/// Set while the other vCPUs go down for a suspend: a parked vCPU goes down rather than
/// wait up (see `xen_common::park_cpu`).
static PARKING_DOWN: AtomicBool = AtomicBool::new(false);

/// Whether parked vCPUs go down now (for a suspend).
pub fn parking_down() -> bool {
    PARKING_DOWN.load(Ordering::SeqCst)
}

/// Each started CPU's stack top, for starting it again after a resume.
static STACK_TOP: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// One caller at a time.
static CALLING: spin::Mutex<()> = spin::Mutex::new(());

fn percpu_base(cpu: usize) -> u64 {
    core::ptr::addr_of!(PER_CPU[cpu]) as u64
}

/// Where Xen may keep `cpu`'s `vcpu_info` (see `xen_common::place_vcpu_info`).
pub fn vcpu_info_area(cpu: usize) -> u64 {
    PER_CPU[cpu].vcpu_info_area.0.get() as u64
}

/// Where `cpu`'s `vcpu_info` is now.
pub fn vcpu_info_of(cpu: usize) -> u64 {
    PER_CPU[cpu].vcpu_info.load(Ordering::Acquire)
}

/// `cpu`'s `vcpu_info` moved to `va` (Xen placed it there, or it is the boot default).
pub fn set_vcpu_info(cpu: usize, va: u64) {
    PER_CPU[cpu].vcpu_info.store(va, Ordering::Release);
}

/// The CPU this runs on (0 for the boot CPU).
pub fn current() -> usize {
    let cpu: u64;
    // SAFETY: every CPU's per-CPU base is set before it runs Rust code that may call this
    // (the boot CPU's in `init_boot_cpu`, the others' by their entry code), and offset 8 of
    // the area is its number.
    unsafe {
        core::arch::asm!("mov {}, gs:[8]", out(reg) cpu, options(nostack, readonly, preserves_flags))
    };
    cpu as usize
}

/// The address of this CPU's `vcpu_info` (Xen): what the PV irq ops mask and unmask.
#[inline(always)]
pub fn vcpu_info() -> u64 {
    let va: u64;
    // SAFETY: as for `current`; offset 16 is set with the base, before the CPU runs.
    unsafe {
        core::arch::asm!("mov {}, gs:[16]", out(reg) va, options(nostack, readonly, preserves_flags))
    };
    va
}

/// Fills `cpu`'s per-CPU area, before it is anyone's base: under Xen its `vcpu_info` is
/// its shared_info slot (if it has one) until [`crate::arch::xen_common::place_vcpu_info`]
/// moves it.
fn fill_area(cpu: usize) {
    let area = &PER_CPU[cpu];
    area.this.store(percpu_base(cpu), Ordering::Relaxed);
    area.cpu.store(cpu as u64, Ordering::Relaxed);
    area.vcpu_info
        .store(crate::arch::xen_common::vcpu_info_slot(cpu).unwrap_or(0), Ordering::Release);
}

/// CPUs started (the boot CPU included); [`in_service`] says which of them take calls.
pub fn count() -> usize {
    STARTED.load(Ordering::Acquire)
}

/// Whether started `cpu` takes calls (the toolstack did not take it out of service).
pub fn in_service(cpu: usize) -> bool {
    cpu < count() && OUT_OF_SERVICE.load(Ordering::Acquire) & (1 << cpu) == 0
}

/// The CPUs that take calls, in order.
pub fn serving() -> impl Iterator<Item = usize> {
    (0..count()).filter(|&cpu| in_service(cpu))
}

/// What the toolstack wants of vCPU `cpu` (true: in service), for the next
/// [`apply_availability`]. The boot CPU always serves.
pub fn want_available(cpu: usize, available: bool) {
    if cpu == 0 || cpu >= MAX_CPUS {
        return;
    }
    if available {
        WANTED_OUT.fetch_and(!(1 << cpu), Ordering::AcqRel);
    } else {
        WANTED_OUT.fetch_or(1 << cpu, Ordering::AcqRel);
    }
}

/// Takes CPUs out of service and back as the toolstack wants, between calls; says so, and
/// has every CPU in service answer a call. From the boot CPU, not inside a call.
pub fn apply_availability() {
    if current() != 0 {
        return;
    }
    let Some(one) = CALLING.try_lock() else { return };
    let started = if count() >= 64 { u64::MAX } else { (1u64 << count()) - 1 };
    let wanted = WANTED_OUT.load(Ordering::Acquire) & started;
    let before = OUT_OF_SERVICE.swap(wanted, Ordering::AcqRel);
    if before == wanted {
        return;
    }
    for cpu in 1..count() {
        let bit = 1u64 << cpu;
        if (before ^ wanted) & bit != 0 {
            let what = if wanted & bit != 0 { "out of service" } else { "back in service" };
            log::info!("smp: vCPU {cpu} {what} (cpu/{cpu}/availability)");
        }
        if wanted & !before & bit != 0 {
            take_down(cpu);
        }
    }
    let serving: Vec<usize> = serving().collect();
    drop(one);
    match on_each(|_| current()) {
        Ok(ran) if ran == serving => println!(
            "smp: {} of {} vCPUs in service ({}), each answered a call",
            serving.len(),
            present(),
            Cpus(&serving)
        ),
        other => log::error!("smp: calls to the vCPUs in service {serving:?} ran as {other:?}"),
    }
}

/// Under Xen, has `cpu`, just taken out of service and parked, go down as the toolstack
/// expects (a parked vCPU in service waits up, polling), and waits until it has.
fn take_down(cpu: usize) {
    if pvops::is_xen() && !go_down(cpu) {
        log::error!("smp: vCPU {cpu} is out of service but did not go down");
    }
}

/// Under Xen, kicks `cpu` if it is parked up, so that it looks again and goes down (it is
/// out of service, or a suspend is coming), and waits until it is down; false if it was not
/// in time.
fn go_down(cpu: usize) -> bool {
    use crate::arch::xen_common::cpu_down;
    let deadline = pvops::clock_ns() + TIMEOUT_NS;
    crate::xen::evtchn::move_ports_home(cpu);
    if !cpu_down(cpu as u32) {
        crate::xen::pvlock::kick_cpu(cpu);
    }
    while !cpu_down(cpu as u32) {
        if pvops::clock_ns() > deadline {
            return false;
        }
        relax();
    }
    true
}

/// A CPU list as `0-2,5`.
struct Cpus<'a>(&'a [usize]);

impl core::fmt::Display for Cpus<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut i = 0;
        while i < self.0.len() {
            let mut j = i;
            while j + 1 < self.0.len() && self.0[j + 1] == self.0[j] + 1 {
                j += 1;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            if j > i {
                write!(f, "{}-{}", self.0[i], self.0[j])?;
            } else {
                write!(f, "{}", self.0[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// CPUs the platform gives us, started or not.
pub fn present() -> usize {
    PRESENT.load(Ordering::Acquire)
}

/// Makes the boot CPU's per-CPU area its `gs:` base: right after pv_ops are installed,
/// before any irq op (Xen PV's find the vCPU's `vcpu_info` there).
pub fn init_boot_cpu() {
    fill_area(0);
    // SAFETY: the boot CPU's area, filled, lives for good; nothing used a base before.
    unsafe { pvops::set_percpu_base(percpu_base(0)) };
    MAILBOX[0].online.store(true, Ordering::Release);
}

/// Why a CPU did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    NoMemory,
    /// Xen would not keep its `vcpu_info` in its area, and shared_info has no slot for it.
    NoVcpuInfo(hypercall::Errno),
    /// The platform refused (a negative errno).
    Platform(i64),
    /// Started, but it never said so.
    Silent,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoMemory => f.write_str("no memory for its stack"),
            StartError::NoVcpuInfo(e) => {
                write!(f, "no vcpu_info: VCPUOP_register_vcpu_info failed ({e}), past 32 vCPUs")
            }
            StartError::Platform(e) => {
                write!(f, "the platform refused ({})", hypercall::Errno((-e) as i32))
            }
            StartError::Silent => f.write_str("it did not come up in time"),
        }
    }
}

/// Starts every CPU the platform gives, in order, stopping at the first that fails (the
/// ones after it would be numbered wrong). Returns how many run, the boot CPU included.
pub fn start_all() -> Result<usize, (usize, StartError)> {
    let present = (pvops::cpu_count() as usize).clamp(1, MAX_CPUS);
    PRESENT.store(present, Ordering::Release);
    bind_kick_port(0);
    for cpu in 1..present {
        if let Err(e) = start(cpu) {
            return Err((cpu, e));
        }
        STARTED.store(cpu + 1, Ordering::Release);
    }
    Ok(present)
}

fn start(cpu: usize) -> Result<(), StartError> {
    // A guard page below the stack: an overflow faults instead of corrupting what is there.
    let first =
        crate::mm::alloc_zeroed_frames(STACK_PAGES + 1).map_err(|_| StartError::NoMemory)?;
    let guard = pfn_to_virt(first);
    // SAFETY: the guard page was just allocated for this and nothing refers to it; it is
    // never freed.
    if let Err(e) = unsafe { crate::mm::paging::unmap_guard(guard) } {
        log::warn!("smp: cpu {cpu}: no guard page below its stack: {e:?}");
    }
    let stack_top = guard + (STACK_PAGES + 1) * PAGE_SIZE;
    STACK_TOP[cpu].store(stack_top as usize, Ordering::Relaxed);
    fill_area(cpu);
    if pvops::is_xen() {
        crate::arch::xen_common::place_vcpu_info(cpu).map_err(StartError::NoVcpuInfo)?;
    }
    bind_kick_port(cpu);
    launch(cpu, stack_top)
}

/// Under Xen, the port that wakes `cpu` when it blocks waiting for a lock; without one it
/// spins (said once).
fn bind_kick_port(cpu: usize) {
    if !pvops::is_xen() {
        return;
    }
    if let Err(e) = crate::xen::pvlock::bind(cpu) {
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            log::warn!("smp: no kick port for vCPU {cpu} ({e:?}): its lock waits spin");
        }
    }
}

/// Starts `cpu` on its stack and area and waits until it parked.
fn launch(cpu: usize, stack_top: u64) -> Result<(), StartError> {
    let start = pvops::CpuStart { stack_top, percpu: percpu_base(cpu) };
    // SAFETY: the stack is the CPU's alone for good, mapped, and so is its per-CPU area;
    // the CPU was never started (cpus are started once, in order).
    let rc = unsafe { pvops::start_cpu(cpu as u32, &start) };
    if rc != 0 {
        return Err(StartError::Platform(rc));
    }
    let deadline = pvops::clock_ns() + TIMEOUT_NS;
    while !(MAILBOX[cpu].online.load(Ordering::Acquire) && pvops::cpu_parked(cpu as u32)) {
        if pvops::clock_ns() > deadline {
            return Err(StartError::Silent);
        }
        relax();
    }
    Ok(())
}

/// Before a suspend: has every other started vCPU go down and waits until it has, so that
/// the toolstack saves the domain with the boot vCPU alone running, as
/// [`restart_after_resume`] expects. One polling is kicked to go down; one just done with
/// a call may still be on its way to its park; one that never gets there is said, and saved
/// running. [`end_parking_down`] ends it once the domain runs again.
pub fn park_others_for_suspend() {
    PARKING_DOWN.store(true, Ordering::SeqCst);
    for cpu in 1..count() {
        if !go_down(cpu) {
            log::error!("suspend: cpu {cpu} did not park: the domain is saved with it running");
        }
    }
}

/// After the suspend hypercall returned (cancelled or in a new domain): parked vCPUs wait
/// up again.
pub fn end_parking_down() {
    PARKING_DOWN.store(false, Ordering::SeqCst);
}

/// After a resume in a new domain, with every other CPU parked: Xen keeps no context of a
/// vCPU that is down, nor where its vcpu_info was, nor any port, so each is placed, given a
/// kick port and started again, on its stack and area, as at boot. A CPU that does not come
/// up ends the list of those that take calls.
pub fn restart_after_resume() {
    let n = count();
    bind_kick_port(0);
    for cpu in 1..n {
        MAILBOX[cpu].online.store(false, Ordering::Release);
        MAILBOX[cpu].state.store(IDLE, Ordering::Release);
        let top = STACK_TOP[cpu].load(Ordering::Relaxed) as u64;
        let placed = crate::arch::xen_common::place_vcpu_info(cpu).map_err(StartError::NoVcpuInfo);
        bind_kick_port(cpu);
        if let Err(e) = placed.and_then(|()| launch(cpu, top)) {
            log::error!(
                "smp: cpu {cpu} did not start again after the resume: {e}; going on with {cpu}"
            );
            STARTED.store(cpu, Ordering::Release);
            return;
        }
    }
    if n > 1 {
        let serving: Vec<usize> = serving().collect();
        match on_each(|_| current()) {
            Ok(ran) if ran == serving => {
                log::info!("smp: {n} CPUs online again, {} in service", serving.len())
            }
            other => log::error!("smp: after the resume, calls ran as {other:?}"),
        }
    }
}

/// What a secondary CPU runs once its platform set it up: says it is online, then runs
/// each call posted to it, parked in between.
pub fn secondary_main(cpu: usize) -> ! {
    let mailbox = &MAILBOX[cpu];
    mailbox.online.store(true, Ordering::Release);
    loop {
        if mailbox.state.load(Ordering::Acquire) == POSTED {
            let call = mailbox.call.load(Ordering::Acquire) as *const &(dyn Fn(usize) + Sync);
            // SAFETY: the poster keeps the call alive until it sees DONE (see `post`).
            unsafe { (*call)(cpu) };
            mailbox.state.store(DONE, Ordering::Release);
        }
        pvops::park_cpu(cpu as u32);
    }
}

/// Why a call could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No such CPU started.
    NoCpu,
    /// The toolstack took the CPU out of service.
    OutOfService,
    /// Calls come from the boot CPU.
    NotBootCpu,
    /// The CPU did not park, or did not finish, in time.
    Stuck(usize),
}

impl core::fmt::Display for CallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CallError::NoCpu => f.write_str("no such CPU"),
            CallError::OutOfService => f.write_str("the toolstack took the CPU out of service"),
            CallError::NotBootCpu => f.write_str("calls come from the boot CPU"),
            CallError::Stuck(cpu) => write!(f, "cpu {cpu} did not answer in time"),
        }
    }
}

/// Hands `call` to parked `cpu` and wakes it.
fn post(cpu: usize, call: &&(dyn Fn(usize) + Sync)) -> Result<(), CallError> {
    let mailbox = &MAILBOX[cpu];
    let deadline = pvops::clock_ns() + TIMEOUT_NS;
    while !pvops::cpu_parked(cpu as u32) {
        if pvops::clock_ns() > deadline {
            return Err(CallError::Stuck(cpu));
        }
        relax();
    }
    mailbox.call.store(call as *const _ as usize, Ordering::Release);
    mailbox.state.store(POSTED, Ordering::Release);
    pvops::wake_cpu(cpu as u32);
    Ok(())
}

/// Waits for `cpu` to finish its call. A CPU that does not is a broken kernel: the call's
/// closure may still be running on it and refer to the caller's stack, so there is no
/// returning to the caller: it stops the machine.
fn wait(cpu: usize) {
    let mailbox = &MAILBOX[cpu];
    let deadline = pvops::clock_ns() + TIMEOUT_NS;
    while mailbox.state.load(Ordering::Acquire) != DONE {
        if pvops::clock_ns() > deadline {
            crate::console::emergency(format_args!("smp: cpu {cpu} never finished its call\n"));
            pvops::shutdown(pvops::Halt::Failure);
        }
        relax();
    }
    mailbox.state.store(IDLE, Ordering::Release);
}

/// Runs `f(cpu)` on every CPU in service at once (on this one too) and returns the results
/// in CPU order.
pub fn on_each<R: Send>(f: impl Fn(usize) -> R + Sync) -> Result<Vec<R>, CallError> {
    if current() != 0 {
        return Err(CallError::NotBootCpu);
    }
    let _one = CALLING.lock();
    let cpus: Vec<usize> = serving().collect();
    call_on(&cpus, f)
}

/// Runs `f(cpu)` at once on the boot CPU and the `others` of the CPUs in service (the first
/// ones, in order), and returns the results in CPU order.
pub fn on_first<R: Send>(
    others: usize,
    f: impl Fn(usize) -> R + Sync,
) -> Result<Vec<R>, CallError> {
    if current() != 0 {
        return Err(CallError::NotBootCpu);
    }
    let _one = CALLING.lock();
    let cpus: Vec<usize> = serving().take(others + 1).collect();
    if cpus.len() != others + 1 {
        return Err(CallError::NoCpu);
    }
    call_on(&cpus, f)
}

/// [`on_each`] on `cpus` (the boot CPU first, each in service), from the boot CPU with
/// CALLING held.
fn call_on<R: Send>(cpus: &[usize], f: impl Fn(usize) -> R + Sync) -> Result<Vec<R>, CallError> {
    let results: Vec<spin::Mutex<Option<R>>> =
        (0..count()).map(|_| spin::Mutex::new(None)).collect();
    let job = |cpu: usize| {
        let r = f(cpu);
        *results[cpu].lock() = Some(r);
    };
    let call: &(dyn Fn(usize) + Sync) = &job;
    let mut posted = Vec::with_capacity(cpus.len());
    let mut failed = None;
    for &cpu in &cpus[1..] {
        match post(cpu, &call) {
            Ok(()) => posted.push(cpu),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    call(0);
    for &cpu in &posted {
        wait(cpu);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(cpus
        .iter()
        .map(|&cpu| results[cpu].lock().take().expect("every CPU in service ran the call"))
        .collect())
}

/// Runs `f()` on `cpu` and returns its result.
pub fn on<R: Send>(cpu: usize, f: impl Fn() -> R + Sync) -> Result<R, CallError> {
    if cpu >= count() {
        return Err(CallError::NoCpu);
    }
    if !in_service(cpu) {
        return Err(CallError::OutOfService);
    }
    if current() != 0 {
        return Err(CallError::NotBootCpu);
    }
    if cpu == 0 {
        return Ok(f());
    }
    let _one = CALLING.lock();
    let result = spin::Mutex::new(None);
    let job = |_: usize| *result.lock() = Some(f());
    let call: &(dyn Fn(usize) + Sync) = &job;
    post(cpu, &call)?;
    wait(cpu);
    Ok(result.into_inner().expect("the CPU ran the call"))
}

/// A pause in a wait loop: under Xen a yield, so that the vCPU we wait for gets a CPU.
fn relax() {
    if pvops::is_xen() {
        let _ = hypercall::ops::sched_yield();
    } else {
        core::hint::spin_loop();
    }
}
