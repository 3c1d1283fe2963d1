//! The native platform behind the PVH entry: QEMU's `-kernel`, bare (emulated) hardware.

use super::{kernel_main, pvh};
use crate::arch::native;
use crate::pvops::{self, Backend};

pub fn start(start_info_paddr: u64) -> ! {
    // SAFETY: first thing at boot, one CPU, and no Xen CPUID leaves: bare hardware.
    unsafe { pvops::install(Backend::Native, crate::arch::native::ops::OPS) };
    crate::smp::init_boot_cpu();
    native::init_pic();
    native::init_idt(None);
    native::drop_identity_map();
    crate::console::init_native();

    let si = pvh::read_start_info(start_info_paddr).unwrap_or_else(|why| panic!("{why}"));
    let options = super::options();
    crate::console::init_logger(options.log);

    let tsc_hz = crate::time::native::calibrate();
    native::init_timer_irq();
    log::info!("native boot: TSC {}.{:03} MHz", tsc_hz / 1_000_000, tsc_hz / 1000 % 1000);
    if let Err(why) = pvh::init_memory(&si) {
        panic!("{why}");
    }
    kernel_main(options)
}
