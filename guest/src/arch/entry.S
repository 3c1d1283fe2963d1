/*
 * Entry points, ELF notes and boot-time data of the image (AT&T syntax).
 *
 * Xen PV enters `startup_xen` in 64-bit mode with paging on, rsi = start_info.
 * QEMU's PVH loader (and Xen's, for PVH guests) enters `pvh_start32` in 32-bit protected
 * mode with paging off and ebx = the physical address of hvm_start_info.
 */

.set KERNEL_BASE, 0xffffffff80000000

/* ---- Xen ELF notes (public/elfnote.h) ---- */
.macro xen_note_begin type
    .balign 4
    .long 4
    .long 772f - 771f
    .long \type
    .asciz "Xen"
771:
.endm
.macro xen_note_end
772: .balign 4
.endm
.macro xen_note_str type, text
    xen_note_begin \type
    .asciz "\text"
    xen_note_end
.endm
.macro xen_note_quad type, value
    xen_note_begin \type
    .quad \value
    xen_note_end
.endm

    .section .note.Xen, "a", @note
    xen_note_str  6, "rust-unikernel"                     /* GUEST_OS */
    xen_note_str  7, "0.1"                                /* GUEST_VERSION */
    xen_note_str  5, "xen-3.0"                            /* XEN_VERSION */
    xen_note_quad 3, KERNEL_BASE                          /* VIRT_BASE */
    xen_note_quad 4, 0                                    /* PADDR_OFFSET */
    xen_note_quad 1, startup_xen                          /* ENTRY */
    xen_note_quad 2, hypercall_page                       /* HYPERCALL_PAGE */
    xen_note_str 10, "!writable_page_tables"              /* FEATURES */
    xen_note_str  8, "generic"                            /* LOADER */
    xen_note_str  9, "yes"                                /* PAE_MODE */
    xen_note_begin 18                                     /* PHYS32_ENTRY */
    .long pvh_start32 - KERNEL_BASE
    xen_note_end

/* The boot GDT and its flat data selector in every data segment register (fs, gs null): the
 * boot CPU's and a native secondary CPU's first thing at the link address. */
.macro load_boot_segments
    lgdt boot_gdt_ptr64(%rip)
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
.endm

/* ---- Xen PV entry ---- */
    .section .text.boot, "ax"
    .code64
    .globl startup_xen
startup_xen:
    cld
    leaq boot_stack_top(%rip), %rsp
    movq %rsi, %rdi
    call xen_pv_start
    ud2

/* ---- PVH entry: 32-bit, paging off ---- */
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi
    lgdt (boot_gdt_ptr32 - KERNEL_BASE)
    movl %cr4, %eax
    orl $0x20, %eax                         /* PAE */
    movl %eax, %cr4
    movl $(boot_pml4 - KERNEL_BASE), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx                  /* EFER */
    rdmsr
    orl $0x100, %eax                        /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax                   /* PG | WP | PE */
    movl %eax, %cr0
    ljmp $0x08, $(pvh_start64_low - KERNEL_BASE)

    .code64
pvh_start64_low:
    /* Running at the identity-mapped low address: move to the link address. */
    movabsq $pvh_start64_high, %rax
    jmp *%rax
pvh_start64_high:
    load_boot_segments
    leaq boot_stack_top(%rip), %rsp
    movl %esi, %edi
    call pvh_start
    ud2

/* ---- Exception and callback entry stubs ----
 * Both paths build the same TrapFrame (see traps.rs) and call trap_dispatch.
 * Xen PV bounces exceptions with rcx and r11 pushed on top of the hardware-like frame,
 * and returns through HYPERVISOR_iret, which also restores the event mask.
 */
.macro push_zero_unless_errcode vec
    .if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq $0
    .endif
.endm

.macro save_regs
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
.endm

.macro restore_regs
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
.endm

    .text
    .balign 16
trap_common_native:
    save_regs
    movq %rsp, %rdi
    call trap_dispatch
    restore_regs
    addq $16, %rsp
    iretq

    .balign 16
trap_common_xen:
    save_regs
    movq %rsp, %rdi
    call trap_dispatch
    restore_regs
    addq $16, %rsp
    pushq $0                                /* iret flags: not in a syscall */
    jmp hypercall_page + 23 * 32            /* __HYPERVISOR_iret */

.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
trap_native_\vec:
    push_zero_unless_errcode \vec
    pushq $\vec
    jmp trap_common_native

    .balign 16
trap_xen_\vec:
    popq %rcx
    popq %r11
    push_zero_unless_errcode \vec
    pushq $\vec
    jmp trap_common_xen
.endr

/* Natively, the legacy PIC's IRQs (remapped to vectors 0x20..0x2f) enter the same way, and
 * so do the local APIC's wake-up IPI (0x30) and spurious vector (0x31). */
.irp vec, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50
    .balign 16
trap_native_\vec:
    pushq $0
    pushq $\vec
    jmp trap_common_native
.endr

    .balign 16
    .globl xen_event_callback
xen_event_callback:
    popq %rcx
    popq %r11
    pushq $0
    pushq $256                              /* VECTOR_XEN_EVENT */
    jmp trap_common_xen

    /* Xen PVH: the event upcall arrives as an interrupt vector (xen_pvh::CALLBACK_VECTOR). */
    .balign 16
    .globl xen_hvm_callback
