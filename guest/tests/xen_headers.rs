//! Every structure the guest shares with Xen or another domain, compared with Xen's own C
//! headers: `xen_headers.c` is compiled against Debian's libxen-dev (Xen 4.17) and prints
//! sizes, alignments, field offsets and field sizes; the same values are computed here from
//! the Rust types (ours and those taken from `xen-sys`) and the layout constants, and every
//! difference is reported at once.
//!
//! Both sides name values alike (`offsetof start_info.nr_pages`, `sizeof blkif_request.seg`,
//! C names throughout). The C program lists every field of every structure; a C value the
//! Rust side does not check fails the test unless [`NOT_MODELLED`] says why it cannot.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use hypercall::abi::{
    evtchn_alloc_unbound, evtchn_bind_interdomain, evtchn_bind_ipi, evtchn_bind_vcpu,
    evtchn_bind_virq, evtchn_close, evtchn_expand_array, evtchn_init_control, evtchn_port_t,
    evtchn_send, evtchn_status, evtchn_unmask, mmu_update, mmuext_op, multicall_entry, sched_poll,
    sched_shutdown, shared_info, start_info, trap_info, vcpu_guest_context, vcpu_info,
    vcpu_time_info, xen_pfn_t, AddToPhysmap, CallbackRegister, HvmParam, MemoryDomain,
    MemoryReservation, VcpuHvmContext, VcpuHvmX86_64, VcpuRegisterVcpuInfo, XEN_EXTRAVERSION_LEN,
};
use xen_sys::{evtchn_fifo_control_block, xen_ulong_t};

use blkfront::abi::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    MAX_INDIRECT_PAGES_PER_REQUEST, MAX_SEGMENTS_PER_REQUEST,
};
use grant::abi::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabQuerySize, GnttabSetupTable,
    GnttabUnmapGrantRef, GrantEntryV1, NR_RESERVED_ENTRIES, RESERVED_CONSOLE, RESERVED_XENSTORE,
};
use grant::{DomId, GrantRef};
use netfront::abi::{
    Extra, NetifExtraInfo, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse,
};
use ring::shared::{ring_size, HEADER_SIZE};
use xenbus::wire::{interface, XsdSockmsg};

/// C values the Rust side cannot check, by name (any of `sizeof`, `alignof`, `offsetof`),
/// and why. An entry that no longer matches an unchecked C value fails the test too.
const NOT_MODELLED: &[(&str, &str)] = &[
    (
        "netif_rx_request.pad",
        "netfront's `_pad` is crate-private; `ring::pod!` proves there is no implicit padding, \
         so bytes 2..4 (between the checked `id` and `gref`) are that field",
    ),
    (
        "netif_extra_info.u.gso.pad",
        "`Extra::Gso` has no pad; `NetifExtraInfo::new` leaves the byte zero",
    ),
    (
        "xenstore_domain_interface",
        "xenbus keeps the struct private and exports its byte offsets and size \
         (`interface::SIZE` is checked as its sizeof); its alignment is moot in a page",
    ),
    (
        "xencons_interface",
        "console::xen_ring keeps the struct private and exports only the `out` ring's Layout",
    ),
    ("xencons_interface.in", "the guest never reads console input: no Layout for it"),
    ("xencons_interface.in_cons", "see xencons_interface.in"),
    ("xencons_interface.in_prod", "see xencons_interface.in"),
];

/// The values computed on the Rust side, keyed like the C program's output lines.
#[derive(Default)]
struct Values(BTreeMap<String, u64>);

impl Values {
    fn put(&mut self, kind: &str, name: &str, value: usize) {
        let key = format!("{kind} {name}");
        let old = self.0.insert(key.clone(), value as u64);
        assert!(old.is_none(), "the Rust table names `{key}` twice");
    }

    fn structure(&mut self, name: &str, size: usize, align: usize) {
        self.put("sizeof", name, size);
        self.put("alignof", name, align);
    }

