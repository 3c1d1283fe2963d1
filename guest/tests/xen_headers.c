/*
 * Prints the layout of every structure the guest shares with Xen or another domain, as
 * Debian's libxen-dev (Xen 4.17) headers define it for x86-64, one value per line:
 *
 *     sizeof start_info 1168
 *     alignof start_info 8
 *     offsetof start_info.nr_pages 32
 *     sizeof start_info.nr_pages 8
 *     const XENSTORE_RING_SIZE 1024
 *
 * tests/xen_headers.rs compiles and runs it, and compares each line with the Rust side.
 * Names follow the C headers; every field of every structure is listed (nested structs and
 * union members as dotted paths), so a field the Rust side does not check is noticed there.
 */

/* The interface of the headers' own Xen (4.17), as a current guest uses it. */
#define __XEN_INTERFACE_VERSION__ __XEN_LATEST_INTERFACE_VERSION__

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <xen/xen.h>
#include <xen/callback.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/memory.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/sched.h>
#include <xen/vcpu.h>
#include <xen/hvm/hvm_vcpu.h>
#include <xen/version.h>
#include <xen/io/blkif.h>
#include <xen/io/console.h>
#include <xen/io/netif.h>
#include <xen/io/ring.h>
#include <xen/io/xs_wire.h>

#define PRINT(kind, name, value) printf("%s %s %zu\n", kind, name, (size_t)(value))

/* A structure (or union) `T` printed as `name`, and its fields (dotted paths allowed). */
#define STRUCT(T, name)                                                                     \
    do {                                                                                    \
        PRINT("sizeof", name, sizeof(T));                                                   \
        PRINT("alignof", name, _Alignof(T));                                                \
    } while (0)
#define FIELD(T, name, f)                                                                   \
    do {                                                                                    \
        PRINT("offsetof", name "." #f, offsetof(T, f));                                     \
        PRINT("sizeof", name "." #f, sizeof(((T *)0)->f));                                  \
    } while (0)
#define TYPE(T) PRINT("sizeof", #T, sizeof(T))
#define CONST(c) PRINT("const", #c, c)

int main(void)
{
    /* Scalar types fields are made of. */
    TYPE(xen_pfn_t);
    TYPE(xen_ulong_t);
    TYPE(domid_t);
    TYPE(evtchn_port_t);
    TYPE(grant_ref_t);
    TYPE(xen_extraversion_t);

    /* xen.h, arch-x86/xen.h, arch-x86/xen-x86_64.h */
#define T struct start_info
    STRUCT(T, "start_info");
    FIELD(T, "start_info", magic);
    FIELD(T, "start_info", nr_pages);
    FIELD(T, "start_info", shared_info);
    FIELD(T, "start_info", flags);
    FIELD(T, "start_info", store_mfn);
    FIELD(T, "start_info", store_evtchn);
    FIELD(T, "start_info", console);
    FIELD(T, "start_info", console.domU);
    FIELD(T, "start_info", console.domU.mfn);
    FIELD(T, "start_info", console.domU.evtchn);
    FIELD(T, "start_info", console.dom0);
    FIELD(T, "start_info", console.dom0.info_off);
    FIELD(T, "start_info", console.dom0.info_size);
    FIELD(T, "start_info", pt_base);
    FIELD(T, "start_info", nr_pt_frames);
    FIELD(T, "start_info", mfn_list);
    FIELD(T, "start_info", mod_start);
    FIELD(T, "start_info", mod_len);
    FIELD(T, "start_info", cmd_line);
    FIELD(T, "start_info", first_p2m_pfn);
    FIELD(T, "start_info", nr_p2m_frames);
#undef T

#define T struct shared_info
    STRUCT(T, "shared_info");
    FIELD(T, "shared_info", vcpu_info);
    FIELD(T, "shared_info", evtchn_pending);
    FIELD(T, "shared_info", evtchn_mask);
    FIELD(T, "shared_info", wc_version);
    FIELD(T, "shared_info", wc_sec);
    FIELD(T, "shared_info", wc_nsec);
    FIELD(T, "shared_info", wc_sec_hi);
    FIELD(T, "shared_info", arch);
    FIELD(T, "shared_info", arch.max_pfn);
    FIELD(T, "shared_info", arch.pfn_to_mfn_frame_list_list);
    FIELD(T, "shared_info", arch.nmi_reason);
    FIELD(T, "shared_info", arch.p2m_cr3);
    FIELD(T, "shared_info", arch.p2m_vaddr);
    FIELD(T, "shared_info", arch.p2m_generation);
#undef T

#define T struct vcpu_info
    STRUCT(T, "vcpu_info");
    FIELD(T, "vcpu_info", evtchn_upcall_pending);
    FIELD(T, "vcpu_info", evtchn_upcall_mask);
    FIELD(T, "vcpu_info", evtchn_pending_sel);
    FIELD(T, "vcpu_info", arch);
    FIELD(T, "vcpu_info", arch.cr2);
    FIELD(T, "vcpu_info", arch.pad);
    FIELD(T, "vcpu_info", time);
#undef T

#define T struct vcpu_time_info
    STRUCT(T, "vcpu_time_info");
    FIELD(T, "vcpu_time_info", version);
    FIELD(T, "vcpu_time_info", pad0);
    FIELD(T, "vcpu_time_info", tsc_timestamp);
    FIELD(T, "vcpu_time_info", system_time);
    FIELD(T, "vcpu_time_info", tsc_to_system_mul);
    FIELD(T, "vcpu_time_info", tsc_shift);
    FIELD(T, "vcpu_time_info", flags);
    FIELD(T, "vcpu_time_info", pad1);
#undef T

#define T struct multicall_entry
    STRUCT(T, "multicall_entry");
    FIELD(T, "multicall_entry", op);
    FIELD(T, "multicall_entry", result);
    FIELD(T, "multicall_entry", args);
#undef T

#define T struct mmu_update
    STRUCT(T, "mmu_update");
    FIELD(T, "mmu_update", ptr);
    FIELD(T, "mmu_update", val);
#undef T

#define T struct mmuext_op
    STRUCT(T, "mmuext_op");
    FIELD(T, "mmuext_op", cmd);
    FIELD(T, "mmuext_op", arg1);
    FIELD(T, "mmuext_op", arg1.mfn);
    FIELD(T, "mmuext_op", arg1.linear_addr);
    FIELD(T, "mmuext_op", arg2);
    FIELD(T, "mmuext_op", arg2.nr_ents);
    FIELD(T, "mmuext_op", arg2.vcpumask);
    FIELD(T, "mmuext_op", arg2.src_mfn);
#undef T

#define T struct trap_info
    STRUCT(T, "trap_info");
    FIELD(T, "trap_info", vector);
    FIELD(T, "trap_info", flags);
    FIELD(T, "trap_info", cs);
    FIELD(T, "trap_info", address);
#undef T

    /* callback.h */
#define T struct callback_register
    STRUCT(T, "callback_register");
    FIELD(T, "callback_register", type);
    FIELD(T, "callback_register", flags);
    FIELD(T, "callback_register", address);
#undef T

    /* memory.h, hvm/hvm_op.h, hvm/params.h: what a PVH guest sets up itself */
#define T struct xen_add_to_physmap
    STRUCT(T, "xen_add_to_physmap");
    FIELD(T, "xen_add_to_physmap", domid);
    FIELD(T, "xen_add_to_physmap", size);
    FIELD(T, "xen_add_to_physmap", space);
    FIELD(T, "xen_add_to_physmap", idx);
    FIELD(T, "xen_add_to_physmap", gpfn);
#undef T

#define T struct xen_memory_reservation
    STRUCT(T, "xen_memory_reservation");
    FIELD(T, "xen_memory_reservation", extent_start);
    FIELD(T, "xen_memory_reservation", nr_extents);
    FIELD(T, "xen_memory_reservation", extent_order);
    FIELD(T, "xen_memory_reservation", mem_flags);
    FIELD(T, "xen_memory_reservation", domid);
#undef T

#define T struct xen_memory_domain
    STRUCT(T, "xen_memory_domain");
    FIELD(T, "xen_memory_domain", domid);
#undef T

#define T struct xen_hvm_param
    STRUCT(T, "xen_hvm_param");
    FIELD(T, "xen_hvm_param", domid);
    FIELD(T, "xen_hvm_param", index);
    FIELD(T, "xen_hvm_param", value);
#undef T

#define T struct vcpu_hvm_x86_64
    STRUCT(T, "vcpu_hvm_x86_64");
    FIELD(T, "vcpu_hvm_x86_64", rax);
    FIELD(T, "vcpu_hvm_x86_64", rcx);
    FIELD(T, "vcpu_hvm_x86_64", rdx);
    FIELD(T, "vcpu_hvm_x86_64", rbx);
    FIELD(T, "vcpu_hvm_x86_64", rsp);
    FIELD(T, "vcpu_hvm_x86_64", rbp);
    FIELD(T, "vcpu_hvm_x86_64", rsi);
    FIELD(T, "vcpu_hvm_x86_64", rdi);
    FIELD(T, "vcpu_hvm_x86_64", rip);
    FIELD(T, "vcpu_hvm_x86_64", rflags);
    FIELD(T, "vcpu_hvm_x86_64", cr0);
    FIELD(T, "vcpu_hvm_x86_64", cr3);
    FIELD(T, "vcpu_hvm_x86_64", cr4);
    FIELD(T, "vcpu_hvm_x86_64", efer);
#undef T

#define T struct vcpu_hvm_context
    STRUCT(T, "vcpu_hvm_context");
    FIELD(T, "vcpu_hvm_context", mode);
    FIELD(T, "vcpu_hvm_context", pad);
    FIELD(T, "vcpu_hvm_context", cpu_regs);
    FIELD(T, "vcpu_hvm_context", cpu_regs.x86_64);
#undef T

#define T struct vcpu_register_vcpu_info
    STRUCT(T, "vcpu_register_vcpu_info");
    FIELD(T, "vcpu_register_vcpu_info", mfn);
    FIELD(T, "vcpu_register_vcpu_info", offset);
    FIELD(T, "vcpu_register_vcpu_info", rsvd);
#undef T

#define T struct vcpu_guest_context
    STRUCT(T, "vcpu_guest_context");
    FIELD(T, "vcpu_guest_context", fpu_ctxt);
    FIELD(T, "vcpu_guest_context", flags);
    FIELD(T, "vcpu_guest_context", user_regs);
    FIELD(T, "vcpu_guest_context", user_regs.rdi);
    FIELD(T, "vcpu_guest_context", user_regs.rip);
    FIELD(T, "vcpu_guest_context", user_regs.cs);
    FIELD(T, "vcpu_guest_context", user_regs.rflags);
    FIELD(T, "vcpu_guest_context", user_regs.rsp);
    FIELD(T, "vcpu_guest_context", user_regs.ss);
    FIELD(T, "vcpu_guest_context", trap_ctxt);
    FIELD(T, "vcpu_guest_context", ldt_base);
    FIELD(T, "vcpu_guest_context", ldt_ents);
    FIELD(T, "vcpu_guest_context", gdt_frames);
    FIELD(T, "vcpu_guest_context", gdt_ents);
    FIELD(T, "vcpu_guest_context", kernel_ss);
    FIELD(T, "vcpu_guest_context", kernel_sp);
    FIELD(T, "vcpu_guest_context", ctrlreg);
    FIELD(T, "vcpu_guest_context", debugreg);
    FIELD(T, "vcpu_guest_context", event_callback_eip);
    FIELD(T, "vcpu_guest_context", failsafe_callback_eip);
    FIELD(T, "vcpu_guest_context", syscall_callback_eip);
    FIELD(T, "vcpu_guest_context", vm_assist);
    FIELD(T, "vcpu_guest_context", fs_base);
    FIELD(T, "vcpu_guest_context", gs_base_kernel);
    FIELD(T, "vcpu_guest_context", gs_base_user);
#undef T

    CONST(VCPUOP_initialise);
    CONST(VCPUOP_up);
    CONST(VCPUOP_down);
    CONST(VCPUOP_is_up);
    CONST(VCPUOP_register_vcpu_info);
    CONST(VCPU_HVM_MODE_64B);
    CONST(VGCF_in_kernel);
    CONST(FLAT_KERNEL_SS);
    CONST(SEGBASE_GS_KERNEL);
    CONST(__HYPERVISOR_vcpu_op);
    CONST(XENMEM_add_to_physmap);
    CONST(XENMEM_decrease_reservation);
    CONST(XENMEM_current_reservation);
    CONST(XENMEM_maximum_reservation);
    CONST(XENMEM_populate_physmap);
    CONST(XENMAPSPACE_shared_info);
    CONST(XENMAPSPACE_grant_table);
    CONST(HVMOP_set_param);
    CONST(HVMOP_get_param);
    CONST(HVM_PARAM_CALLBACK_IRQ);
    CONST(HVM_PARAM_STORE_PFN);
    CONST(HVM_PARAM_STORE_EVTCHN);
    CONST(HVM_PARAM_CONSOLE_PFN);
    CONST(HVM_PARAM_CONSOLE_EVTCHN);
    CONST(HVM_PARAM_CALLBACK_IRQ_TYPE_MASK);
    CONST(HVM_PARAM_CALLBACK_TYPE_VECTOR);
    CONST(__HYPERVISOR_hvm_op);

    /* sched.h */
#define T struct sched_shutdown
    STRUCT(T, "sched_shutdown");
    FIELD(T, "sched_shutdown", reason);
#undef T

#define T struct sched_poll
    STRUCT(T, "sched_poll");
    FIELD(T, "sched_poll", ports);
    FIELD(T, "sched_poll", nr_ports);
    FIELD(T, "sched_poll", timeout);
#undef T

    /* event_channel.h */
#define T struct evtchn_alloc_unbound
    STRUCT(T, "evtchn_alloc_unbound");
    FIELD(T, "evtchn_alloc_unbound", dom);
    FIELD(T, "evtchn_alloc_unbound", remote_dom);
    FIELD(T, "evtchn_alloc_unbound", port);
#undef T

#define T struct evtchn_bind_interdomain
    STRUCT(T, "evtchn_bind_interdomain");
    FIELD(T, "evtchn_bind_interdomain", remote_dom);
    FIELD(T, "evtchn_bind_interdomain", remote_port);
    FIELD(T, "evtchn_bind_interdomain", local_port);
#undef T

#define T struct evtchn_bind_ipi
    STRUCT(T, "evtchn_bind_ipi");
    FIELD(T, "evtchn_bind_ipi", vcpu);
    FIELD(T, "evtchn_bind_ipi", port);
#undef T

#define T struct evtchn_bind_vcpu
    STRUCT(T, "evtchn_bind_vcpu");
    FIELD(T, "evtchn_bind_vcpu", port);
    FIELD(T, "evtchn_bind_vcpu", vcpu);
#undef T

#define T struct evtchn_bind_virq
    STRUCT(T, "evtchn_bind_virq");
    FIELD(T, "evtchn_bind_virq", virq);
    FIELD(T, "evtchn_bind_virq", vcpu);
    FIELD(T, "evtchn_bind_virq", port);
#undef T

#define T struct evtchn_close
    STRUCT(T, "evtchn_close");
    FIELD(T, "evtchn_close", port);
#undef T

#define T struct evtchn_send
    STRUCT(T, "evtchn_send");
    FIELD(T, "evtchn_send", port);
#undef T

#define T struct evtchn_status
    STRUCT(T, "evtchn_status");
    FIELD(T, "evtchn_status", dom);
    FIELD(T, "evtchn_status", port);
    FIELD(T, "evtchn_status", status);
    FIELD(T, "evtchn_status", vcpu);
    FIELD(T, "evtchn_status", u);
    FIELD(T, "evtchn_status", u.unbound);
    FIELD(T, "evtchn_status", u.unbound.dom);
    FIELD(T, "evtchn_status", u.interdomain);
    FIELD(T, "evtchn_status", u.interdomain.dom);
    FIELD(T, "evtchn_status", u.interdomain.port);
    FIELD(T, "evtchn_status", u.pirq);
    FIELD(T, "evtchn_status", u.virq);
#undef T

#define T struct evtchn_unmask
    STRUCT(T, "evtchn_unmask");
    FIELD(T, "evtchn_unmask", port);
#undef T

#define T struct evtchn_expand_array
    STRUCT(T, "evtchn_expand_array");
    FIELD(T, "evtchn_expand_array", array_gfn);
#undef T

#define T struct evtchn_init_control
    STRUCT(T, "evtchn_init_control");
    FIELD(T, "evtchn_init_control", control_gfn);
    FIELD(T, "evtchn_init_control", offset);
    FIELD(T, "evtchn_init_control", vcpu);
    FIELD(T, "evtchn_init_control", link_bits);
    FIELD(T, "evtchn_init_control", _pad);
#undef T

#define T struct evtchn_fifo_control_block
    STRUCT(T, "evtchn_fifo_control_block");
    FIELD(T, "evtchn_fifo_control_block", ready);
    FIELD(T, "evtchn_fifo_control_block", _rsvd);
    FIELD(T, "evtchn_fifo_control_block", head);
#undef T

    CONST(EVTCHN_2L_NR_CHANNELS);
    CONST(EVTCHN_FIFO_NR_CHANNELS);

    /* grant_table.h */
    CONST(GNTTAB_NR_RESERVED_ENTRIES);
    CONST(GNTTAB_RESERVED_CONSOLE);
    CONST(GNTTAB_RESERVED_XENSTORE);

#define T struct grant_entry_v1
    STRUCT(T, "grant_entry_v1");
    FIELD(T, "grant_entry_v1", flags);
    FIELD(T, "grant_entry_v1", domid);
    FIELD(T, "grant_entry_v1", frame);
#undef T

#define T struct gnttab_setup_table
    STRUCT(T, "gnttab_setup_table");
    FIELD(T, "gnttab_setup_table", dom);
    FIELD(T, "gnttab_setup_table", nr_frames);
    FIELD(T, "gnttab_setup_table", status);
    FIELD(T, "gnttab_setup_table", frame_list);
#undef T

#define T struct gnttab_query_size
    STRUCT(T, "gnttab_query_size");
    FIELD(T, "gnttab_query_size", dom);
    FIELD(T, "gnttab_query_size", nr_frames);
    FIELD(T, "gnttab_query_size", max_nr_frames);
    FIELD(T, "gnttab_query_size", status);
#undef T

#define T struct gnttab_copy_ptr
    STRUCT(T, "gnttab_copy_ptr");
    FIELD(T, "gnttab_copy_ptr", u);
    FIELD(T, "gnttab_copy_ptr", u.ref);
    FIELD(T, "gnttab_copy_ptr", u.gmfn);
    FIELD(T, "gnttab_copy_ptr", domid);
    FIELD(T, "gnttab_copy_ptr", offset);
#undef T

#define T struct gnttab_copy
    STRUCT(T, "gnttab_copy");
    FIELD(T, "gnttab_copy", source);
    FIELD(T, "gnttab_copy", dest);
    FIELD(T, "gnttab_copy", len);
    FIELD(T, "gnttab_copy", flags);
    FIELD(T, "gnttab_copy", status);
#undef T

#define T struct gnttab_map_grant_ref
    STRUCT(T, "gnttab_map_grant_ref");
    FIELD(T, "gnttab_map_grant_ref", host_addr);
    FIELD(T, "gnttab_map_grant_ref", flags);
    FIELD(T, "gnttab_map_grant_ref", ref);
    FIELD(T, "gnttab_map_grant_ref", dom);
    FIELD(T, "gnttab_map_grant_ref", status);
    FIELD(T, "gnttab_map_grant_ref", handle);
    FIELD(T, "gnttab_map_grant_ref", dev_bus_addr);
#undef T

#define T struct gnttab_unmap_grant_ref
    STRUCT(T, "gnttab_unmap_grant_ref");
    FIELD(T, "gnttab_unmap_grant_ref", host_addr);
    FIELD(T, "gnttab_unmap_grant_ref", dev_bus_addr);
    FIELD(T, "gnttab_unmap_grant_ref", handle);
    FIELD(T, "gnttab_unmap_grant_ref", status);
#undef T

    /* io/xs_wire.h */
    CONST(XENSTORE_RING_SIZE);

#define T struct xsd_sockmsg
    STRUCT(T, "xsd_sockmsg");
    FIELD(T, "xsd_sockmsg", type);
    FIELD(T, "xsd_sockmsg", req_id);
    FIELD(T, "xsd_sockmsg", tx_id);
    FIELD(T, "xsd_sockmsg", len);
#undef T

#define T struct xenstore_domain_interface
    STRUCT(T, "xenstore_domain_interface");
    FIELD(T, "xenstore_domain_interface", req);
    FIELD(T, "xenstore_domain_interface", rsp);
    FIELD(T, "xenstore_domain_interface", req_cons);
    FIELD(T, "xenstore_domain_interface", req_prod);
    FIELD(T, "xenstore_domain_interface", rsp_cons);
    FIELD(T, "xenstore_domain_interface", rsp_prod);
    FIELD(T, "xenstore_domain_interface", server_features);
    FIELD(T, "xenstore_domain_interface", connection);
    FIELD(T, "xenstore_domain_interface", error);
#undef T

    /* io/console.h */
#define T struct xencons_interface
    STRUCT(T, "xencons_interface");
    FIELD(T, "xencons_interface", in);
    FIELD(T, "xencons_interface", out);
    FIELD(T, "xencons_interface", in_cons);
    FIELD(T, "xencons_interface", in_prod);
    FIELD(T, "xencons_interface", out_cons);
    FIELD(T, "xencons_interface", out_prod);
#undef T

    /* io/blkif.h */
    CONST(BLKIF_MAX_SEGMENTS_PER_REQUEST);
    CONST(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);

#define T struct blkif_request_segment
    STRUCT(T, "blkif_request_segment");
    FIELD(T, "blkif_request_segment", gref);
    FIELD(T, "blkif_request_segment", first_sect);
    FIELD(T, "blkif_request_segment", last_sect);
#undef T

#define T struct blkif_request
    STRUCT(T, "blkif_request");
    FIELD(T, "blkif_request", operation);
    FIELD(T, "blkif_request", nr_segments);
    FIELD(T, "blkif_request", handle);
    FIELD(T, "blkif_request", id);
    FIELD(T, "blkif_request", sector_number);
    FIELD(T, "blkif_request", seg);
#undef T

#define T struct blkif_request_discard
    STRUCT(T, "blkif_request_discard");
    FIELD(T, "blkif_request_discard", operation);
    FIELD(T, "blkif_request_discard", flag);
    FIELD(T, "blkif_request_discard", handle);
    FIELD(T, "blkif_request_discard", id);
    FIELD(T, "blkif_request_discard", sector_number);
    FIELD(T, "blkif_request_discard", nr_sectors);
#undef T

#define T struct blkif_request_indirect
    STRUCT(T, "blkif_request_indirect");
    FIELD(T, "blkif_request_indirect", operation);
    FIELD(T, "blkif_request_indirect", indirect_op);
    FIELD(T, "blkif_request_indirect", nr_segments);
    FIELD(T, "blkif_request_indirect", id);
    FIELD(T, "blkif_request_indirect", sector_number);
    FIELD(T, "blkif_request_indirect", handle);
    FIELD(T, "blkif_request_indirect", indirect_grefs);
#undef T

#define T struct blkif_response
    STRUCT(T, "blkif_response");
    FIELD(T, "blkif_response", id);
    FIELD(T, "blkif_response", operation);
    FIELD(T, "blkif_response", status);
#undef T

    /* io/netif.h */
#define T struct netif_tx_request
    STRUCT(T, "netif_tx_request");
    FIELD(T, "netif_tx_request", gref);
    FIELD(T, "netif_tx_request", offset);
    FIELD(T, "netif_tx_request", flags);
    FIELD(T, "netif_tx_request", id);
    FIELD(T, "netif_tx_request", size);
#undef T

#define T struct netif_tx_response
    STRUCT(T, "netif_tx_response");
    FIELD(T, "netif_tx_response", id);
    FIELD(T, "netif_tx_response", status);
#undef T

#define T struct netif_rx_request
    STRUCT(T, "netif_rx_request");
    FIELD(T, "netif_rx_request", id);
    FIELD(T, "netif_rx_request", pad);
    FIELD(T, "netif_rx_request", gref);
#undef T

#define T struct netif_rx_response
    STRUCT(T, "netif_rx_response");
    FIELD(T, "netif_rx_response", id);
    FIELD(T, "netif_rx_response", offset);
    FIELD(T, "netif_rx_response", flags);
    FIELD(T, "netif_rx_response", status);
#undef T

#define T struct netif_extra_info
    STRUCT(T, "netif_extra_info");
    FIELD(T, "netif_extra_info", type);
    FIELD(T, "netif_extra_info", flags);
    FIELD(T, "netif_extra_info", u);
    FIELD(T, "netif_extra_info", u.gso);
    FIELD(T, "netif_extra_info", u.gso.size);
    FIELD(T, "netif_extra_info", u.gso.type);
    FIELD(T, "netif_extra_info", u.gso.pad);
    FIELD(T, "netif_extra_info", u.gso.features);
    FIELD(T, "netif_extra_info", u.mcast);
    FIELD(T, "netif_extra_info", u.mcast.addr);
    FIELD(T, "netif_extra_info", u.hash);
    FIELD(T, "netif_extra_info", u.hash.type);
    FIELD(T, "netif_extra_info", u.hash.algorithm);
    FIELD(T, "netif_extra_info", u.hash.value);
    FIELD(T, "netif_extra_info", u.pad);
#undef T

    /* io/ring.h: where the slots start, and how many fit in 1 to 16 pages. */
    PRINT("offsetof", "blkif_sring.ring", offsetof(struct blkif_sring, ring));
    PRINT("offsetof", "netif_tx_sring.ring", offsetof(struct netif_tx_sring, ring));
    PRINT("offsetof", "netif_rx_sring.ring", offsetof(struct netif_rx_sring, ring));
    for (unsigned pages = 1; pages <= 16; pages *= 2) {
        printf("ring_size blkif.%u %zu\n", pages, (size_t)__CONST_RING_SIZE(blkif, 4096 * pages));
        printf("ring_size netif_tx.%u %zu\n", pages,
               (size_t)__CONST_RING_SIZE(netif_tx, 4096 * pages));
        printf("ring_size netif_rx.%u %zu\n", pages,
               (size_t)__CONST_RING_SIZE(netif_rx, 4096 * pages));
    }
    return 0;
}
