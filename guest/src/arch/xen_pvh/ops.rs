//! The Xen PVH backend: the kernel runs in ring 0 of an HVM container with its own page
//! tables (second-stage translation is Xen's), so the cpu, irq and mmu ops are the native
//! ones; time, console and shutdown are Xen's services.

use crate::arch::xen_common;
use crate::pvops::{PvOps, SmpOps};

pub const OPS: PvOps = PvOps {
    smp: SmpOps {
        cpu_count: xen_common::cpu_count,
        start_cpu: crate::arch::xen_pvh::start_cpu,
        park_cpu: xen_common::park_cpu,
        wake_cpu: xen_common::wake_cpu,
        cpu_parked: xen_common::cpu_parked,
        set_percpu_base: crate::arch::native::ops::OPS.smp.set_percpu_base,
    },
    time: crate::arch::xen_pv::ops::OPS.time,
    console: crate::arch::xen_pv::ops::OPS.console,
    shutdown: crate::arch::xen_pv::ops::OPS.shutdown,
    ..crate::arch::native::ops::OPS
};