    fn field(&mut self, name: &str, field: &str, offset: usize, size: usize) {
        let name = format!("{name}.{field}");
        self.put("offsetof", &name, offset);
        self.put("sizeof", &name, size);
    }
}

/// The size of the field a projection closure names. The closure is never called: only its
/// return type matters.
fn field_size<T, F>(_project: fn(&T) -> *const F) -> usize {
    size_of::<F>()
}

/// The C name of a field: given as a literal where it differs from the Rust path, else the
/// Rust path itself.
macro_rules! c_field {
    ($c:literal; $($f:ident).+) => {
        $c
    };
    (; $($f:ident).+) => {
        &[$(stringify!($f)),+].join(".")
    };
}

/// `"c_struct" = RustType { field, nested.field, "c_field" = rust_field, ... }`: checks the
/// size and alignment of the type, and the offset and size of each field listed.
macro_rules! layouts {
    ($out:ident; $($c:literal = $t:ty { $($($cf:literal =)? $($f:ident).+),* $(,)? })*) => {
        $(
            $out.structure($c, size_of::<$t>(), align_of::<$t>());
            $(
                $out.field(
                    $c,
                    c_field!($($cf)?; $($f).+),
                    offset_of!($t, $($f).+),
                    // SAFETY: never executed; union members need `unsafe` even to be named.
                    field_size(|p: &$t| unsafe { &raw const p.$($f).+ }),
                );
            )*
        )*
    };
}

