//! Typed hypercall wrappers. Those that can break memory safety (page tables, trap and
//! callback tables) are `unsafe fn`s with their contract spelled out; the rest are safe.

use crate::abi::{self, nr};
use crate::raw::{hypercall1, hypercall2, hypercall3, hypercall4};
use crate::{Errno, Result};

fn check(ret: i64) -> Result<u64> {
    Errno::check(ret)
}

/// `XENVER_version`: (major, minor).
pub fn xen_version() -> Result<(u16, u16)> {
    // SAFETY: XENVER_version takes no buffer.
    let v = check(unsafe { hypercall2(nr::XEN_VERSION, abi::XENVER_VERSION.into(), 0) })?;
    Ok(((v >> 16) as u16, v as u16))
}

/// `XENVER_extraversion`: e.g. `.7+13-g2445b30a44`, as the bytes before the first NUL.
pub fn xen_extraversion() -> Result<([u8; abi::XEN_EXTRAVERSION_LEN], usize)> {
    let mut buf = [0u8; abi::XEN_EXTRAVERSION_LEN];
    // SAFETY: Xen writes exactly xen_extraversion_t (16 bytes) into our buffer.
    check(unsafe {
        hypercall2(nr::XEN_VERSION, abi::XENVER_EXTRAVERSION.into(), buf.as_mut_ptr() as u64)
    })?;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok((buf, len))
}

/// `CONSOLEIO_write`: Xen's own console (shown only for dom0 on a release Xen).
pub fn console_io_write(bytes: &[u8]) -> Result<()> {
    // SAFETY: Xen only reads `len` bytes from the buffer.
    check(unsafe {
        hypercall3(
            nr::CONSOLE_IO,
            abi::CONSOLEIO_WRITE.into(),
            bytes.len() as u64,
            bytes.as_ptr() as u64,
        )
    })
    .map(drop)
}

/// Why the domain stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    Poweroff,
    Reboot,
    Crash,
}

fn sched_op<T>(cmd: u32, arg: &mut T) -> Result<u64> {
    // SAFETY: every SCHEDOP we issue reads (or writes) exactly its argument struct.
    check(unsafe { hypercall2(nr::SCHED_OP, cmd.into(), arg as *mut T as u64) })
}

/// `SCHEDOP_shutdown`: on success it does not return.
pub fn shutdown(reason: ShutdownReason) -> Errno {
    let reason = match reason {
        ShutdownReason::Poweroff => abi::SHUTDOWN_poweroff,
        ShutdownReason::Reboot => abi::SHUTDOWN_reboot,
        ShutdownReason::Crash => abi::SHUTDOWN_crash,
    };
    let mut arg = abi::sched_shutdown { reason };
    match sched_op(abi::SCHEDOP_shutdown, &mut arg) {
        Err(e) => e,
        // Xen returned from a shutdown: treat it as the failure it is.
        Ok(_) => Errno::EINVAL,
    }
}

/// How a suspend ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// In a new domain (a restore or a migration): everything bound to Xen is gone.
    NewDomain,
    /// In the same domain (a checkpoint, `xl save -c`, or a save that failed).
    Cancelled,
}

/// `SCHEDOP_shutdown(SHUTDOWN_suspend)`: returns when the domain runs again. A PV guest
/// passes its start_info frame (machine frame number), which the toolstack finds in the
/// third argument's register; PVH passes 0. The toolstack makes the call return 1 when it
/// resumes the same domain, 0 in a new one.
///
/// # Safety
/// Everything a save must not see is undone (PV: foreign frames unmapped from our page
/// tables, start_info's frame numbers made pseudo-physical), and events are masked.
pub unsafe fn suspend(start_info_mfn: u64) -> Result<Resumed> {
    let mut arg = abi::sched_shutdown { reason: abi::SHUTDOWN_suspend };
    // SAFETY: Xen reads the struct; the caller's contract covers what the save sees.
    let ret = check(unsafe {
        hypercall3(
            nr::SCHED_OP,
            abi::SCHEDOP_shutdown.into(),
            &mut arg as *mut _ as u64,
            start_info_mfn,
        )
    })?;
    Ok(if ret == 0 { Resumed::NewDomain } else { Resumed::Cancelled })
}

fn vcpu_op(cmd: u32, vcpu: u32, arg: u64) -> Result<u64> {
    // SAFETY: the VCPUOPs issued here (up, down, is_up) take no argument; initialise is
    // issued by its unsafe wrappers only.
    check(unsafe { hypercall3(nr::VCPU_OP, cmd.into(), vcpu.into(), arg) })
}

