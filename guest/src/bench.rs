//! Benchmarks (`bench` or `bench=<name prefixes>` on the command line). Not tests: each
//! prints one row in a stable format that `rig/bench-table.py` merges across platforms:
//!
//! `bench: <name> <value> <unit> <detail>`
//!
//! between `bench: begin platform=<pv_ops backend> evtchn=<abi>` and `bench: end`.

use crate::arch::{cpu, xen_pv, PAGE_SIZE};
use crate::cmdline::Selection;
use crate::mm::{self, paging};
use crate::pvops::patch;
use crate::{println, pvops, pvpatch};
use core::hint::black_box;

struct Bench {
    name: &'static str,
    run: fn() -> Result<Row, &'static str>,
}

struct Row {
    value: f64,
    unit: &'static str,
    detail: alloc::string::String,
}

const BENCHES: &[Bench] = &[
    Bench { name: "pvops_irq_bare", run: || irq_pair(Via::Bare) },
    Bench { name: "pvops_irq_indirect", run: || irq_pair(Via::Indirect) },
    Bench { name: "pvops_irq_direct", run: || irq_pair(Via::Direct) },
    Bench { name: "pvops_irq_patched", run: || irq_pair(Via::Patched) },
    Bench { name: "pvops_flags_bare", run: || flags_pair(Via::Bare) },
    Bench { name: "pvops_flags_indirect", run: || flags_pair(Via::Indirect) },
    Bench { name: "pvops_flags_direct", run: || flags_pair(Via::Direct) },
    Bench { name: "pvops_flags_patched", run: || flags_pair(Via::Patched) },
    Bench { name: "pvops_cpuid_bare", run: || cpuid(Via::Bare) },
    Bench { name: "pvops_cpuid_indirect", run: || cpuid(Via::Indirect) },
    Bench { name: "pvops_cpuid_patched", run: || cpuid(Via::Patched) },
    Bench { name: "null_hypercall", run: null_hypercall },
    Bench { name: "mmu_update_single_x64", run: mmu_update_single },
    Bench { name: "mmu_update_multicall_x64", run: mmu_update_multicall },
    Bench { name: "mmu_update_batch_x64", run: mmu_update_batch },
    Bench { name: "mmu_hypercalls_single_x64", run: || mmu_hypercalls(mmu_single_round) },
    Bench { name: "mmu_hypercalls_multicall_x64", run: || mmu_hypercalls(mmu_multicall_round) },
    Bench { name: "mmu_hypercalls_batch_x64", run: || mmu_hypercalls(mmu_batch_round) },
    Bench { name: "event_loopback_rtt", run: event_loopback_rtt },
    Bench { name: "grant_copy", run: grant_copy },
    Bench { name: "blk_seq_read_4k", run: || blk_seq(false, 4 << 10) },
    Bench { name: "blk_seq_read_64k", run: || blk_seq(false, 64 << 10) },
    Bench { name: "blk_seq_read_1m", run: || blk_seq(false, 1 << 20) },
    Bench { name: "blk_seq_write_4k", run: || blk_seq(true, 4 << 10) },
    Bench { name: "blk_seq_write_64k", run: || blk_seq(true, 64 << 10) },
    Bench { name: "blk_seq_write_1m", run: || blk_seq(true, 1 << 20) },
    Bench { name: "blk_rand_read_4k_qd1", run: || blk_rand_read(1) },
    Bench { name: "blk_rand_read_4k_qd32", run: || blk_rand_read(32) },
    Bench { name: "blk_verify", run: blk_verify },
    Bench { name: "smp_call_roundtrip", run: smp_call_roundtrip },
    Bench { name: "smp_sha256_x1", run: || smp_sha256(1) },
    Bench { name: "smp_sha256_x2", run: || smp_sha256(2) },
    Bench { name: "smp_sha256_x4", run: || smp_sha256(4) },
];

