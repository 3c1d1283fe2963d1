//! Natively, the other CPUs: the ACPI MADT names them (by local APIC id), INIT-SIPI-SIPI
//! starts each at the real-mode trampoline of entry.S, copied below 1 MiB, and a fixed IPI
//! through the local APIC wakes one that parked with `hlt`.

use crate::arch::{pfn_to_virt, DIRECT_MAP_PAGES, KERNEL_BASE, PAGE_SIZE};
use crate::pvops::{self, CpuStart};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The IPI that wakes a parked CPU, and the local APIC's spurious vector (entry.S has stubs
/// for both; the PVH callback uses 0x30 under Xen, where none of this runs).
pub const WAKE_VECTOR: u64 = 0x30;
pub const SPURIOUS_VECTOR: u64 = 0x31;
/// Each CPU's local APIC timer (see [`arm_timer`]).
pub const TIMER_VECTOR: u64 = 0x32;

/// Where the trampoline is copied: free low RAM once boot read what the loader left there;
/// page aligned, since the SIPI's vector is its page number.
const AP_TRAMPOLINE: u64 = 0x8000;

/// The local APIC's register page, in a window of its own.
const LAPIC_VA: u64 = 0xffff_c300_0000_0000;
const LAPIC_EOI: u64 = 0xb0;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_ICR_LOW: u64 = 0x300;
const LAPIC_ICR_HIGH: u64 = 0x310;
const ICR_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 5 << 8;
const ICR_STARTUP: u32 = 6 << 8;
const SVR_ENABLE: u32 = 1 << 8;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INITIAL: u64 = 0x380;
const LAPIC_TIMER_DIVIDE: u64 = 0x3e0;
/// Divide configuration 0b1011: the bus clock itself.
const TIMER_DIVIDE_BY_1: u32 = 0b1011;

/// CPUs the MADT names (0: not looked yet), and each one's local APIC id, the boot CPU's
/// first.
static CPUS: AtomicUsize = AtomicUsize::new(0);
static APIC_IDS: [AtomicU32; crate::smp::MAX_CPUS] =
    [const { AtomicU32::new(0) }; crate::smp::MAX_CPUS];

extern "C" {
    static ap_trampoline: u8;
    static ap_trampoline_end: u8;
    static ap_cr3: u8;
    static ap_efer: u8;
    static ap_target: u8;
    static ap_stack: u8;
    static ap_cpu: u8;
    static ap_percpu: u8;
    static boot_pdpt_low: u8;
    fn ap_start64();
}

/// Physical memory below 2 GiB, through the direct map.
fn phys(paddr: u64, len: u64) -> Option<&'static [u8]> {
    if paddr.checked_add(len)? > DIRECT_MAP_PAGES * PAGE_SIZE {
        return None;
    }
    // SAFETY: the direct map covers it (checked above); firmware tables are RAM we read only,
    // and nothing writes them.
    Some(unsafe { core::slice::from_raw_parts((KERNEL_BASE + paddr) as *const u8, len as usize) })
}

fn sum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

/// The RSDP: where the loader said (QEMU's PVH loader does), else the BIOS area's scan.
fn rsdp() -> Option<&'static [u8]> {
    let valid = |at: u64| phys(at, 20).filter(|r| &r[..8] == b"RSD PTR " && sum_ok(r));
    let said = crate::boot::pvh::boot_info().map_or(0, |b| b.rsdp_paddr);
    if said != 0 {
        if let Some(r) = valid(said) {
            return phys(said, 36).filter(|_| r[15] >= 2).or(Some(r));
        }
    }
    (0xe0000..0x100000).step_by(16).find_map(valid)
}

/// A system description table at `paddr`, checked (length and checksum).
fn table(paddr: u64) -> Option<&'static [u8]> {
    let head = phys(paddr, 36)?;
    let len = u64::from(u32_at(head, 4));
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    phys(paddr, len).filter(|t| sum_ok(t))
}

/// The MADT, through the XSDT (ACPI 2) or the RSDT.
fn madt() -> Option<&'static [u8]> {
    let r = rsdp()?;
    let (root, entry) = if r.len() >= 36 && r[15] >= 2 {
        (table(u64::from_le_bytes(r[24..32].try_into().ok()?))?, 8)
    } else {
        (table(u64::from(u32_at(r, 16)))?, 4)
    };
    root[36..].chunks_exact(entry).find_map(|e| {
        let at = if entry == 8 {
            u64::from_le_bytes(e.try_into().ok()?)
        } else {
            u64::from(u32_at(e, 0))
        };
        table(at).filter(|t| &t[..4] == b"APIC")
    })
}