/// `VCPUOP_initialise` of a PVH vCPU: it will start, once up, in long mode at `ctx`'s rip
/// with its rsp and control registers.
///
/// # Safety
/// `ctx` must start the vCPU on code that runs correctly there (a stack of its own, page
/// tables that map it), since it runs concurrently with the others.
pub unsafe fn vcpu_initialise_hvm(vcpu: u32, ctx: &abi::VcpuHvmContext) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { vcpu_initialise(vcpu, ctx) }
}

/// `VCPUOP_initialise` of a PV vCPU (`struct vcpu_guest_context`).
///
/// # Safety
/// As for [`vcpu_initialise_hvm`]; the trap table, callbacks, segment selectors and page
/// tables in `ctx` are those the other vCPUs use.
pub unsafe fn vcpu_initialise_pv(vcpu: u32, ctx: &abi::vcpu_guest_context) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { vcpu_initialise(vcpu, ctx) }
}

/// `VCPUOP_initialise` with the context the domain's kind takes (the typed wrappers above
/// pick it).
///
/// # Safety
/// As for [`vcpu_initialise_hvm`]; `T` is the context layout Xen expects for this domain.
unsafe fn vcpu_initialise<T>(vcpu: u32, ctx: &T) -> Result<()> {
    // SAFETY: Xen only reads the context; the caller vouches for what it starts.
    check(unsafe {
        hypercall3(nr::VCPU_OP, abi::VCPUOP_INITIALISE.into(), vcpu.into(), ctx as *const T as u64)
    })
    .map(drop)
}

/// `VCPUOP_register_vcpu_info`: from now on Xen keeps `vcpu`'s `vcpu_info` at `offset` in
/// `frame` (copying the current one there) instead of in shared_info. Once per vCPU and
/// domain, on the calling vCPU or on one that is down.
///
/// # Safety
/// The 64 bytes at `offset` in `frame` are memory of ours set aside for this for as long
/// as the domain lives, not crossing a page, and accessed only as Xen's `vcpu_info`.
pub unsafe fn vcpu_register_vcpu_info(vcpu: u32, frame: u64, offset: u32) -> Result<()> {
    let arg = abi::VcpuRegisterVcpuInfo { mfn: frame, offset, rsvd: 0 };
    // SAFETY: Xen only reads `arg`; the caller vouches for the memory it names.
    check(unsafe {
        hypercall3(
            nr::VCPU_OP,
            abi::VCPUOP_REGISTER_VCPU_INFO.into(),
            vcpu.into(),
            &arg as *const _ as u64,
        )
    })
    .map(drop)
}

/// `VCPUOP_up`: an initialised vCPU runs (again, after `VCPUOP_down`: from where it was).
pub fn vcpu_up(vcpu: u32) -> Result<()> {
    vcpu_op(abi::VCPUOP_UP, vcpu, 0).map(drop)
}

/// `VCPUOP_down`: the vCPU stops running until `VCPUOP_up` (on itself: the call returns
/// then). Xen refuses to take down the last vCPU that runs (it shuts the domain down).
pub fn vcpu_down(vcpu: u32) -> Result<()> {
    vcpu_op(abi::VCPUOP_DOWN, vcpu, 0).map(drop)
}

/// `VCPUOP_is_up`: whether the vCPU runs; an error (`EINVAL`, `ENOENT`) if the domain has
/// no such vCPU.
pub fn vcpu_is_up(vcpu: u32) -> Result<bool> {
    vcpu_op(abi::VCPUOP_IS_UP, vcpu, 0).map(|v| v != 0)
}

/// `SCHEDOP_yield`.
pub fn sched_yield() -> Result<()> {
    // SAFETY: SCHEDOP_yield ignores its argument.
    check(unsafe { hypercall2(nr::SCHED_OP, abi::SCHEDOP_yield.into(), 0) }).map(drop)
}

/// `SCHEDOP_block`: sleep until an event is pending; Xen unmasks events atomically with
/// blocking, so an event that arrives in between is not lost.
pub fn sched_block() -> Result<()> {
    // SAFETY: SCHEDOP_block ignores its argument.
    check(unsafe { hypercall2(nr::SCHED_OP, abi::SCHEDOP_block.into(), 0) }).map(drop)
}

/// `SCHEDOP_poll`: sleep until one of `ports` is pending (whatever the masks say) or Xen's
/// system time reaches `deadline_ns` (0: no deadline).
pub fn sched_poll(ports: &[u32], deadline_ns: u64) -> Result<()> {
    let mut arg = abi::sched_poll {
        ports: ports.as_ptr() as *mut u32,
        nr_ports: ports.len() as u32,
        timeout: deadline_ns,
    };
    sched_op(abi::SCHEDOP_poll, &mut arg).map(drop)
}