/// Every value the C program prints, from the Rust side.
#[allow(unused_unsafe)] // `layouts!` wraps every field in the `unsafe` only union members need
fn rust_values() -> Values {
    let mut v = Values::default();

    v.put("sizeof", "xen_pfn_t", size_of::<xen_pfn_t>());
    v.put("sizeof", "xen_ulong_t", size_of::<xen_ulong_t>());
    v.put("sizeof", "domid_t", size_of::<DomId>());
    v.put("sizeof", "evtchn_port_t", size_of::<evtchn_port_t>());
    v.put("sizeof", "grant_ref_t", size_of::<GrantRef>());
    v.put("sizeof", "xen_extraversion_t", XEN_EXTRAVERSION_LEN);

    layouts! { v;
        "start_info" = start_info {
            magic, nr_pages, shared_info, flags, store_mfn, store_evtchn,
            console, console.domU, console.domU.mfn, console.domU.evtchn,
            console.dom0, console.dom0.info_off, console.dom0.info_size,
            pt_base, nr_pt_frames, mfn_list, mod_start, mod_len, cmd_line,
            first_p2m_pfn, nr_p2m_frames,
        }
        "shared_info" = shared_info {
            vcpu_info, evtchn_pending, evtchn_mask, wc_version, wc_sec, wc_nsec, wc_sec_hi,
            arch, arch.max_pfn, arch.pfn_to_mfn_frame_list_list, arch.nmi_reason,
            arch.p2m_cr3, arch.p2m_vaddr, arch.p2m_generation,
        }
        "vcpu_info" = vcpu_info {
            evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel,
            arch, arch.cr2, arch.pad, time,
        }
        "vcpu_time_info" = vcpu_time_info {
            version, pad0, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags, pad1,
        }
        "multicall_entry" = multicall_entry { op, result, args }
        "mmu_update" = mmu_update { ptr, val }
        "mmuext_op" = mmuext_op {
            cmd, arg1, arg1.mfn, arg1.linear_addr, arg2, arg2.nr_ents, arg2.vcpumask,
            arg2.src_mfn,
        }
        "trap_info" = trap_info { vector, flags, cs, address }
        "callback_register" = CallbackRegister { "type" = kind, flags, address }
        "xen_add_to_physmap" = AddToPhysmap { domid, size, space, idx, gpfn }
        "xen_memory_reservation" = MemoryReservation {
            extent_start, nr_extents, extent_order, mem_flags, domid
        }
        "xen_memory_domain" = MemoryDomain { domid }
        "xen_hvm_param" = HvmParam { domid, index, value }
        "vcpu_hvm_x86_64" = VcpuHvmX86_64 {
            rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, rip, rflags, cr0, cr3, cr4, efer,
        }
        "vcpu_hvm_context" = VcpuHvmContext { mode, pad, "cpu_regs.x86_64" = x86_64 }
        "vcpu_register_vcpu_info" = VcpuRegisterVcpuInfo { mfn, offset, rsvd }
        "vcpu_guest_context" = vcpu_guest_context {
            fpu_ctxt, flags, user_regs,
            "user_regs.rdi" = user_regs.__bindgen_anon_7,
            "user_regs.rip" = user_regs.__bindgen_anon_8,
            "user_regs.cs" = user_regs.cs,
            "user_regs.rflags" = user_regs.__bindgen_anon_9,
            "user_regs.rsp" = user_regs.__bindgen_anon_10,
            "user_regs.ss" = user_regs.ss,
            trap_ctxt, ldt_base, ldt_ents, gdt_frames, gdt_ents, kernel_ss, kernel_sp, ctrlreg,
            debugreg, event_callback_eip, failsafe_callback_eip, syscall_callback_eip,
            vm_assist, fs_base, gs_base_kernel, gs_base_user,
        }
        "sched_shutdown" = sched_shutdown { reason }
        "sched_poll" = sched_poll { ports, nr_ports, timeout }

        "evtchn_alloc_unbound" = evtchn_alloc_unbound { dom, remote_dom, port }
        "evtchn_bind_interdomain" = evtchn_bind_interdomain {
            remote_dom, remote_port, local_port,
        }
        "evtchn_bind_virq" = evtchn_bind_virq { virq, vcpu, port }
        "evtchn_bind_ipi" = evtchn_bind_ipi { vcpu, port }
        "evtchn_bind_vcpu" = evtchn_bind_vcpu { port, vcpu }
        "evtchn_close" = evtchn_close { port }
        "evtchn_send" = evtchn_send { port }
        "evtchn_status" = evtchn_status {
            dom, port, status, vcpu, u, u.unbound, u.unbound.dom, u.interdomain,
            u.interdomain.dom, u.interdomain.port, u.pirq, u.virq,
        }
        "evtchn_unmask" = evtchn_unmask { port }
        "evtchn_expand_array" = evtchn_expand_array { array_gfn }
        "evtchn_init_control" = evtchn_init_control {
            control_gfn, offset, vcpu, link_bits, _pad,
        }
        "evtchn_fifo_control_block" = evtchn_fifo_control_block { ready, _rsvd, head }

        "grant_entry_v1" = GrantEntryV1 { flags, domid, frame }
        "gnttab_setup_table" = GnttabSetupTable { dom, nr_frames, status, frame_list }
        "gnttab_query_size" = GnttabQuerySize { dom, nr_frames, max_nr_frames, status }
        "gnttab_copy_ptr" = GnttabCopyPtr { u, "u.ref" = u.gref, u.gmfn, domid, offset }
        "gnttab_copy" = GnttabCopy { source, dest, len, flags, status }
        "gnttab_map_grant_ref" = GnttabMapGrantRef {
            host_addr, flags, "ref" = gref, dom, status, handle, dev_bus_addr,
        }
        "gnttab_unmap_grant_ref" = GnttabUnmapGrantRef {
            host_addr, dev_bus_addr, handle, status,
        }

        "xsd_sockmsg" = XsdSockmsg { "type" = ty, req_id, tx_id, len }

        "blkif_request_segment" = BlkifRequestSegment { gref, first_sect, last_sect }
        "blkif_request" = BlkifRequest {
            operation, nr_segments, handle, id, sector_number, seg,
        }
        "blkif_request_discard" = BlkifRequestDiscard {
            operation, flag, handle, id, sector_number, nr_sectors,
        }
        "blkif_request_indirect" = BlkifRequestIndirect {
            operation, indirect_op, nr_segments, id, sector_number, handle, indirect_grefs,
        }
        "blkif_response" = BlkifResponse { id, operation, status }

        "netif_tx_request" = NetifTxRequest { gref, offset, flags, id, size }
        "netif_tx_response" = NetifTxResponse { id, status }
        // `pad`: see NOT_MODELLED.
        "netif_rx_request" = NetifRxRequest { id, gref }
        "netif_rx_response" = NetifRxResponse { id, offset, flags, status }
        // The union `u` is kept as raw `[u16; 3]`: its members are checked by encoding below.
        "netif_extra_info" = NetifExtraInfo {
            "type" = ty, flags, u, "u.gso" = u, "u.mcast" = u, "u.hash" = u, "u.pad" = u,
        }
    }
    netif_extra_info_members(&mut v);

    // Event channel limits, which size the shared arrays.
    v.put("const", "EVTCHN_2L_NR_CHANNELS", events::two_level::NR_PORTS);
    v.put(
        "const",
        "EVTCHN_FIFO_NR_CHANNELS",
        events::fifo::MAX_EVENT_ARRAY_PAGES * events::fifo::EVENT_WORDS_PER_PAGE,
    );

    // Grant table entries the toolstack fills.
    v.put("const", "GNTTAB_NR_RESERVED_ENTRIES", NR_RESERVED_ENTRIES as usize);
    v.put("const", "GNTTAB_RESERVED_CONSOLE", RESERVED_CONSOLE.0 as usize);
    v.put("const", "GNTTAB_RESERVED_XENSTORE", RESERVED_XENSTORE.0 as usize);

    // Byte-ring pages, described by offsets: ring::byte reads every index as a u32.
    let index = size_of::<u32>();
    v.put("const", "XENSTORE_RING_SIZE", interface::RING_SIZE as usize);
    {
        use hypercall::abi::*;
        for (name, value) in [
            ("XENMEM_add_to_physmap", XENMEM_ADD_TO_PHYSMAP as usize),
            ("XENMEM_decrease_reservation", XENMEM_DECREASE_RESERVATION as usize),
            ("XENMEM_current_reservation", XENMEM_CURRENT_RESERVATION as usize),
            ("XENMEM_maximum_reservation", XENMEM_MAXIMUM_RESERVATION as usize),
            ("XENMEM_populate_physmap", XENMEM_POPULATE_PHYSMAP as usize),
            ("XENMAPSPACE_shared_info", XENMAPSPACE_SHARED_INFO as usize),
            ("XENMAPSPACE_grant_table", XENMAPSPACE_GRANT_TABLE as usize),
            ("HVMOP_set_param", HVMOP_SET_PARAM as usize),
            ("HVMOP_get_param", HVMOP_GET_PARAM as usize),
            ("HVM_PARAM_CALLBACK_IRQ", HVM_PARAM_CALLBACK_IRQ as usize),
            ("HVM_PARAM_STORE_PFN", HVM_PARAM_STORE_PFN as usize),
            ("HVM_PARAM_STORE_EVTCHN", HVM_PARAM_STORE_EVTCHN as usize),
            ("HVM_PARAM_CONSOLE_PFN", HVM_PARAM_CONSOLE_PFN as usize),
            ("HVM_PARAM_CONSOLE_EVTCHN", HVM_PARAM_CONSOLE_EVTCHN as usize),
            ("HVM_PARAM_CALLBACK_IRQ_TYPE_MASK", HVM_PARAM_CALLBACK_IRQ_TYPE_MASK as usize),
            (
                "HVM_PARAM_CALLBACK_TYPE_VECTOR",
                (HVM_PARAM_CALLBACK_TYPE_VECTOR
                    >> HVM_PARAM_CALLBACK_IRQ_TYPE_MASK.trailing_zeros()) as usize,
            ),
            ("__HYPERVISOR_hvm_op", nr::HVM_OP as usize),
            ("__HYPERVISOR_vcpu_op", nr::VCPU_OP as usize),
            ("VCPUOP_initialise", VCPUOP_INITIALISE as usize),
            ("VCPUOP_up", VCPUOP_UP as usize),
            ("VCPUOP_down", VCPUOP_DOWN as usize),
            ("VCPUOP_is_up", VCPUOP_IS_UP as usize),
            ("VCPUOP_register_vcpu_info", VCPUOP_REGISTER_VCPU_INFO as usize),
            ("VCPU_HVM_MODE_64B", VCPU_HVM_MODE_64B as usize),
            ("VGCF_in_kernel", VGCF_in_kernel as usize),
            ("FLAT_KERNEL_SS", FLAT_KERNEL_SS as usize),
            ("SEGBASE_GS_KERNEL", SEGBASE_GS_KERNEL as usize),
        ] {
            v.put("const", name, value);
        }
    }
    // The register union is as large as its 32-bit member; we model the 64-bit one and
    // the rest of the union as padding.
    let regs = offset_of!(VcpuHvmContext, x86_64);
    v.field("vcpu_hvm_context", "cpu_regs", regs, size_of::<VcpuHvmContext>() - regs);
    let xs = "xenstore_domain_interface";
    let (req, rsp) = (interface::REQ_RING, interface::RSP_RING);
    v.put("sizeof", xs, interface::SIZE);
    v.field(xs, "req", req.data, req.size as usize);
    v.field(xs, "rsp", rsp.data, rsp.size as usize);
    v.field(xs, "req_cons", req.cons, index);
    v.field(xs, "req_prod", req.prod, index);
    v.field(xs, "rsp_cons", rsp.cons, index);
    v.field(xs, "rsp_prod", rsp.prod, index);
    v.field(xs, "server_features", interface::SERVER_FEATURES, size_of::<u32>());
    v.field(xs, "connection", interface::CONNECTION, size_of::<u32>());
    v.field(xs, "error", interface::ERROR, size_of::<u32>());
    let out = console::xen_ring::OUT;
    v.field("xencons_interface", "out", out.data, out.size as usize);
    v.field("xencons_interface", "out_cons", out.cons, index);
    v.field("xencons_interface", "out_prod", out.prod, index);

    // Request/response rings (io/ring.h).
    v.put("const", "BLKIF_MAX_SEGMENTS_PER_REQUEST", MAX_SEGMENTS_PER_REQUEST);
    v.put("const", "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST", MAX_INDIRECT_PAGES_PER_REQUEST);
    for ring in ["blkif_sring", "netif_tx_sring", "netif_rx_sring"] {
        v.put("offsetof", &format!("{ring}.ring"), HEADER_SIZE);
    }
    for pages in [1, 2, 4, 8, 16] {
        let mut slots = |name: &str, n: u32| v.put("ring_size", &format!("{name}.{pages}"), n as _);
        slots("blkif", ring_size::<BlkifRequest, BlkifResponse>(pages));
        slots("netif_tx", ring_size::<NetifTxRequest, NetifTxResponse>(pages));
        slots("netif_rx", ring_size::<NetifRxRequest, NetifRxResponse>(pages));
    }
    v
}