/// The CPUs the MADT names, the boot CPU first (by its initial APIC id), then the other
/// enabled local APICs in the table's order. One if there is no MADT.
fn probe() -> usize {
    let known = CPUS.load(Ordering::Acquire);
    if known != 0 {
        return known;
    }
    let boot_id = crate::arch::cpu::cpuid_raw(1, 0).ebx >> 24;
    APIC_IDS[0].store(boot_id, Ordering::Relaxed);
    let mut n = 1;
    match madt() {
        Some(m) => {
            let mut at = 44;
            while at + 2 <= m.len() && n < crate::smp::MAX_CPUS {
                let (kind, len) = (m[at], usize::from(m[at + 1]));
                if len < 2 || at + len > m.len() {
                    log::warn!("smp: MADT entry at {at} runs past the table: the rest ignored");
                    break;
                }
                // Processor local APIC: [2] ACPI id, [3] APIC id, [4..8] flags (bit 0: enabled).
                if kind == 0 && len >= 8 && u32_at(m, at + 4) & 1 != 0 {
                    let id = u32::from(m[at + 3]);
                    if id != boot_id {
                        APIC_IDS[n].store(id, Ordering::Relaxed);
                        n += 1;
                    }
                }
                at += len;
            }
        }
        None => log::warn!("smp: no ACPI MADT: the boot CPU alone runs"),
    }
    CPUS.store(n, Ordering::Release);
    n
}

pub extern "C" fn cpu_count() -> u32 {
    probe() as u32
}

/// Maps the local APIC's registers (once; the base from IA32_APIC_BASE).
fn lapic() -> Result<(), i64> {
    static MAPPED: spin::Once<Result<(), i64>> = spin::Once::new();
    *MAPPED.call_once(|| {
        // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC (all x86_64 ones);
        // reading it has no side effects.
        let base = unsafe { x86_64::registers::model_specific::Msr::new(0x1b).read() };
        let frame = (base & 0x000f_ffff_ffff_f000) / PAGE_SIZE;
        // SAFETY: the local APIC's page, in a window nothing else uses.
        unsafe { crate::mm::paging::map_mmio(LAPIC_VA, frame) }
            .map_err(|_| -(hypercall::Errno::ENOMEM.0 as i64))
    })
}

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: `lapic` mapped the register page before any CPU but the boot one runs, and
    // every caller runs after it; a register is written with one aligned 32-bit store.
    unsafe { ((LAPIC_VA + reg) as *mut u32).write_volatile(value) }
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as for `lapic_write`.
    unsafe { ((LAPIC_VA + reg) as *const u32).read_volatile() }
}

