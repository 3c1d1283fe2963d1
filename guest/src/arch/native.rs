//! Native platform (QEMU PVH boot): IDT, legacy PIC, PIT, CMOS RTC, and QEMU's
//! isa-debug-exit for shutdown with a status.

pub mod ops;
pub mod smp;

use core::arch::asm;
use x86_64::instructions::port::Port;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04`: writing v exits with (v << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Exit statuses 33 (pass) and 35 (fail) once QEMU shifts them.
pub const DEBUG_EXIT_PASS: u32 = 0x10;
pub const DEBUG_EXIT_FAIL: u32 = 0x11;

/// Port I/O for the devices of this module (and Xen's debug port under PVH).
///
/// # Safety
/// We run in ring 0, and `port` belongs to a device this kernel drives.
pub unsafe fn outb(port: u16, val: u8) {
    // SAFETY: forwarded contract; natively we run in ring 0.
    unsafe { Port::<u8>::new(port).write(val) }
}

/// # Safety
/// As for [`outb`].
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: forwarded contract.
    unsafe { Port::<u8>::new(port).read() }
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    kind: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const KERNEL_CS: u16 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8e;

/// The CPU exceptions, the legacy PIC's IRQs, Xen PVH's event callback vector, and the
/// local APIC's wake, spurious and timer vectors: one stub each in entry.S.
pub(crate) const IDT_VECTORS: usize = 51;

static mut IDT: [Gate; IDT_VECTORS] = [Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    kind: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; IDT_VECTORS];

fn gate(addr: u64) -> Gate {
    Gate {
        offset_low: addr as u16,
        selector: KERNEL_CS,
        ist: 0,
        kind: INTERRUPT_GATE,
        offset_mid: (addr >> 16) as u16,
        offset_high: (addr >> 32) as u32,
        reserved: 0,
    }
}

/// The exceptions that must be reported even when the kernel stack is unusable (an overflow
/// into the guard page makes the #PF a #DF), or that can arrive at any instruction: they run
/// on the fault stack, IST slot 1.
const FAULT_STACK_VECTORS: [usize; 3] = [2, 8, 18];

static TSS: spin::Once<TaskStateSegment> = spin::Once::new();
static GDT: spin::Once<(GlobalDescriptorTable, SegmentSelector)> = spin::Once::new();

/// Loads a GDT with a TSS whose IST slot 1 is the fault stack. The code and data selectors
/// stay those of the boot GDT (0x08, 0x10), so the segment registers need no reload.
fn init_fault_stack() {
    extern "C" {
        static fault_stack_top: u8;
    }
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let top = core::ptr::addr_of!(fault_stack_top) as u64;
        tss.interrupt_stack_table[0] = x86_64::VirtAddr::new(top);
        tss
    });
    let (gdt, tss_selector) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        assert!(code.0 == KERNEL_CS && data.0 == 0x10, "GDT layout differs from the boot GDT");
        let tss_selector = gdt.append(Descriptor::tss_segment(tss));
        (gdt, tss_selector)
    });
    gdt.load();
    // SAFETY: the selector names the TSS descriptor of the GDT just loaded, which lives
    // for good, and the TSS is loaded once.
    unsafe { x86_64::instructions::tables::load_tss(*tss_selector) };
}

/// Points every CPU exception and legacy PIC vector at its entry stub, and `extra`'s
/// vector at its handler; loads the IDT (and the TSS with the fault stack).
pub fn init_idt(extra: Option<(u8, u64)>) {
    init_fault_stack();
    let stubs = super::traps::stubs(false);
    // SAFETY: boot runs on one CPU with interrupts off; nothing else touches the IDT.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (slot, &addr) in idt.iter_mut().zip(stubs.iter()) {
        *slot = gate(addr);
    }
    for v in FAULT_STACK_VECTORS {
        idt[v].ist = 1;
    }
    if let Some((vector, addr)) = extra {
        match idt.get_mut(usize::from(vector)) {
            Some(slot) => *slot = gate(addr),
            None => panic!("vector {vector:#x} is beyond the IDT"),
        }
    }
    load_idt();
}

/// Loads the IDT [`init_idt`] filled (on any CPU).
fn load_idt() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let base = core::ptr::addr_of!(IDT);
    let ptr = Pointer {
        limit: (core::mem::size_of::<[Gate; IDT_VECTORS]>() - 1) as u16,
        base: base as u64,
    };
    // SAFETY: the IDT is static and every gate points at a stub that handles its vector
    // (init_idt filled it before any other CPU started).
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}

/// A secondary CPU's tables, first thing on it: a GDT of its own with the boot GDT's code
/// and data selectors (a TSS is busy once loaded, so each CPU needs one) and a TSS whose IST
/// slot 1 is `fault_stack_top`, the segment registers reloaded from it (the CPU may have
/// started with other selectors), and the shared IDT.
pub fn init_secondary_cpu(fault_stack_top: u64) {
    use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[0] = x86_64::VirtAddr::new(fault_stack_top);
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let gdt = alloc::boxed::Box::leak(alloc::boxed::Box::new(GlobalDescriptorTable::new()));
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    let gdt: &'static GlobalDescriptorTable = gdt;
    gdt.load();
    // SAFETY: the selectors name this GDT's flat code and data descriptors and its TSS,
    // all live for good; the TSS is loaded once, on this CPU.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        x86_64::instructions::tables::load_tss(tss_selector);
    }
    load_idt();
}

/// Pages of a secondary vCPU's fault stack (#DF, NMI, #MC).
const FAULT_STACK_PAGES: u64 = 4;

/// A secondary CPU, natively or a PVH vCPU, once in long mode at the link address: its own
/// GDT, TSS and fault stack, the shared IDT, its per-CPU base; then the common secondary loop.
pub fn secondary_start(cpu: u64, percpu: u64) -> ! {
    use core::sync::atomic::{AtomicU64, Ordering};
    // Kept for a start after a resume (the GDT and TSS are made anew: the old TSS is busy).
    static FAULT_STACKS: [AtomicU64; crate::smp::MAX_CPUS] =
        [const { AtomicU64::new(0) }; crate::smp::MAX_CPUS];
    let kept = &FAULT_STACKS[cpu as usize % crate::smp::MAX_CPUS];
    let fault_stack = match kept.load(Ordering::Relaxed) {
        0 => match crate::mm::alloc_zeroed_frames(FAULT_STACK_PAGES) {
            Ok(pfn) => crate::arch::pfn_to_virt(pfn) + FAULT_STACK_PAGES * crate::arch::PAGE_SIZE,
            Err(_) => {
                crate::console::emergency(format_args!("smp: no fault stack for vcpu {cpu}\n"));
                crate::pvops::shutdown(crate::pvops::Halt::Failure)
            }
        },
        top => top,
    };
    kept.store(fault_stack, Ordering::Relaxed);
    init_secondary_cpu(fault_stack);
    // SAFETY: the boot CPU made `percpu` this vCPU's area before starting it.
    unsafe { crate::pvops::set_percpu_base(percpu) };
    crate::smp::secondary_main(cpu as usize)
}

/// Drops the identity map of the first GiB that the 32-bit entry needed to switch to long
/// mode: from now on only the direct map at KERNEL_BASE reaches physical memory, and a null
/// pointer faults.
pub fn drop_identity_map() {
    let pml4 = crate::arch::pfn_to_virt(crate::pvops::read_cr3()) as *mut u64;
    // SAFETY: slot 0 holds only the identity map, which nothing uses once we run at
    // KERNEL_BASE (the loader's data is read through the direct map); rewriting CR3 with
    // its own value flushes the stale translations.
    unsafe {
        crate::pvops::set_pte(pml4, 0);
        asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags));
    }
}

/// Moves the legacy PIC's vectors off the CPU exceptions (the BIOS leaves IRQ 0 on vector 8,
/// #DF) and masks every line: nothing native raises interrupts yet.
pub fn init_pic() {
    // SAFETY: ports 0x20/0x21/0xa0/0xa1 are the two 8259s; ICW1-4 then the masks.
    unsafe {
        outb(0x20, 0x11);
        outb(0xa0, 0x11);
        outb(0x21, 0x20);
        outb(0xa1, 0x28);
        outb(0x21, 4);
        outb(0xa1, 2);
        outb(0x21, 1);
        outb(0xa1, 1);
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}

/// Ends the QEMU run with a status the test harness reads (halts if the device is absent),
/// or resets the machine through the keyboard controller.
pub extern "C" fn shutdown(how: crate::pvops::Halt) -> ! {
    use crate::pvops::Halt;
    let code = match how {
        Halt::Poweroff => DEBUG_EXIT_PASS,
        Halt::Failure => DEBUG_EXIT_FAIL,
        Halt::Reboot => {
            // SAFETY: 0x64 is the 8042's command port; 0xfe pulses the CPU reset line.
            unsafe { outb(0x64, 0xfe) };
            DEBUG_EXIT_FAIL
        }
    };
    // SAFETY: isa-debug-exit ignores nothing and exits; on a machine without it the port is
    // unassigned and the write is dropped.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code) };
    loop {
        // SAFETY: parking the CPU for good with interrupts off.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Reads a CMOS RTC register.
fn cmos(reg: u8) -> u8 {
    // SAFETY: 0x70/0x71 are the CMOS index/data ports; bit 7 of the index keeps NMI masked.
    unsafe {
        outb(0x70, 0x80 | reg);
        inb(0x71)
    }
}

/// The RTC's seconds counter (BCD or binary, as the RTC is configured: only changes matter).
pub fn rtc_seconds() -> u8 {
    // Register A bit 7: an update is in progress and the time registers are unstable.
    while cmos(0x0a) & 0x80 != 0 {
        core::hint::spin_loop();
    }
    cmos(0x00)
}

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// Starts PIT channel 0 counting `ticks` down once (mode 0): IRQ 0 when it reaches zero.
pub fn pit_one_shot(ticks: u16) {
    // SAFETY: 0x43 (mode) and 0x40 (channel 0 data) drive the PIT's channel 0, which only
    // the timer code uses.
    unsafe {
        outb(0x43, 0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
        outb(0x40, ticks as u8);
        outb(0x40, (ticks >> 8) as u8);
    }
}

/// The timer interrupt source: PIT channel 0 on IRQ 0. The firmware leaves it in periodic
/// mode; one long one-shot count replaces that before the line is unmasked.
pub fn init_timer_irq() {
    pit_one_shot(u16::MAX);
    // SAFETY: 0x21 is the master PIC's mask register; clearing bit 0 unmasks IRQ 0 only.
    unsafe { outb(0x21, inb(0x21) & !1) };
}

/// First vector of the remapped legacy PIC's 16 IRQs.
pub const IRQ_BASE: u64 = 0x20;

/// A legacy PIC interrupt (vectors 0x20..0x2f), with interrupts disabled.
pub fn interrupt(irq: u8) {
    // SAFETY: 0x20/0xa0 are the PICs' command ports: OCW3 0x0b selects the in-service
    // register, 0x20 is a non-specific end of interrupt.
    unsafe {
        if irq == 7 || irq == 15 {
            // A spurious interrupt (the line dropped before it was acknowledged) is not in
            // service and must not be acknowledged, except to the master for the slave's.
            let cmd = if irq == 7 { 0x20 } else { 0xa0 };
            outb(cmd, 0x0b);
            if inb(cmd) & 0x80 == 0 {
                if irq == 15 {
                    outb(0x20, 0x20);
                }
                return;
            }
        }
        if irq >= 8 {
            outb(0xa0, 0x20);
        }
        outb(0x20, 0x20);
    }
    match irq {
        0 => crate::time::expire(),
        _ => log::warn!("unexpected IRQ {irq}"),
    }
}

/// Busy-waits `ticks` PIT ticks on channel 2 (gate-controlled, no interrupt), the classic
/// calibration source, calling `at_start`/returning when the count begins and ends.
pub fn pit_wait<T>(ticks: u16, at_start: impl FnOnce() -> T) -> T {
    // SAFETY: 0x61 (speaker/gate), 0x42 (channel 2 data), 0x43 (mode) drive PIT channel 2,
    // which nothing else uses.
    unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) & !0x01); // speaker off, gate low
        outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        outb(0x42, ticks as u8);
        outb(0x42, (ticks >> 8) as u8);
        let v = at_start();
        outb(0x61, (inb(0x61) & !0x02) | 0x01); // gate high: counting starts
        while inb(0x61) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(0x61, gate);
        v
    }
}