/// Where `NetifExtraInfo::new` puts each member of the C union `u`: each value is encoded
/// with distinct marker bytes and found again in the struct's bytes.
fn netif_extra_info_members(v: &mut Values) {
    fn bytes_of(e: &NetifExtraInfo) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<NetifExtraInfo>()];
        b[offset_of!(NetifExtraInfo, ty)] = e.ty;
        b[offset_of!(NetifExtraInfo, flags)] = e.flags;
        for (i, w) in e.u.iter().enumerate() {
            let at = offset_of!(NetifExtraInfo, u) + i * size_of::<u16>();
            b[at..at + 2].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }
    let mut member = |extra: Extra, fields: &[(&str, &[u8])]| {
        let b = bytes_of(&NetifExtraInfo::new(extra, false));
        for (field, marker) in fields {
            // usize::MAX (a certain mismatch) if the encoding lost the value.
            let at = b.windows(marker.len()).position(|w| w == *marker).unwrap_or(usize::MAX);
            v.field("netif_extra_info", field, at, marker.len());
        }
    };
    let (size, features): (u16, u16) = (0xa2a1, 0xc2c1);
    member(
        Extra::Gso { size, ty: 0xb1, features },
        &[
            ("u.gso.size", &size.to_ne_bytes()),
            ("u.gso.type", &[0xb1]),
            ("u.gso.features", &features.to_ne_bytes()),
        ],
    );
    let addr = [0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6];
    member(Extra::McastAdd(addr), &[("u.mcast.addr", &addr)]);
    let value = [0xf1, 0xf2, 0xf3, 0xf4];
    member(
        Extra::Hash { ty: 0xe1, algorithm: 0xe2, value },
        &[("u.hash.type", &[0xe1]), ("u.hash.algorithm", &[0xe2]), ("u.hash.value", &value)],
    );
}