/// `set_timer_op`: one VIRQ_TIMER at Xen system time `deadline_ns` (0 cancels).
pub fn set_timer(deadline_ns: u64) -> Result<()> {
    // SAFETY: takes no pointer.
    check(unsafe { hypercall1(nr::SET_TIMER_OP, deadline_ns) }).map(drop)
}

fn evtchn_op<T>(cmd: u32, arg: &mut T) -> Result<()> {
    // SAFETY: every EVTCHNOP reads and writes only its argument struct, which callers pass
    // as the type the command takes.
    check(unsafe { hypercall2(nr::EVENT_CHANNEL_OP, cmd.into(), arg as *mut T as u64) }).map(drop)
}

/// `EVTCHNOP_send`.
pub fn evtchn_send(port: u32) -> Result<()> {
    evtchn_op(abi::EVTCHNOP_send, &mut abi::evtchn_send { port })
}

/// `EVTCHNOP_bind_virq` on `vcpu`: the new local port.
pub fn evtchn_bind_virq(virq: u32, vcpu: u32) -> Result<u32> {
    let mut arg = abi::evtchn_bind_virq { virq, vcpu, port: 0 };
    evtchn_op(abi::EVTCHNOP_bind_virq, &mut arg)?;
    Ok(arg.port)
}

/// `EVTCHNOP_bind_ipi`: a new port for events between our own vCPUs, delivered to `vcpu`.
pub fn evtchn_bind_ipi(vcpu: u32) -> Result<u32> {
    let mut arg = abi::evtchn_bind_ipi { vcpu, port: 0 };
    evtchn_op(abi::EVTCHNOP_bind_ipi, &mut arg)?;
    Ok(arg.port)
}

/// `EVTCHNOP_bind_vcpu`: from now on `port`'s events go to `vcpu`.
pub fn evtchn_bind_vcpu(port: u32, vcpu: u32) -> Result<()> {
    evtchn_op(abi::EVTCHNOP_bind_vcpu, &mut abi::evtchn_bind_vcpu { port, vcpu })
}

/// `EVTCHNOP_alloc_unbound`: a port that `remote` may bind to.
pub fn evtchn_alloc_unbound(remote: u16) -> Result<u32> {
    let mut arg = abi::evtchn_alloc_unbound { dom: abi::DOMID_SELF, remote_dom: remote, port: 0 };
    evtchn_op(abi::EVTCHNOP_alloc_unbound, &mut arg)?;
    Ok(arg.port)
}

/// `EVTCHNOP_bind_interdomain`: the new local port connected to `remote_port` of `remote`.
pub fn evtchn_bind_interdomain(remote: u16, remote_port: u32) -> Result<u32> {
    let mut arg = abi::evtchn_bind_interdomain { remote_dom: remote, remote_port, local_port: 0 };
    evtchn_op(abi::EVTCHNOP_bind_interdomain, &mut arg)?;
    Ok(arg.local_port)
}

/// This domain's own id (the toolstack's number, not DOMID_SELF), which grant entries
/// must name when we grant to ourselves. Xen resolves DOMID_SELF when it allocates an
/// unbound port, and `EVTCHNOP_status` reports the domain the port waits for.
pub fn own_domid() -> Result<u16> {
    let port = evtchn_alloc_unbound(abi::DOMID_SELF)?;
    let mut status: abi::evtchn_status = abi::evtchn_status {
        dom: abi::DOMID_SELF,
        port,
        status: 0,
        vcpu: 0,
        u: xen_sys::evtchn_status__bindgen_ty_1 { pirq: 0 },
    };
    let r = evtchn_op(abi::EVTCHNOP_status, &mut status);
    let closed = evtchn_close(port);
    r?;
    closed?;
    if status.status != abi::EVTCHNSTAT_unbound {
        return Err(Errno::EINVAL);
    }
    // SAFETY: for an unbound port Xen fills the `unbound` member of the union.
    Ok(unsafe { status.u.unbound.dom })
}

/// `EVTCHNOP_init_control`: registers vCPU `vcpu`'s FIFO control block (at `offset` in
/// frame `gfn`); returns the number of link bits Xen uses.
pub fn evtchn_init_control(gfn: u64, offset: u32, vcpu: u32) -> Result<u8> {
    let mut arg =
        abi::evtchn_init_control { control_gfn: gfn, offset, vcpu, link_bits: 0, _pad: [0; 7] };
    evtchn_op(abi::EVTCHNOP_init_control, &mut arg)?;
    Ok(arg.link_bits)
}

/// `EVTCHNOP_expand_array`: adds frame `gfn` to the FIFO event array.
pub fn evtchn_expand_array(gfn: u64) -> Result<()> {
    evtchn_op(abi::EVTCHNOP_expand_array, &mut abi::evtchn_expand_array { array_gfn: gfn })
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: u32) -> Result<()> {
    evtchn_op(abi::EVTCHNOP_close, &mut abi::evtchn_close { port })
}

/// `EVTCHNOP_unmask`: clears the mask bit and re-raises the upcall if the port is pending.
pub fn evtchn_unmask(port: u32) -> Result<()> {
    evtchn_op(abi::EVTCHNOP_unmask, &mut abi::evtchn_unmask { port })
}

/// `set_trap_table`.
///
/// # Safety
/// `table` ends with an all-zero entry, and every handler in it is an entry stub that
/// expects Xen's PV exception frame and stays mapped for the life of the kernel.
pub unsafe fn set_trap_table(table: &[abi::trap_info]) -> Result<()> {
    // SAFETY: the caller vouches for the handlers; Xen reads the table until the zero entry.
    check(unsafe { hypercall1(nr::SET_TRAP_TABLE, table.as_ptr() as u64) }).map(drop)
}

/// `CALLBACKOP_register`.
///
/// # Safety
/// `cb.address` is an entry stub for Xen's callback frame of that kind, mapped for good.
pub unsafe fn callback_register(cb: &abi::CallbackRegister) -> Result<()> {
    // SAFETY: the caller vouches for the callback; Xen reads the struct.
    check(unsafe {
        hypercall2(nr::CALLBACK_OP, abi::CALLBACKOP_REGISTER.into(), cb as *const _ as u64)
    })
    .map(drop)
}

/// `update_va_mapping`: sets the PTE for `va` to `pte` (machine address + flags).
///
/// # Safety
/// No live Rust reference may depend on what `va` mapped before, and the new mapping must
/// not alias memory Rust believes it owns exclusively.
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<()> {
    // SAFETY: forwarded contract.
    check(unsafe { hypercall3(nr::UPDATE_VA_MAPPING, va, pte, flags) }).map(drop)
}

/// `mmu_update` on our own page tables; returns how many requests Xen completed.
///
/// # Safety
/// As for [`update_va_mapping`], for every entry the requests change.
pub unsafe fn mmu_update(reqs: &[abi::mmu_update]) -> Result<u32> {
    let mut done: u32 = 0;
    // SAFETY: forwarded contract; Xen reads the array and writes `done`.
    check(unsafe {
        hypercall4(
            nr::MMU_UPDATE,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            &mut done as *mut u32 as u64,
            abi::DOMID_SELF.into(),
        )
    })?;
    Ok(done)
}

/// An `mmuext_op` that names one address (`MMUEXT_INVLPG_LOCAL`) or frame (pins, base
/// pointers): every command we issue has that shape.
pub const fn mmuext(cmd: u32, arg: u64) -> abi::mmuext_op {
    abi::mmuext_op {
        cmd,
        arg1: xen_sys::mmuext_op__bindgen_ty_1 { linear_addr: arg },
        arg2: xen_sys::mmuext_op__bindgen_ty_2 { src_mfn: 0 },
    }
}

/// `mmuext_op` on our own domain.
///
/// # Safety
/// As for [`update_va_mapping`]: a new base pointer or an unpinned table changes mappings.
pub unsafe fn mmuext_op(ops: &[abi::mmuext_op]) -> Result<()> {
    // SAFETY: forwarded contract; Xen reads the array.
    check(unsafe {
        hypercall4(nr::MMUEXT_OP, ops.as_ptr() as u64, ops.len() as u64, 0, abi::DOMID_SELF.into())
    })
    .map(drop)
}

/// `set_segment_base(SEGBASE_FS, base)`.
///
/// # Safety
/// Nothing in the kernel may rely on the old FS base (we use none).
pub unsafe fn set_fs_base(base: u64) -> Result<()> {
    // SAFETY: forwarded contract.
    check(unsafe { hypercall2(nr::SET_SEGMENT_BASE, abi::SEGBASE_FS.into(), base) }).map(drop)
}

/// `set_segment_base(SEGBASE_GS_KERNEL)`: the GS base of a PV kernel (the per-CPU area).
///
/// # Safety
/// Nothing may rely on the old GS base of the calling vCPU.
pub unsafe fn set_gs_kernel_base(base: u64) -> Result<()> {
    // SAFETY: forwarded contract.
    check(unsafe { hypercall2(nr::SET_SEGMENT_BASE, abi::SEGBASE_GS_KERNEL.into(), base) })
        .map(drop)
}

/// `XENMEM_maximum_ram_page`: the highest machine frame number of host RAM, which bounds
/// the machine-to-physical table.
pub fn maximum_ram_page() -> Result<u64> {
    const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
    // SAFETY: this XENMEM command takes no buffer.
    check(unsafe { crate::raw::hypercall2(nr::MEMORY_OP, XENMEM_MAXIMUM_RAM_PAGE, 0) })
}

fn memory_reservation(cmd: u64, frames: &mut [u64]) -> Result<u64> {
    let mut arg = abi::MemoryReservation {
        extent_start: frames.as_mut_ptr() as u64,
        nr_extents: frames.len() as u64,
        extent_order: 0,
        mem_flags: 0,
        domid: abi::DOMID_SELF,
    };
    // SAFETY: Xen reads the struct and reads (and for a PV populate, writes) `frames`, which
    // the borrow keeps alive and writable for the call.
    check(unsafe { hypercall2(nr::MEMORY_OP, cmd, &mut arg as *mut _ as u64) })
}

/// `XENMEM_decrease_reservation` of single pages: gives the frames in `frames` (machine
/// frames under PV, guest frames when translated) back to Xen; returns how many it took,
/// from the start of the slice.
///
/// # Safety
/// Nothing may use the pages any more (under PV, nothing may map them: Xen frees a page only
/// when its last mapping goes), and nothing shares them (no grant, no foreign mapping).
pub unsafe fn decrease_reservation(frames: &mut [u64]) -> Result<u64> {
    memory_reservation(abi::XENMEM_DECREASE_RESERVATION, frames)
}

/// `XENMEM_populate_physmap` of single pages at the guest frames in `frames`; returns how
/// many Xen populated, from the start of the slice. Under PV Xen writes the machine frame it
/// gave over each guest frame it populated (and sets the m2p entry); translated guests find
/// the memory at those guest frames.
pub fn populate_physmap(frames: &mut [u64]) -> Result<u64> {
    memory_reservation(abi::XENMEM_POPULATE_PHYSMAP, frames)
}

fn reservation_of_self(cmd: u64) -> Result<u64> {
    let mut arg = abi::MemoryDomain { domid: abi::DOMID_SELF };
    // SAFETY: Xen reads the struct only.
    check(unsafe { hypercall2(nr::MEMORY_OP, cmd, &mut arg as *mut _ as u64) })
}

/// `XENMEM_current_reservation`: the pages Xen counts as ours now.
pub fn current_reservation() -> Result<u64> {
    reservation_of_self(abi::XENMEM_CURRENT_RESERVATION)
}

/// `XENMEM_maximum_reservation`: the most pages Xen would let us have now (the toolstack's
/// `maxmem`, lowered by `xl mem-set`).
pub fn maximum_reservation() -> Result<u64> {
    reservation_of_self(abi::XENMEM_MAXIMUM_RESERVATION)
}

/// `XENMEM_add_to_physmap` for ourselves: makes guest frame `gpfn` show item `idx` of
/// `space` (shared_info, a grant-table frame) instead of whatever it held, which Xen frees.
///
/// # Safety
/// Nothing may use the memory that was at `gpfn` as its own any more: from now on reads and
/// writes there reach Xen's page.
pub unsafe fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<()> {
    let mut arg = abi::AddToPhysmap { domid: abi::DOMID_SELF, size: 0, space, idx, gpfn };
    // SAFETY: the caller gives up the frame; Xen reads the struct.
    check(unsafe {
        hypercall2(nr::MEMORY_OP, abi::XENMEM_ADD_TO_PHYSMAP, &mut arg as *mut _ as u64)
    })
    .map(drop)
}

fn hvm_param(op: u64, index: u32, value: u64) -> Result<u64> {
    let mut arg = abi::HvmParam { domid: abi::DOMID_SELF, index, value };
    // SAFETY: HVMOP_{get,set}_param read and write only the struct.
    check(unsafe { hypercall2(nr::HVM_OP, op, &mut arg as *mut _ as u64) })?;
    Ok(arg.value)
}

/// `HVMOP_get_param` on ourselves (HVM/PVH): e.g. the console's frame and event channel.
pub fn hvm_get_param(index: u32) -> Result<u64> {
    hvm_param(abi::HVMOP_GET_PARAM, index, 0)
}

/// `HVMOP_set_param` on ourselves, e.g. how Xen delivers event upcalls.
pub fn hvm_set_param(index: u32, value: u64) -> Result<()> {
    hvm_param(abi::HVMOP_SET_PARAM, index, value).map(drop)
}
