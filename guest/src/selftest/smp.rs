use super::{check, Outcome, Test};
use crate::{println, pvops, smp};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

pub const TESTS: &[Test] = &[
    Test { name: "smp::every_vcpu_up", run: every_vcpu_up },
    Test { name: "smp::call_runs_on_its_vcpu", run: call_runs_on_its_vcpu },
    Test { name: "smp::lock_and_heap_stress", run: lock_and_heap_stress },
    Test { name: "smp::vcpu_info_in_percpu_area", run: vcpu_info_in_percpu_area },
    Test { name: "smp::lock_waiter_blocks_until_kicked", run: lock_waiter_blocks_until_kicked },
    Test {
        name: "smp::events_bound_to_a_vcpu_arrive_there",
        run: events_bound_to_a_vcpu_arrive_there,
    },
    Test { name: "smp::each_vcpus_timer_fires_there", run: each_vcpus_timer_fires_there },
];

/// How long an event may take to reach a parked vCPU: Xen wakes it at once, but under TCG
/// a vCPU's host thread may wait for a physical CPU.
const EVENT_WAIT_NS: u64 = 2_000_000_000;

/// Spins with interrupts (events) enabled on the calling CPU until `done` or
/// [`EVENT_WAIT_NS`] passed, then disables them again.
fn wait_with_interrupts(done: impl Fn() -> bool) {
    let deadline = pvops::clock_ns() + EVENT_WAIT_NS;
    pvops::irq_enable();
    while !done() && pvops::clock_ns() < deadline {
        core::hint::spin_loop();
    }
    pvops::irq_disable();
}

/// Why a test of the other CPUs cannot run here, if it cannot.
fn not_here() -> Option<&'static str> {
    if smp::count() < smp::present() && pvops::is_xen_pv() {
        return Some(
            "PV: the other vCPUs are not started yet (the PV irq ops still address vCPU 0)",
        );
    }
    None
}

fn every_vcpu_up() -> Outcome {
    let (started, present) = (smp::count(), smp::present());
    println!("smp: {started} of {present} vCPUs online");
    if let Some(why) = not_here() {
        return Outcome::Skip(why);
    }
    check!(started == present, "{started} of the {present} vCPUs the toolstack gave are up");
    check!(smp::current() == 0, "the boot CPU is cpu {}", smp::current());
    Outcome::Pass
}

/// The vCPUs that take calls (those the toolstack left in service), or why a test of calls
/// between them cannot run here.
fn several_vcpus() -> Result<Vec<usize>, Outcome> {
    if let Some(why) = not_here() {
        return Err(Outcome::Skip(why));
    }
    match smp::serving().collect::<Vec<_>>() {
        cpus if cpus.len() == 1 => Err(Outcome::Skip("one vCPU in service")),
        cpus => Ok(cpus),
    }
}

fn call_runs_on_its_vcpu() -> Outcome {
    let cpus = match several_vcpus() {
        Ok(cpus) => cpus,
        Err(skip) => return skip,
    };
    let ran = match smp::on_each(|cpu| (cpu, smp::current())) {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(alloc::format!("on_each: {e}")),
    };
    let want: Vec<(usize, usize)> = cpus.iter().map(|&c| (c, c)).collect();
    check!(ran == want, "calls ran as (asked, current) {ran:?}");
    for &cpu in &cpus[1..] {
        match smp::on(cpu, smp::current) {
            Ok(c) => check!(c == cpu, "a call for cpu {cpu} ran on cpu {c}"),
            Err(e) => return Outcome::Fail(alloc::format!("on({cpu}): {e}")),
        }
    }
    // Each CPU again, many times: a wake must never be lost between a park and the next call.
    for round in 0..200 {
        let cpu = cpus[1 + round % (cpus.len() - 1)];
        check!(smp::on(cpu, smp::current) == Ok(cpu), "round {round}: cpu {cpu} did not answer");
    }
    // One the toolstack took away takes none.
    if let Some(out) = (0..smp::count()).find(|&cpu| !smp::in_service(cpu)) {
        check!(
            smp::on(out, smp::current) == Err(smp::CallError::OutOfService),
            "cpu {out}, out of service, took a call"
        );
    }
    Outcome::Pass
}