/// Sends an IPI (`command`: delivery mode and vector) to the CPU with local APIC id `id`.
fn send_ipi(id: u32, command: u32) {
    let _one = IPI.lock();
    lapic_write(LAPIC_ICR_HIGH, id << 24);
    lapic_write(LAPIC_ICR_LOW, command);
    while lapic_read(LAPIC_ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// The ICR is one register pair per CPU, but the calls come from the boot CPU only: the lock
/// keeps that true of a handler too.
static IPI: crate::sync::IrqMutex<()> = crate::sync::IrqMutex::new(());

fn delay_us(us: u64) {
    let until = pvops::clock_ns() + us * 1000;
    while pvops::clock_ns() < until {
        core::hint::spin_loop();
    }
}

/// The byte at `sym` in the trampoline's copy at AP_TRAMPOLINE.
fn slot(sym: *const u8) -> *mut u64 {
    let start = core::ptr::addr_of!(ap_trampoline) as u64;
    (KERNEL_BASE + AP_TRAMPOLINE + (sym as u64 - start)) as *mut u64
}

/// The boot identity map's first-level table, which pml4[0] names while a CPU starts.
fn pml4() -> *mut u64 {
    pfn_to_virt(pvops::read_cr3()) as *mut u64
}

/// Starts `cpu` (INIT, then two SIPIs at the trampoline) on `start`'s stack and area.
///
/// # Safety
/// As for `pvops::start_cpu`; and no other CPU is starting.
pub unsafe extern "C" fn start_cpu(cpu: u32, start: *const CpuStart) -> i64 {
    let cpu = cpu as usize;
    if cpu == 0 || cpu >= probe() {
        return -(hypercall::Errno::ENOENT.0 as i64);
    }
    if let Err(e) = lapic() {
        return e;
    }
    // SAFETY: the caller passes a valid CpuStart.
    let start = unsafe { start.read() };
    // entry.S's symbols: only their addresses, and the bytes between the first two, are used.
    let from = core::ptr::addr_of!(ap_trampoline);
    let len = core::ptr::addr_of!(ap_trampoline_end) as usize - from as usize;
    let pdpt_low = core::ptr::addr_of!(boot_pdpt_low) as u64 - KERNEL_BASE;
    if len > PAGE_SIZE as usize {
        return -(hypercall::Errno::EINVAL.0 as i64);
    }
    // SAFETY: AP_TRAMPOLINE's page is low RAM nothing of ours uses (boot read the loader's
    // data before), reached through the direct map; the copy and its slots are written
    // before the SIPI, which the CPU cannot see before (the IPI is a serializing MMIO store).
    unsafe {
        core::ptr::copy_nonoverlapping(from, (KERNEL_BASE + AP_TRAMPOLINE) as *mut u8, len);
        slot(core::ptr::addr_of!(ap_cr3)).write_volatile(pvops::read_cr3() * PAGE_SIZE);
        // LMA (bit 10) is the CPU's to set.
        slot(core::ptr::addr_of!(ap_efer))
            .write_volatile(x86_64::registers::model_specific::Efer::read_raw() & !(1 << 10));
        slot(core::ptr::addr_of!(ap_target)).write_volatile(ap_start64 as *const () as u64);
        // As if called: the return address slot (zero) sits at the top.
        slot(core::ptr::addr_of!(ap_stack)).write_volatile(start.stack_top - 8);
        slot(core::ptr::addr_of!(ap_cpu)).write_volatile(cpu as u64);
        slot(core::ptr::addr_of!(ap_percpu)).write_volatile(start.percpu);
        // The identity map of low memory, for the trampoline's switch to long mode; the
        // CPU drops it again once at the link address (native_secondary_entry).
        pvops::set_pte(pml4(), pdpt_low | 3);
    }
    let id = APIC_IDS[cpu].load(Ordering::Relaxed);
    send_ipi(id, ICR_INIT | ICR_ASSERT);
    delay_us(10_000);
    for _ in 0..2 {
        send_ipi(id, ICR_STARTUP | ICR_ASSERT | (AP_TRAMPOLINE / PAGE_SIZE) as u32);
        delay_us(200);
    }
    0
}

/// Parks the calling CPU until an interrupt (the wake IPI) comes: one that came while it
/// ran with interrupts off waits in the local APIC and ends the `hlt` at once, so no wake is
/// lost and a parked CPU can always be posted to.
pub extern "C" fn park_cpu(_: u32) {
    // SAFETY: `sti; hlt` as one sequence (the interrupt shadow of sti covers hlt), then
    // interrupts off again: the secondary loop runs with them off.
    unsafe { core::arch::asm!("sti; hlt; cli", options(nomem, nostack)) };
}

pub extern "C" fn wake_cpu(cpu: u32) {
    if let Some(id) = APIC_IDS.get(cpu as usize) {
        send_ipi(id.load(Ordering::Relaxed), ICR_ASSERT | WAKE_VECTOR as u32);
    }
}

/// See [`park_cpu`]: a CPU may be posted to whenever.
pub extern "C" fn cpu_parked(_: u32) -> bool {
    true
}

/// The wake IPI's handler: nothing to do but end the interrupt.
pub fn woken() {
    lapic_write(LAPIC_EOI, 0);
}

/// Local APIC timer interrupts taken on each CPU.
static TIMER_FIRED: [AtomicU32; crate::smp::MAX_CPUS] =
    [const { AtomicU32::new(0) }; crate::smp::MAX_CPUS];

/// Arms the calling CPU's local APIC timer (one-shot, [`TIMER_VECTOR`]) to fire after
/// `ticks` of the bus clock; false if the local APIC cannot be mapped. The interrupt waits
/// for the CPU to enable them.
pub fn arm_timer(ticks: u32) -> bool {
    if lapic().is_err() {
        return false;
    }
    lapic_write(LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR as u32);
    lapic_write(LAPIC_TIMER_INITIAL, ticks.max(1));
    true
}

/// Timer interrupts the calling CPU took so far.
pub fn timer_interrupts() -> u32 {
    TIMER_FIRED[crate::smp::current()].load(Ordering::SeqCst)
}

/// The timer interrupt's handler: counts it for the CPU it ran on.
pub fn timer_fired() {
    TIMER_FIRED[crate::smp::current()].fetch_add(1, Ordering::SeqCst);
    lapic_write(LAPIC_EOI, 0);
}

/// Where ap_start64 (entry.S) lands: the identity map goes again, the local APIC takes
/// fixed interrupts (the wake IPI), then as every secondary CPU.
#[no_mangle]
extern "C" fn native_secondary_entry(cpu: u64, percpu: u64) -> ! {
    // SAFETY: we run at the link address; nothing uses the low identity map now, and the
    // CR3 reload flushes it from this CPU (the boot CPU never used it).
    unsafe {
        pvops::set_pte(pml4(), 0);
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
    lapic_write(LAPIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR as u32);
    super::secondary_start(cpu, percpu)
}