pub fn run(selection: &Selection<'_>) {
    // A column of its own for the spinning idle: its network rows are another trade.
    let variant = if crate::time::idle_polls() { " variant=idle-poll" } else { "" };
    println!(
        "bench: begin platform={} evtchn={}{variant}",
        pvops::backend().name(),
        crate::xen::evtchn::abi_name()
    );
    if selection.selects("pvops_") {
        show_patched_site();
    }
    // The last `<stem>_bare` row: later `<stem>_*` rows say how they compare.
    let mut bare: Option<(&str, f64)> = None;
    for bench in BENCHES.iter().filter(|b| selection.selects(b.name)) {
        if pvops::is_xen() {
            if let Some(what) = crate::xen::control::requested() {
                println!("bench: stopped by the toolstack ({what}) before {}", bench.name);
                break;
            }
        }
        match (bench.run)() {
            Ok(row) => {
                let (stem, variant) = bench.name.rsplit_once('_').unwrap_or((bench.name, ""));
                let vs_bare = match bare {
                    Some((s, ns)) if s == stem && ns > 0.0 => {
                        alloc::format!(" ({:.2}x bare)", row.value / ns)
                    }
                    _ => alloc::string::String::new(),
                };
                if variant == "bare" {
                    bare = Some((stem, row.value));
                }
                println!(
                    "bench: {} {:.1} {} {}{vs_bare}",
                    bench.name, row.value, row.unit, row.detail
                )
            }
            Err(why) => println!("bench: {} - - {why}", bench.name),
        }
    }
    println!("bench: end");
}

/// Prints the bytes of one irq_disable and one save_fl site as boot left them, to show what
/// the patcher made of them (`fa` is `cli`; under Xen PV `65 c6 04 25 41 00 00 00 01` is
/// `movb $1, %gs:0x41`), since the image on disk holds only the indirect call.
fn show_patched_site() {
    let state = if patch::patched() { "patched" } else { "nopvpatch" };
    for (op, name) in [(pvops::Op::IrqDisable, "irq_disable"), (pvops::Op::SaveFl, "save_fl")] {
        let Some(site) = pvops::sites().iter().find(|s| s.op == op as u16) else { continue };
        match patch::read(site) {
            Ok(b) => println!("pvops: site {:#x} {name} ({state}): {b}", site.addr),
            Err(e) => println!("pvops: site {:#x} {name}: {e}", site.addr),
        }
    }
}

/// Nanoseconds per iteration of `f`: the median of five runs of `n / 5` iterations, so a
/// descheduled vCPU (common in an emulated rig) spoils one run, not the figure.
fn per_op(n: u64, mut f: impl FnMut()) -> f64 {
    const RUNS: usize = 5;
    let per_run = (n / RUNS as u64).max(1);
    let mut runs = [0f64; RUNS];
    for run in &mut runs {
        let t0 = pvops::clock_ns();
        for _ in 0..per_run {
            f();
        }
        *run = (pvops::clock_ns() - t0) as f64 / per_run as f64;
    }
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn row(value: f64, unit: &'static str, detail: alloc::string::String) -> Result<Row, &'static str> {
    Ok(Row { value, unit, detail })
}

/// How a pv_ops benchmark reaches the operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The instruction itself, natively (under Xen PV the kernel runs in ring 3).
    Bare,
    /// `call *slot(%rip)` through the op table, never patched.
    Indirect,
    /// `call rel32` to Xen PV's functions, as patched sites were before irq_disable and
    /// save_fl went inline (Xen PV only).
    Direct,
    /// The pv_ops call sites as boot patched them.
    Patched,
}

/// Refuses what this boot cannot measure; else describes the variant for `ops` (a pair
/// measured together).
fn via(
    via: Via,
    ops: [pvops::Op; 2],
    bare: &'static str,
) -> Result<alloc::string::String, &'static str> {
    let plan = |op| match pvpatch::plan(
        pvops::backend(),
        op,
        crate::arch::xen_common::vcpu_info_at_gs(),
    ) {
        pvpatch::Plan::Inline(_) => "inline",
        pvpatch::Plan::DirectCall => "direct call",
        pvpatch::Plan::Nop => "nop",
    };
    match via {
        Via::Bare if pvops::is_xen_pv() => Err("not in Xen PV's ring 3"),
        Via::Bare => Ok(bare.into()),
        Via::Indirect => Ok("call *slot(%rip)".into()),
        Via::Direct if !pvops::is_xen_pv() => Err("Xen PV only"),
        Via::Direct => Ok("call rel32".into()),
        Via::Patched if !patch::patched() => Err("nopvpatch"),
        Via::Patched => Ok(match (plan(ops[0]), plan(ops[1])) {
            (a, b) if a == b => alloc::format!("patched: {a}"),
            (a, b) => alloc::format!("patched: {a} + {b}"),
        }),
    }
}

fn irq_pair(v: Via) -> Result<Row, &'static str> {
    const N: u64 = 1_000_000;
    let detail = via(v, [pvops::Op::IrqDisable, pvops::Op::IrqEnable], "cli; sti")?;
    let ns = match v {
        Via::Bare => per_op(N, || {
            // SAFETY: natively we run in ring 0, and the pair leaves interrupts enabled as
            // the benchmarks found them.
            unsafe { core::arch::asm!("cli", "sti", options(nomem, nostack)) }
        }),
        Via::Indirect => per_op(N, || {
            pvops::indirect::irq_disable();
            pvops::indirect::irq_enable();
        }),
        Via::Direct => per_op(N, || {
            xen_pv::ops::direct::irq_disable();
            xen_pv::ops::direct::irq_enable();
        }),
        Via::Patched => per_op(N, || {
            pvops::irq_disable();
            pvops::irq_enable();
        }),
    };
    row(ns, "ns/pair", detail)
}

fn flags_pair(v: Via) -> Result<Row, &'static str> {
    const N: u64 = 1_000_000;
    let detail = via(v, [pvops::Op::SaveFl, pvops::Op::RestoreFl], "pushfq; pop; push; popfq")?;
    let ns = match v {
        Via::Bare => per_op(N, || {
            let flags: u64;
            // SAFETY: reads RFLAGS and writes the same value back, through a balanced stack.
            unsafe {
                core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags));
                core::arch::asm!("push {}", "popfq", in(reg) black_box(flags), options(nomem));
            }
        }),
        Via::Indirect => per_op(N, || {
            let flags = pvops::indirect::save_fl();
            pvops::indirect::restore_fl(black_box(flags));
        }),
        Via::Direct => per_op(N, || {
            let flags = crate::arch::xen_pv::ops::direct::save_fl();
            xen_pv::ops::direct::restore_fl(black_box(flags));
        }),
        Via::Patched => per_op(N, || {
            let flags = pvops::save_fl();
            pvops::restore_fl(black_box(flags));
        }),
    };
    row(ns, "ns/pair", detail)
}

fn cpuid(v: Via) -> Result<Row, &'static str> {
    // Under Xen every CPUID is a trap to the hypervisor's emulation.
    let n = if pvops::is_xen() { 20_000 } else { 200_000 };
    let detail = via(v, [pvops::Op::Cpuid; 2], "cpuid")?;
    let ns = match v {
        Via::Bare => per_op(n, || {
            black_box(cpu::cpuid_raw(black_box(0), 0));
        }),
        Via::Indirect => per_op(n, || {
            black_box(pvops::indirect::cpuid(black_box(0), 0));
        }),
        Via::Direct => return Err("the irq ops only"),
        Via::Patched => per_op(n, || {
            black_box(pvops::cpuid(black_box(0), 0));
        }),
    };
    row(ns, "ns/op", detail)
}

fn null_hypercall() -> Result<Row, &'static str> {
    if !pvops::is_xen() {
        return Err("needs Xen");
    }
    let ns = per_op(100_000, || {
        let _ = black_box(hypercall::ops::xen_version());
    });
    row(ns, "ns/call", "xen_version".into())
}

/// 64 scratch pages whose PTEs the mmu_update benchmarks rewrite.
struct Scratch {
    first_pfn: u64,
    ptes: [*mut u64; 64],
}

const SCRATCH_VA: u64 = 0xffff_c000_4000_0000;

impl Scratch {
    fn new() -> Result<Scratch, &'static str> {
        let first_pfn = mm::alloc_frames(64).map_err(|_| "no memory")?;
        let mut ptes = [core::ptr::null_mut(); 64];
        for (i, pte) in ptes.iter_mut().enumerate() {
            let va = SCRATCH_VA + i as u64 * PAGE_SIZE;
            // SAFETY: a scratch range only the benchmarks use; read-only aliases of our frames.
            unsafe { paging::map(va, first_pfn + i as u64, false) }.map_err(|_| "map failed")?;
            *pte = paging::entry(va, 1, false).map_err(|_| "no pte")?;
        }
        Ok(Scratch { first_pfn, ptes })
    }

    /// The update that sets or (when `flip`) clears the accessed bit of PTE `i`: a change
    /// Xen validates on its fast path, so the figures show what a hypercall costs rather
    /// than page reference counting.
    fn update(&self, i: usize, flip: bool) -> hypercall::abi::mmu_update {
        const ACCESSED: u64 = 1 << 5;
        let pte = xen_pv::direct_pte(self.first_pfn + i as u64, false);
        hypercall::abi::mmu_update {
            ptr: xen_pv::virt_to_machine(self.ptes[i] as u64)
                | hypercall::abi::MMU_NORMAL_PT_UPDATE as u64,
            val: if flip { pte & !ACCESSED } else { pte },
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for i in 0..64 {
            // SAFETY: the benchmark is over; nothing uses the scratch range.
            let _ = unsafe { paging::unmap(SCRATCH_VA + i * PAGE_SIZE) };
            let _ = mm::free_frame(self.first_pfn + i);
        }
    }
}

const MMU_ROUNDS: u64 = 200;

/// Rewrites the 64 scratch PTEs `MMU_ROUNDS` times with `round` (which returns whether
/// Xen accepted everything) and reports the time per round.
fn mmu_rounds(
    detail: &str,
    round: impl Fn([hypercall::abi::mmu_update; 64]) -> bool,
) -> Result<Row, &'static str> {
    if !pvops::is_xen_pv() {
        return Err("needs Xen PV page tables");
    }
    let s = Scratch::new()?;
    let mut flip = false;
    let mut ok = true;
    let ns = per_op(MMU_ROUNDS, || {
        flip = !flip;
        ok &= round(core::array::from_fn(|i| s.update(i, flip)));
    });
    if !ok {
        return Err("Xen refused an update");
    }
    row(ns / 1000.0, "us/64", detail.into())
}

fn mmu_single_round(updates: [hypercall::abi::mmu_update; 64]) -> bool {
    updates.iter().all(|u| {
        // SAFETY: rewrites a scratch PTE (see Scratch::update).
        let done = unsafe { hypercall::ops::mmu_update(core::slice::from_ref(u)) };
        done == Ok(1)
    })
}

fn mmu_multicall_round(updates: [hypercall::abi::mmu_update; 64]) -> bool {
    let mut batch = hypercall::multicall::Batch::<64>::new();
    let domid = u64::from(hypercall::abi::DOMID_SELF);
    for u in &updates {
        let args = [u as *const _ as u64, 1, 0, domid, 0, 0];
        // SAFETY: `updates` outlives the flush; each rewrites a scratch PTE.
        let _ = unsafe { batch.push(hypercall::abi::nr::MMU_UPDATE, args) };
    }
    batch.flush().is_ok()
}

fn mmu_batch_round(updates: [hypercall::abi::mmu_update; 64]) -> bool {
    // SAFETY: each update rewrites a scratch PTE.
    let done = unsafe { hypercall::ops::mmu_update(&updates) };
    done == Ok(64)
}

fn mmu_update_single() -> Result<Row, &'static str> {
    mmu_rounds("64 mmu_update hypercalls", mmu_single_round)
}

fn mmu_update_multicall() -> Result<Row, &'static str> {
    mmu_rounds("one multicall of 64 mmu_update entries", mmu_multicall_round)
}

fn mmu_update_batch() -> Result<Row, &'static str> {
    mmu_rounds("one mmu_update of 64 requests", mmu_batch_round)
}

/// Hypercalls one round of 64 updates issued, counted by the hypercall layer (every
/// hypercall passes through it) rather than assumed: under software emulation the time a
/// multicall saves is small (Xen's work per update dominates), the calls it saves are not.
fn mmu_hypercalls(
    round: fn([hypercall::abi::mmu_update; 64]) -> bool,
) -> Result<Row, &'static str> {
    if !pvops::is_xen_pv() {
        return Err("needs Xen PV page tables");
    }
    let s = Scratch::new()?;
    let mut calls = [0u64; 2];
    for (flip, calls) in calls.iter_mut().enumerate() {
        let updates = core::array::from_fn(|i| s.update(i, flip == 1));
        let before = hypercall::raw::count();
        if !round(updates) {
            return Err("Xen refused an update");
        }
        *calls = hypercall::raw::count() - before;
    }
    if calls[0] != calls[1] {
        return Err("the count differs between two rounds");
    }
    row(calls[0] as f64, "calls/64", "hypercalls counted for 64 PTE updates".into())
}

fn event_loopback_rtt() -> Result<Row, &'static str> {
    if !pvops::is_xen() {
        return Err("needs Xen");
    }
    let pair =
        crate::xen::evtchn::Loopback::new(true).map_err(|_| "cannot bind a loopback pair")?;
    let ns = per_op(10_000, || pair.round_trip());
    row(
        ns,
        "ns/rtt",
        alloc::format!("send a, handler b sends b, handler a ({})", crate::xen::evtchn::abi_name()),
    )
}

fn grant_copy() -> Result<Row, &'static str> {
    use grant::abi::{CopyTarget, GnttabCopy};
    use grant::DomId;
    if !pvops::is_xen() {
        return Err("needs Xen");
    }
    const BATCH: usize = 16;
    const ROUNDS: u64 = 256;
    let domid = DomId(hypercall::ops::own_domid().map_err(|_| "own domid")?);
    let src = mm::alloc_frame().map_err(|_| "no memory")?;
    let dst = mm::alloc_frames(BATCH as u64).map_err(|_| "no memory")?;
    let result = (|| {
        let gref = crate::xen::gnttab::grant_access(domid, crate::pvops::pfn_to_frame(src), true)
            .map_err(|_| "grant_access")?;
        let mut ops: [GnttabCopy; BATCH] = core::array::from_fn(|i| {
            GnttabCopy::new(
                CopyTarget::Grant { gref, domid: DomId::SELF, offset: 0 },
                CopyTarget::Frame {
                    gmfn: crate::pvops::pfn_to_frame(dst + i as u64),
                    domid: DomId::SELF,
                    offset: 0,
                },
                PAGE_SIZE as u16,
            )
        });
        let mut ok = true;
        let ns = per_op(ROUNDS, || {
            // SAFETY: the destination frames are ours and referenced by nothing.
            ok &= unsafe { grant::ops::copy(&mut ops) }.is_ok();
        });
        let _ = crate::xen::gnttab::end_access(gref);
        if !ok {
            return Err("GNTTABOP_copy failed");
        }
        let mib_s = (BATCH as f64 * PAGE_SIZE as f64 / (1 << 20) as f64) / (ns / 1e9);
        row(mib_s, "MiB/s", alloc::format!("{BATCH} x 4 KiB per GNTTABOP_copy"))
    })();
    let _ = mm::free_frame(src);
    for i in 0..BATCH as u64 {
        let _ = mm::free_frame(dst + i);
    }
    result
}

/// Bytes each block benchmark moves (on the disk `scratch=` names, which it overwrites),
/// and the region the random reads fall in: the Linux peer's fio rows move as much
/// (rig/linux-domu-init.sh).
const BLK_BYTES: u64 = 64 << 20;

fn with_scratch_disk(
    f: impl FnOnce(&mut crate::blk::Disk) -> Result<Row, &'static str>,
) -> Result<Row, &'static str> {
    if !pvops::is_xen() {
        return Err("needs Xen");
    }
    let Some(scratch) = crate::boot::options().scratch else {
        return Err("overwrites a disk: name one with scratch=xvdX");
    };
    if !crate::blk::wait_for_disk(scratch) {
        return Err("the scratch= disk never appeared");
    }
    let mut disk = crate::blk::connect(scratch).map_err(|_| "cannot connect the scratch disk")?;
    if disk.info().sectors * 512 < BLK_BYTES {
        let _ = crate::blk::close(disk);
        return Err("the scratch= disk is smaller than 64 MiB");
    }
    let row = f(&mut disk);
    let _ = crate::blk::close(disk);
    row
}

/// Sequential transfer of BLK_BYTES in requests of `size` bytes, one at a time.
fn blk_seq(write: bool, size: usize) -> Result<Row, &'static str> {
    use blkfront::BlockDevice;
    with_scratch_disk(|disk| {
        let mut buf = alloc::vec![0x5au8; size];
        let sectors = size as u64 / 512;
        let count = BLK_BYTES / size as u64;
        let t0 = pvops::clock_ns();
        for i in 0..count {
            let r = if write {
                disk.write(i * sectors, &buf)
            } else {
                disk.read(i * sectors, &mut buf)
            };
            r.map_err(|_| "I/O error")?;
        }
        if write {
            disk.flush().map_err(|_| "flush failed")?;
        }
        let s = (pvops::clock_ns() - t0) as f64 / 1e9;
        let what = if write { ", flush at the end" } else { "" };
        row(
            BLK_BYTES as f64 / (1 << 20) as f64 / s,
            "MiB/s",
            alloc::format!("{count} x {} KiB, one request in flight{what}", size >> 10),
        )
    })
}

/// Random reads: this many 4 KiB reads within the first BLK_BYTES.
const RAND_READS: usize = 16384;
const RAND_SEED: u64 = 0x5eed_b10c;

/// The random reads' byte offsets, and the line that names them: rig/blk-offsets.py makes
/// the same list (and line) for the Linux peer's fio, so both read the same places.
fn rand_offsets() -> (alloc::vec::Vec<u64>, alloc::string::String) {
    let mut rng = crate::selftest::XorShift(RAND_SEED);
    let offsets: alloc::vec::Vec<u64> =
        (0..RAND_READS).map(|_| rng.below(BLK_BYTES / 4096) * 4096).collect();
    let sum: u64 = offsets.iter().sum();
    let line = alloc::format!(
        "offsets: xorshift64 seed {RAND_SEED:#x}, {RAND_READS} reads of 4 KiB in the first {} MiB, first {},{},{} bytes, sum {sum}",
        BLK_BYTES >> 20,
        offsets[0],
        offsets[1],
        offsets[2]
    );
    (offsets, line)
}

/// The RAND_READS reads of [`rand_offsets`] with `depth` requests in flight.
fn blk_rand_read(depth: usize) -> Result<Row, &'static str> {
    use blkfront::Request;
    let (offsets, fingerprint) = rand_offsets();
    with_scratch_disk(|disk| {
        // A backend that stops answering ends the row; a slow one (16384 reads at QD1 take
        // half a minute under emulation) does not: the bound is per completion.
        let mut deadline = pvops::clock_ns() + crate::blk::TIMEOUT_NS;
        let (mut issued, mut done, mut in_flight) = (0usize, 0usize, 0usize);
        let t0 = pvops::clock_ns();
        while done < RAND_READS {
            while in_flight < depth && issued < RAND_READS {
                let sector = offsets[issued] / 512;
                disk.submit(Request::Read { sector, len: 4096 }).map_err(|_| "submit failed")?;
                issued += 1;
                in_flight += 1;
            }
            disk.poll();
            while let Some(c) = disk.take_completion() {
                c.result.map_err(|_| "I/O error")?;
                done += 1;
                in_flight -= 1;
                deadline = pvops::clock_ns() + crate::blk::TIMEOUT_NS;
            }
            if done < RAND_READS && in_flight == depth.min(RAND_READS - done) {
                crate::xen::frontend::wait(disk.port(), deadline)
                    .then_some(())
                    .ok_or("timed out")?;
            }
        }
        let s = (pvops::clock_ns() - t0) as f64 / 1e9;
        row(RAND_READS as f64 / s, "IOPS", alloc::format!("queue depth {depth}; {fingerprint}"))
    })
}

/// Bytes the verification writes and reads back.
const VERIFY_BYTES: u64 = 16 << 20;
const VERIFY_SEED: u64 = 0xb10c_f00d;

/// Not a timing: checks that what the benchmarks' paths write is what they read back, at
/// the right place. Every sector is written with app=blkfill's position-dependent
/// pattern in 64 KiB requests, flushed, read back the same way and compared. The row's
/// value is how much was verified (the Linux peer's fio checks its own headers likewise).
fn blk_verify() -> Result<Row, &'static str> {
    use blkfront::BlockDevice;
    const CHUNK: usize = 64 << 10;
    const SECTORS: u64 = CHUNK as u64 / 512;
    let fill = |first: u64, buf: &mut [u8]| {
        for (i, sector) in buf.chunks_exact_mut(512).enumerate() {
            let mut s = [0u8; 512];
            crate::apps::pattern::fill_sector(VERIFY_SEED, first + i as u64, &mut s);
            sector.copy_from_slice(&s);
        }
    };
    with_scratch_disk(|disk| {
        let mut buf = alloc::vec![0u8; CHUNK];
        let chunks = VERIFY_BYTES / CHUNK as u64;
        for i in 0..chunks {
            fill(i * SECTORS, &mut buf);
            disk.write(i * SECTORS, &buf).map_err(|_| "write error")?;
        }
        disk.flush().map_err(|_| "flush failed")?;
        let mut want = alloc::vec![0u8; CHUNK];
        for i in 0..chunks {
            disk.read(i * SECTORS, &mut buf).map_err(|_| "read error")?;
            fill(i * SECTORS, &mut want);
            if buf != want {
                return Err("read back differs from what was written");
            }
        }
        row(
            (VERIFY_BYTES >> 20) as f64,
            "MiB",
            alloc::format!(
                "written in {} x 64 KiB with a per-sector pattern, flushed, read back, compared",
                chunks
            ),
        )
    })
}

/// A call to parked vCPU 1 and its answer (`smp::on`): the wake (under Xen a kick of its
/// port, natively an IPI), the call, and the wait for it to finish.
fn smp_call_roundtrip() -> Result<Row, &'static str> {
    let Some(cpu) = crate::smp::serving().nth(1) else { return Err("needs 2 vCPUs in service") };
    let ns = per_op(2_000, || {
        let _ = black_box(crate::smp::on(cpu, || black_box(1)));
    });
    let how = if pvops::is_xen() { "kick of a polling vCPU" } else { "LAPIC IPI" };
    row(ns / 1000.0, "us/call", alloc::format!("smp::on(cpu {cpu}), {how}, median of 5"))
}

/// Bytes each vCPU hashes per run of [`smp_sha256`].
const SHA_BYTES: usize = 4 << 20;

/// MiB/s of SHA-256 on `cpus` vCPUs at once, each over a buffer of its own (a CPU-bound job
/// that shares nothing): the median of five runs, each after a run on one vCPU, so that the
/// speedup compares medians of runs taken in turn.
fn smp_sha256(cpus: usize) -> Result<Row, &'static str> {
    if crate::smp::serving().count() < cpus {
        return Err(match cpus {
            2 => "needs 2 vCPUs in service",
            _ => "needs 4 vCPUs in service",
        });
    }
    let buffers: alloc::vec::Vec<alloc::vec::Vec<u8>> =
        (0..cpus).map(|c| alloc::vec![c as u8 ^ 0xa5; 64 << 10]).collect();
    let mib_s = |n: usize| -> Result<f64, &'static str> {
        let t0 = pvops::clock_ns();
        let hashed = crate::smp::on_first(n - 1, |cpu| {
            let slot = crate::smp::serving().position(|c| c == cpu).unwrap_or(0);
            let mut h = crate::sha256::Sha256::new();
            for _ in 0..SHA_BYTES / buffers[slot].len() {
                h.update(&buffers[slot]);
            }
            black_box(h.finalize())
        });
        hashed.map_err(|_| "a vCPU did not answer")?;
        let s = (pvops::clock_ns() - t0) as f64 / 1e9;
        Ok((n * SHA_BYTES) as f64 / s / (1 << 20) as f64)
    };
    let (mut one, mut many) = ([0f64; 5], [0f64; 5]);
    for round in 0..5 {
        one[round] = mib_s(1)?;
        many[round] = if cpus == 1 { one[round] } else { mib_s(cpus)? };
    }
    one.sort_by(f64::total_cmp);
    many.sort_by(f64::total_cmp);
    let speedup = if cpus > 1 {
        alloc::format!(", {:.2}x one vCPU ({:.1} MiB/s, in turn)", many[2] / one[2], one[2])
    } else {
        alloc::string::String::new()
    };
    row(
        many[2],
        "MiB/s",
        alloc::format!(
            "{cpus} vCPU(s) at once, 4 MiB each, median of 5 (spread {:.1}-{:.1}){speedup}",
            many[0],
            many[4]
        ),
    )
}