/// Compiles and runs `xen_headers.c`; its output, keyed like [`Values`].
fn c_values() -> BTreeMap<String, u64> {
    const HINT: &str = "run `make deps` (it installs gcc and libxen-dev)";
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xen_headers.c");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xen_headers");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `cc` ({e}): {HINT}"));
    if !cc.status.success() {
        let missing = if Path::new("/usr/include/xen/io/blkif.h").exists() {
            ""
        } else {
            "Xen's headers are not installed (/usr/include/xen/io/blkif.h is missing): "
        };
        panic!(
            "{missing}cc could not compile {}: {HINT}\n{}",
            src.display(),
            String::from_utf8_lossy(&cc.stderr)
        );
    }
    let run = Command::new(&exe).output().expect("run the compiled xen_headers");
    assert!(run.status.success(), "xen_headers failed: {}", run.status);
    let mut values = BTreeMap::new();
    for line in String::from_utf8(run.stdout).expect("UTF-8 output").lines() {
        let (key, value) = line.rsplit_once(' ').expect("`kind name value` lines");
        let value = value.parse().unwrap_or_else(|_| panic!("bad value in `{line}`"));
        assert!(values.insert(key.to_owned(), value).is_none(), "C prints `{key}` twice");
    }
    values
}

#[test]
fn layouts_match_xen_headers() {
    let c = c_values();
    let rust = rust_values().0;
    let name_of = |key: &str| key.split_once(' ').map_or(key.to_owned(), |(_, n)| n.to_owned());
    let excused = |key: &str| NOT_MODELLED.iter().any(|(n, _)| *n == name_of(key));

    let mut problems = Vec::new();
    for (key, &cv) in &c {
        match rust.get(key) {
            Some(&rv) if rv == cv => {}
            Some(&rv) => problems.push(format!("{key}: C {cv}, Rust {rv}")),
            None if excused(key) => {}
            None => problems.push(format!("{key}: C {cv}, not checked on the Rust side")),
        }
    }
    for key in rust.keys().filter(|k| !c.contains_key(*k)) {
        problems.push(format!("{key}: the C program does not print it"));
    }
    for (name, _) in NOT_MODELLED {
        let unchecked = |k: &&String| name_of(k) == *name && !rust.contains_key(*k);
        if !c.keys().any(|k| unchecked(&k)) {
            problems.push(format!("NOT_MODELLED `{name}`: no unchecked C value by that name"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} layout values differ from Xen's headers:\n  {}",
        problems.len(),
        c.len(),
        problems.join("\n  ")
    );
}