xen_hvm_callback:
    pushq $0
    pushq $256                              /* VECTOR_XEN_EVENT */
    jmp trap_common_native

    .balign 16
    .globl xen_failsafe_callback
xen_failsafe_callback:
    popq %rcx
    popq %r11
    pushq $0
    pushq $257                              /* VECTOR_XEN_FAILSAFE */
    jmp trap_common_xen

    .section .rodata
    .balign 8
    .globl trap_native_stubs
trap_native_stubs:
.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50
    .quad trap_native_\vec
.endr
    .globl trap_xen_stubs
trap_xen_stubs:
.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad trap_xen_\vec
.endr

/* ---- Natively, where a secondary CPU starts (INIT-SIPI-SIPI) ----
 * The boot CPU copies ap_trampoline..ap_trampoline_end to AP_TRAMPOLINE (below 1 MiB, page
 * aligned: the SIPI's vector is its page number), fills the ap_* slots, and sends the SIPI.
 * The CPU starts there in real mode, goes through 32-bit protected mode on a GDT of the
 * trampoline's own, turns on long mode with the boot CPU's CR3 and EFER (the boot CPU put
 * the identity map of low memory back for this), and jumps to ap_start64 at the link
 * address. Every address in the trampoline is absolute, computed from AP_TRAMPOLINE.
 */
.set AP_TRAMPOLINE, 0x8000
    .section .rodata
    .balign 16
    .globl ap_trampoline
ap_trampoline:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (AP_TRAMPOLINE + ap_gdt_ptr - ap_trampoline)
    movl %cr0, %eax
    orl $1, %eax                            /* PE */
    movl %eax, %cr0
    ljmpl $0x08, $(AP_TRAMPOLINE + ap_pm32 - ap_trampoline)
    .code32
ap_pm32:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %cr4, %eax
    orl $0x20, %eax                         /* PAE */
    movl %eax, %cr4
    movl (AP_TRAMPOLINE + ap_cr3 - ap_trampoline), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx                  /* EFER: the boot CPU's (LME, NXE) */
    movl (AP_TRAMPOLINE + ap_efer - ap_trampoline), %eax
    xorl %edx, %edx
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax                   /* PG | WP | PE */
    movl %eax, %cr0
    ljmpl $0x18, $(AP_TRAMPOLINE + ap_lm64 - ap_trampoline)
    .code64
ap_lm64:
    movq (AP_TRAMPOLINE + ap_target - ap_trampoline), %rax
    jmp *%rax
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff                /* 0x10: data */
    .quad 0x00af9a000000ffff                /* 0x18: 64-bit code */
ap_gdt_end:
ap_gdt_ptr:
    .word ap_gdt_end - ap_gdt - 1
    .long AP_TRAMPOLINE + ap_gdt - ap_trampoline
    .balign 8
    .globl ap_cr3, ap_efer, ap_target, ap_stack, ap_cpu, ap_percpu
ap_cr3:     .quad 0
ap_efer:    .quad 0
ap_target:  .quad 0
ap_stack:   .quad 0
ap_cpu:     .quad 0
ap_percpu:  .quad 0
    .globl ap_trampoline_end
ap_trampoline_end:

    .text
    .globl ap_start64
ap_start64:
    load_boot_segments
    movq (AP_TRAMPOLINE + ap_stack - ap_trampoline), %rsp
    movq (AP_TRAMPOLINE + ap_cpu - ap_trampoline), %rdi
    movq (AP_TRAMPOLINE + ap_percpu - ap_trampoline), %rsi
    call native_secondary_entry
    ud2

/* ---- The hypercall page: Xen fills it (PV) before we run ---- */
    .section .text.hypercall_page, "ax"
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc

/* ---- Native boot GDT and page tables ---- */
    .section .rodata
    .balign 16
    .globl boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff                /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff                /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr32:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt - KERNEL_BASE
    .balign 8
boot_gdt_ptr64:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

/*
 * Identity-map the first GiB (for the switch to long mode) and map the first 2 GiB of
 * physical memory at KERNEL_BASE, with 2 MiB pages (QEMU's default CPU has no 1 GiB pages).
 */
    .section .data.boot_page_tables, "aw"
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .quad boot_pdpt_low - KERNEL_BASE + 3
    .fill 510, 8, 0
    .quad boot_pdpt_high - KERNEL_BASE + 3
    .globl boot_pdpt_low
boot_pdpt_low:
    .quad boot_pd0 - KERNEL_BASE + 3
    .fill 511, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd0 - KERNEL_BASE + 3
    .quad boot_pd1 - KERNEL_BASE + 3
boot_pd0:
    .set page, 0
    .rept 512
    .quad (page << 21) + 0x83
    .set page, page + 1
    .endr
boot_pd1:
    .rept 512
    .quad (page << 21) + 0x83
    .set page, page + 1
    .endr

/* ---- The page we map shared_info over, and the boot stack above its guard page ---- */
    .section .bss.page_aligned, "aw", @nobits
    .balign 4096
    .globl xen_shared_info_page
xen_shared_info_page:
    .skip 4096
    .globl boot_stack_guard
boot_stack_guard:
    .skip 4096
    .globl boot_stack
boot_stack:
    .skip 65536
    .globl boot_stack_top
boot_stack_top:
/* Natively and under PVH, #DF, NMI and #MC switch to this stack (IST 1): they must work when
 * the boot stack is exhausted. */
    .globl fault_stack_top
    .skip 16384
fault_stack_top:
