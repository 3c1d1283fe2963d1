//! Xen ABI types and constants: re-exported from `xen-sys` where it has them, defined here
//! (from Xen 4.17's public headers) where it does not. Layouts are asserted at build time.

use core::mem::{offset_of, size_of};

pub use xen_sys::{
    arch_shared_info, evtchn_alloc_unbound, evtchn_bind_interdomain, evtchn_bind_ipi,
    evtchn_bind_vcpu, evtchn_bind_virq, evtchn_close, evtchn_expand_array, evtchn_init_control,
    evtchn_port_t, evtchn_send, evtchn_status, evtchn_unmask, mmu_update, mmuext_op,
    multicall_entry, sched_poll, sched_shutdown, shared_info, start_info, trap_info, vcpu_info,
    xen_pfn_t, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi,
    EVTCHNOP_bind_vcpu, EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_expand_array,
    EVTCHNOP_init_control, EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_unmask, EVTCHNSTAT_unbound,
    SCHEDOP_block, SCHEDOP_poll, SCHEDOP_shutdown, SCHEDOP_yield, SHUTDOWN_crash,
    SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, FLAT_KERNEL_CS, MMUEXT_INVLPG_LOCAL,
    MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, MMU_NORMAL_PT_UPDATE, SEGBASE_FS,
    SEGBASE_GS_KERNEL, SIF_INITDOMAIN, VIRQ_DEBUG, VIRQ_TIMER, XEN_LEGACY_MAX_VCPUS,
};
pub use xen_sys::{cpu_user_regs, vcpu_guest_context, VGCF_in_kernel, VGCF_online, FLAT_KERNEL_SS};

/// Hypercall numbers (`public/xen.h`).
pub mod nr {
    pub const SET_TRAP_TABLE: u32 = 0;
    pub const MMU_UPDATE: u32 = 1;
    pub const MEMORY_OP: u32 = 12;
    pub const MULTICALL: u32 = 13;
    pub const SET_TIMER_OP: u32 = 15;
    pub const XEN_VERSION: u32 = 17;
    pub const CONSOLE_IO: u32 = 18;
    pub const UPDATE_VA_MAPPING: u32 = 14;
    pub const SET_SEGMENT_BASE: u32 = 25;
    pub const MMUEXT_OP: u32 = 26;
    pub const SCHED_OP: u32 = 29;
    pub const CALLBACK_OP: u32 = 30;
    pub const EVENT_CHANNEL_OP: u32 = 32;
    pub const HVM_OP: u32 = 34;
    pub const VCPU_OP: u32 = 24;
    pub const ARGO_OP: u32 = 39;
    pub const IRET: u32 = 23;
}

/// `DOMID_SELF` (`public/xen.h`).
pub const DOMID_SELF: u16 = 0x7ff0;

/// `XENVER_*` (`public/version.h`).
pub const XENVER_VERSION: u32 = 0;
pub const XENVER_EXTRAVERSION: u32 = 1;
/// `xen_extraversion_t` is `char[16]`.
pub const XEN_EXTRAVERSION_LEN: usize = 16;

/// `CONSOLEIO_write` (`public/xen.h`).
pub const CONSOLEIO_WRITE: u32 = 0;

/// `UVMF_INVLPG` (`public/xen.h`): flush the one TLB entry after `update_va_mapping`.
pub const UVMF_INVLPG: u64 = 2;

/// `public/callback.h`.
pub const CALLBACKOP_REGISTER: u32 = 0;
pub const CALLBACKTYPE_EVENT: u16 = 0;
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
/// Events are masked on entry to the callback.
pub const CALLBACKF_MASK_EVENTS: u16 = 1;

/// `struct callback_register` (`public/callback.h`); `xen_callback_t` is an address on x86-64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallbackRegister {
    pub kind: u16,
    pub flags: u16,
    pub address: u64,
}

const _: () = assert!(size_of::<CallbackRegister>() == 16);
const _: () = assert!(offset_of!(CallbackRegister, address) == 8);

/// `XENMEM_*` (`public/memory.h`).
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;

/// `struct xen_memory_reservation` (`public/memory.h`): `nr_extents` extents of
/// `2^extent_order` pages each, listed at `extent_start`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryReservation {
    /// A guest address of `nr_extents` frame numbers (in for decrease and populate; out too
    /// for a PV populate, which writes the machine frames it gave).
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    /// `XENMEMF_*`; 0: any address, any node.
    pub mem_flags: u32,
    pub domid: u16,
}

const _: () = assert!(size_of::<MemoryReservation>() == 32);
const _: () = assert!(offset_of!(MemoryReservation, extent_order) == 16);
const _: () = assert!(offset_of!(MemoryReservation, domid) == 24);

/// `struct xen_memory_domain`: the argument of `XENMEM_{current,maximum}_reservation`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryDomain {
    pub domid: u16,
}
/// `XENMAPSPACE_*`: what `XENMEM_add_to_physmap` places at a guest frame.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

/// `struct xen_add_to_physmap` (`public/memory.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AddToPhysmap {
    pub domid: u16,
    /// Only for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}

const _: () = assert!(size_of::<AddToPhysmap>() == 24);
const _: () = assert!(offset_of!(AddToPhysmap, space) == 4);
const _: () = assert!(offset_of!(AddToPhysmap, gpfn) == 16);

/// `VCPUOP_*` (`public/vcpu.h`).
pub const VCPUOP_INITIALISE: u32 = 0;
pub const VCPUOP_UP: u32 = 1;
pub const VCPUOP_DOWN: u32 = 2;
pub const VCPUOP_IS_UP: u32 = 3;
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;

/// `struct vcpu_register_vcpu_info` (`public/vcpu.h`): where a vCPU's `vcpu_info` is to
/// live, at `offset` in frame `mfn` (a guest frame under PVH); it must not cross a page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuRegisterVcpuInfo {
    pub mfn: u64,
    pub offset: u32,
    pub rsvd: u32,
}

const _: () = assert!(size_of::<VcpuRegisterVcpuInfo>() == 16);

/// `VCPU_HVM_MODE_64B` (`public/hvm/hvm_vcpu.h`): the vCPU starts in long mode, its
/// segments' hidden parts flat.
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// `struct vcpu_hvm_x86_64` (`public/hvm/hvm_vcpu.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuHvmX86_64 {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// `struct vcpu_hvm_context` (`public/hvm/hvm_vcpu.h`): what `VCPUOP_initialise` takes for
/// an HVM (PVH) vCPU. Its register union is as large as the 32-bit variant, 8 bytes more
/// than the 64-bit one we use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuHvmContext {
    pub mode: u32,
    pub pad: u32,
    pub x86_64: VcpuHvmX86_64,
    pub union_rest: [u8; 8],
}

const _: () = assert!(size_of::<VcpuHvmX86_64>() == 112);
const _: () = assert!(size_of::<VcpuHvmContext>() == 128);
const _: () = assert!(offset_of!(VcpuHvmContext, x86_64) == 8);

/// `HVMOP_*` (`public/hvm/hvm_op.h`).
pub const HVMOP_SET_PARAM: u64 = 0;
pub const HVMOP_GET_PARAM: u64 = 1;

/// `struct xen_hvm_param` (`public/hvm/hvm_op.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmParam {
    pub domid: u16,
    pub index: u32,
    pub value: u64,
}

const _: () = assert!(size_of::<HvmParam>() == 16);
const _: () = assert!(offset_of!(HvmParam, index) == 4);

/// `HVM_PARAM_*` (`public/hvm/params.h`).
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `HVM_PARAM_CALLBACK_IRQ`'s value: the delivery type in these bits; type "vector"
/// injects the vector in bits 7:0 straight into the vCPU, bypassing the local APIC.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xff << 56;
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2 << 56;

/// `struct vcpu_time_info` (`public/xen.h`, interface version 0x040600 and later). xen-sys
/// has the older layout, whose bytes 29..32 are all padding; `vcpu_info.time` stays typed with
/// that one, so the guest reaches this struct by `vcpu_info.time`'s offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)] // the C name, like the xen-sys types beside it
pub struct vcpu_time_info {
    /// Odd while Xen rewrites the record.
    pub version: u32,
    pub pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_TSC_STABLE_BIT`, `XEN_PVCLOCK_GUEST_STOPPED`.
    pub flags: u8,
    pub pad1: [u8; 2],
}

const _: () = assert!(offset_of!(vcpu_time_info, flags) == 29);
// It must fill exactly the `vcpu_info.time` it is read from.
const _: () = assert!(size_of::<vcpu_time_info>() == size_of::<xen_sys::vcpu_time_info>());

/// `start_info.magic` begins with this on a 64-bit PV guest.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";

// Layouts Xen and we must agree on, from `public/xen.h` and `arch-x86/xen-x86_64.h`
// (x86-64): xen-sys is bindgen output, so these guard against a mismatched version.
const _: () = assert!(size_of::<trap_info>() == 16);
const _: () = assert!(size_of::<mmu_update>() == 16);
const _: () = assert!(size_of::<mmuext_op>() == 24);
const _: () = assert!(size_of::<vcpu_time_info>() == 32);
const _: () = assert!(size_of::<vcpu_info>() == 64);
const _: () = assert!(offset_of!(vcpu_info, evtchn_pending_sel) == 8);
const _: () = assert!(offset_of!(vcpu_info, time) == 32);
const _: () = assert!(offset_of!(shared_info, evtchn_pending) == 2048);
const _: () = assert!(offset_of!(shared_info, evtchn_mask) == 2560);
const _: () = assert!(offset_of!(shared_info, wc_version) == 3072);
const _: () = assert!(offset_of!(start_info, nr_pages) == 32);
const _: () = assert!(offset_of!(start_info, shared_info) == 40);
const _: () = assert!(offset_of!(start_info, store_mfn) == 56);
const _: () = assert!(offset_of!(start_info, pt_base) == 88);
const _: () = assert!(offset_of!(start_info, mfn_list) == 104);
const _: () = assert!(offset_of!(start_info, cmd_line) == 128);
const _: () = assert!(size_of::<start_info>() == 1168);
const _: () = assert!(size_of::<multicall_entry>() == 64);
