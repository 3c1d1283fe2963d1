//! The Xen PVH backend: the kernel runs in ring 0 of an HVM container with its own page
//! tables (second-stage translation is Xen's), so the cpu, irq and mmu ops are the native
//! ones; time, console and shutdown are Xen's services.

use crate::pvops::PvOps;

pub const OPS: PvOps = PvOps {
    time: crate::arch::xen_pv::ops::OPS.time,
    console: crate::arch::xen_pv::ops::OPS.console,
    shutdown: crate::arch::xen_pv::ops::OPS.shutdown,
    ..crate::arch::native::ops::OPS
};
