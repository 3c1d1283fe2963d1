//! The Xen PVH backend: the kernel runs in ring 0 of an HVM container with its own page
//! tables (second-stage translation is Xen's), so the cpu, irq and mmu ops are the native
//! ones; time, console and shutdown are Xen's services.

use super::PvOps;

pub const OPS: PvOps = PvOps {
    time: super::xen::OPS.time,
    console: super::xen::OPS.console,
    shutdown: super::xen::OPS.shutdown,
    ..super::native::OPS
};