/// Every CPU at once: a shared counter under a lock and an atomic one, and heap blocks
/// allocated, written, checked and freed, so that the heap's lock is contended.
fn lock_and_heap_stress() -> Outcome {
    let n = match several_vcpus() {
        Ok(cpus) => cpus.len(),
        Err(skip) => return skip,
    };
    const ROUNDS: u64 = 20_000;
    let locked = spin::Mutex::new(0u64);
    let atomic = AtomicU64::new(0);
    let bad = AtomicU64::new(0);
    let ran = smp::on_each(|cpu| {
        for i in 0..ROUNDS {
            *locked.lock() += 1;
            atomic.fetch_add(1, Ordering::Relaxed);
            if i % 16 == 0 {
                let len = 1 + (i as usize * 7 + cpu) % 512;
                let block: Vec<u8> = (0..len).map(|k| (k + cpu) as u8).collect();
                if block.iter().enumerate().any(|(k, &b)| b != (k + cpu) as u8) {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    if let Err(e) = ran {
        return Outcome::Fail(alloc::format!("on_each: {e}"));
    }
    let want = n as u64 * ROUNDS;
    check!(*locked.lock() == want, "locked counter {} of {want}", *locked.lock());
    check!(
        atomic.load(Ordering::Relaxed) == want,
        "atomic counter {}",
        atomic.load(Ordering::Relaxed)
    );
    check!(
        bad.load(Ordering::Relaxed) == 0,
        "{} heap blocks changed under us",
        bad.load(Ordering::Relaxed)
    );
    Outcome::Pass
}

/// Under Xen every vCPU's vcpu_info is in its own per-CPU area, and Xen keeps it there: each
/// vCPU's pvclock in it tells the time the boot vCPU's does (the area would be zeros if Xen
/// had not taken it).
fn vcpu_info_in_percpu_area() -> Outcome {
    use crate::arch::xen_common;
    use crate::time::xen_common::snapshot_of;
    if !pvops::is_xen() {
        return Outcome::Skip("no vcpu_info natively");
    }
    if let Some(why) = not_here() {
        return Outcome::Skip(why);
    }
    if smp::vcpu_info_of(0) != smp::vcpu_info_area(0) {
        return Outcome::Skip("Xen keeps vcpu_info in shared_info (see the WARN line)");
    }
    let seen = smp::on_each(|cpu| {
        let placed = smp::vcpu_info() == smp::vcpu_info_area(cpu);
        let (own, boot) = (snapshot_of(xen_common::this_vcpu()), snapshot_of(xen_common::vcpu()));
        let tsc = crate::arch::cpu::rdtsc();
        (cpu, placed, boot.ns_at(tsc).abs_diff(own.ns_at(tsc)))
    });
    let seen = match seen {
        Ok(seen) => seen,
        Err(e) => return Outcome::Fail(alloc::format!("on_each: {e}")),
    };
    for (cpu, placed, skew_ns) in seen {
        check!(placed, "cpu {cpu}'s gs: vcpu_info is not its per-CPU area");
        // A domain's vCPUs' clocks agree to well under a millisecond; a vcpu_info Xen does
        // not update is off by the host's uptime.
        check!(skew_ns < 10_000_000, "cpu {cpu}'s pvclock is {skew_ns} ns from the boot vCPU's");
    }
    Outcome::Pass
}

/// Under Xen a vCPU waiting long for an IrqMutex blocks, and the holder's unlock kicks it:
/// vCPU 1 holds a lock for 50 ms while the boot vCPU asks for it. The waiter wakes every
/// 1 ms on its own too, and one awake just as the holder lets go takes the lock before the
/// unlock looks for waiters, which then kicks no one: so up to four rounds, each of which
/// must block, and one of which must be ended by a kick.
fn lock_waiter_blocks_until_kicked() -> Outcome {
    use crate::sync::IrqMutex;
    use crate::xen::pvlock;
    use core::sync::atomic::AtomicBool;
    static LOCK: IrqMutex<u64> = IrqMutex::new(0);
    static HELD: AtomicBool = AtomicBool::new(false);
    const HOLD_NS: u64 = 50_000_000;
    const ROUNDS: usize = 4;
    if !pvops::is_xen() {
        return Outcome::Skip("natively a waiter spins: no hypervisor to block in");
    }
    if let Err(skip) = several_vcpus() {
        return skip;
    }
    let round = || -> Result<(u64, u64), alloc::string::String> {
        HELD.store(false, Ordering::SeqCst);
        let before = pvlock::stats();
        let ran = smp::on_first(1, |cpu| {
            if cpu != 0 {
                let mut g = LOCK.lock();
                HELD.store(true, Ordering::SeqCst);
                let until = pvops::clock_ns() + HOLD_NS;
                while pvops::clock_ns() < until {
                    core::hint::spin_loop();
                }
                *g += 1;
                return Ok(());
            }
            let deadline = pvops::clock_ns() + 5_000_000_000;
            while !HELD.load(Ordering::SeqCst) {
                if pvops::clock_ns() > deadline {
                    return Err("vCPU 1 never took the lock");
                }
                core::hint::spin_loop();
            }
            let mut g = LOCK.lock();
            *g += 1;
            Ok(())
        });
        match ran {
            Ok(results) => {
                if let Some(Err(why)) = results.into_iter().find(Result::is_err) {
                    return Err(why.into());
                }
            }
            Err(e) => return Err(alloc::format!("on_first: {e}")),
        }
        let after = pvlock::stats();
        Ok((after.0 - before.0, after.1 - before.1))
    };
    let mut seen = Vec::new();
    for _ in 0..ROUNDS {
        let (blocks, kicks) = match round() {
            Ok(r) => r,
            Err(why) => return Outcome::Fail(why),
        };
        seen.push((blocks, kicks));
        check!(blocks > 0, "the waiter never blocked in its 50 ms wait (rounds {seen:?})");
        if kicks > 0 {
            break;
        }
    }
    let count = *LOCK.lock();
    let rounds: Vec<alloc::string::String> =
        seen.iter().map(|(b, k)| alloc::format!("blocked {b} times, {k} kicks")).collect();
    println!("smp: a lock waiter {}", rounds.join("; "));
    check!(
        count.is_multiple_of(2) && count > 0,
        "the lock's count is {count}, not a multiple of 2"
    );
    check!(
        seen.last().is_some_and(|&(_, k)| k > 0),
        "no unlock kicked the waiter in {ROUNDS} rounds"
    );
    Outcome::Pass
}

/// Under Xen a port moved to vCPU n (`EVTCHNOP_bind_vcpu`) has its events delivered there:
/// a loopback pair whose receiving end is moved to each vCPU in turn, sent to from the boot
/// vCPU, runs its handler on that vCPU, woken from its park; moved back, on the boot vCPU.
fn events_bound_to_a_vcpu_arrive_there() -> Outcome {
    use crate::xen::evtchn::{self, Loopback};
    if !pvops::is_xen() {
        return Outcome::Skip("no event channels natively");
    }
    let cpus = match several_vcpus() {
        Ok(cpus) => cpus,
        Err(skip) => return skip,
    };
    let pair = match Loopback::new(false) {
        Ok(pair) => pair,
        Err(e) => return Outcome::Fail(alloc::format!("loopback pair: {e}")),
    };
    let send_and_wait = |want: usize| -> Result<usize, alloc::string::String> {
        let before = pair.counts().1;
        evtchn::send(pair.a).map_err(|e| alloc::format!("send: {e}"))?;
        let deadline = pvops::clock_ns() + EVENT_WAIT_NS;
        while pair.counts().1 == before {
            if pvops::clock_ns() > deadline {
                return Err(alloc::format!("the event bound to vCPU {want} never arrived"));
            }
            let _ = hypercall::ops::sched_yield();
        }
        Ok(pair.b_ran_on())
    };
    for &cpu in cpus.iter().skip(1).chain([&0]) {
        if let Err(e) = evtchn::bind_to_vcpu(pair.b, cpu) {
            return Outcome::Fail(alloc::format!("binding {} to vCPU {cpu}: {e}", pair.b));
        }
        for round in 0..3 {
            match send_and_wait(cpu) {
                Ok(ran) => check!(ran == cpu, "round {round}: bound to vCPU {cpu}, ran on {ran}"),
                Err(why) => return Outcome::Fail(why),
            }
        }
    }
    println!("smp: events bound to vCPUs {cpus:?} arrived on each");
    Outcome::Pass
}

/// Each vCPU has a timer of its own: on each vCPU but the boot one (whose timer the time
/// tests cover), a call arms that vCPU's timer and waits with interrupts on; the handler must
/// run on that vCPU. Under Xen it binds the vCPU's VIRQ_TIMER and sets a deadline 1 ms ahead
/// with `set_timer_op` (which arms the calling vCPU's timer); natively it is the CPU's local
/// APIC timer, one-shot.
fn each_vcpus_timer_fires_there() -> Outcome {
    use crate::xen::evtchn;
    static FIRED_ON: [AtomicU64; smp::MAX_CPUS] = [const { AtomicU64::new(0) }; smp::MAX_CPUS];
    fn on_timer(_: events::Port, cpu: usize) {
        // Recorded as 1 + the vCPU it ran on, in the slot of the vCPU it was bound to.
        FIRED_ON[cpu].store(1 + smp::current() as u64, Ordering::SeqCst);
    }
    let cpus = match several_vcpus() {
        Ok(cpus) => cpus,
        Err(skip) => return skip,
    };
    if !pvops::is_xen() {
        return native_timers_fire_on_each(&cpus);
    }
    for &cpu in &cpus[1..] {
        FIRED_ON[cpu].store(0, Ordering::SeqCst);
        let ran = smp::on(cpu, || -> Result<u64, alloc::string::String> {
            let virq = hypercall::abi::VIRQ_TIMER;
            let port = evtchn::bind_virq_on(virq, cpu, on_timer, cpu)
                .map_err(|e| alloc::format!("binding VIRQ_TIMER of vCPU {cpu}: {e}"))?;
            let now = crate::time::xen_common::system_time_ns();
            let armed = hypercall::ops::set_timer(now + 1_000_000);
            if armed.is_ok() {
                wait_with_interrupts(|| FIRED_ON[cpu].load(Ordering::SeqCst) != 0);
            }
            let _ = hypercall::ops::set_timer(0);
            let closed = evtchn::close(port);
            armed.map_err(|e| alloc::format!("set_timer_op on vCPU {cpu}: {e}"))?;
            closed.map_err(|e| alloc::format!("closing {port}: {e}"))?;
            Ok(FIRED_ON[cpu].load(Ordering::SeqCst))
        });
        match ran {
            Ok(Ok(0)) => return Outcome::Fail(alloc::format!("vCPU {cpu}'s timer never fired")),
            Ok(Ok(on)) => {
                check!(on - 1 == cpu as u64, "vCPU {cpu}'s timer fired on vCPU {}", on - 1)
            }
            Ok(Err(why)) => return Outcome::Fail(why),
            Err(e) => return Outcome::Fail(alloc::format!("on({cpu}): {e}")),
        }
    }
    println!("smp: the timers of vCPUs {:?} fired on each", &cpus[1..]);
    Outcome::Pass
}

/// [`each_vcpus_timer_fires_there`] natively: each CPU's local APIC timer interrupts that CPU.
fn native_timers_fire_on_each(cpus: &[usize]) -> Outcome {
    use crate::arch::native::smp::{arm_timer, timer_interrupts};
    for &cpu in &cpus[1..] {
        let ran = smp::on(cpu, || -> Result<(), &'static str> {
            let before = timer_interrupts();
            // 100k bus ticks: 0.1 ms at QEMU's 1 GHz.
            if !arm_timer(100_000) {
                return Err("no local APIC to arm");
            }
            wait_with_interrupts(|| timer_interrupts() != before);
            if timer_interrupts() == before {
                return Err("its local APIC timer never fired");
            }
            Ok(())
        });
        match ran {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Outcome::Fail(alloc::format!("cpu {cpu}: {why}")),
            Err(e) => return Outcome::Fail(alloc::format!("on({cpu}): {e}")),
        }
    }
    println!("smp: the local APIC timers of CPUs {:?} fired on each", &cpus[1..]);
    Outcome::Pass
}
