/* Entry points of the test guests: `_start` (64-bit, entered by qosvisor with long mode set up,
   rdi = boot info) and a PVH 32-bit entry that enters long mode itself (QEMU -M microvm). */
#define PVH_NOTE_TYPE 18 /* XEN_ELFNOTE_PHYS32_ENTRY */

  .section .note.pvh, "a"
  .balign 4
  .long 4                /* name size ("Xen\0") */
  .long 4                /* desc size */
  .long PVH_NOTE_TYPE
  .asciz "Xen"
  .long pvh_start32

  .section .text.boot, "ax"
  .code64
  .globl _start
_start:
  lea rt_boot_stack_top(%rip), %rsp
  /* rdi (boot info from qosvisor) passes straight to rt_entry */
  call rt_entry
1:
  hlt
  jmp 1b

  .code32
pvh_start32:
  /* Flat 32-bit protected mode, paging off, ebx = hvm_start_info (kept for the command line). */
  movl %ebx, rt_pvh_start_info
  movl $pvh_gdt_desc, %eax
  lgdt (%eax)
  movl %cr4, %eax
  orl $0x20, %eax                 /* PAE */
  movl %eax, %cr4
  movl $pvh_pml4, %eax
  movl %eax, %cr3
  movl $0xc0000080, %ecx          /* EFER.LME */
  rdmsr
  orl $0x100, %eax
  wrmsr
  movl %cr0, %eax
  orl $0x80000001, %eax           /* PG | PE */
  movl %eax, %cr0
  ljmp $0x08, $pvh_start64

  .code64
pvh_start64:
  movw $0x10, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  xorl %edi, %edi                 /* no qosvisor boot info */
  jmp _start

  /* Page tables for the PVH path only: 1 GiB identity mapped with 2 MiB pages, user-accessible
     so ring-3 code can use any of it. Static, so no ring-0 loop builds them. */
  .section .data.pagetables, "aw"
  .balign 4096
pvh_pml4:
  .quad pvh_pdpt + 0x7
  .fill 511, 8, 0
pvh_pdpt:
  .quad pvh_pd + 0x7
  .fill 511, 8, 0
pvh_pd:
  .set pd_index, 0
  .rept 512
  .quad (pd_index << 21) | 0x87
  .set pd_index, pd_index + 1
  .endr

  .section .data
  .balign 8
pvh_gdt:
  .quad 0
  .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
  .quad 0x00cf93000000ffff        /* 0x10: data */
pvh_gdt_desc:
  .word pvh_gdt_desc - pvh_gdt - 1
  .long pvh_gdt
  .balign 8
  .globl rt_pvh_start_info
rt_pvh_start_info:
  .quad 0

  .section .text
  .code64
/* uint64_t rt_run_user(uint64_t (*fn)(void), void* user_stack_top)
   Runs fn in ring 3 and returns its result when it comes back with int3. */
  .globl rt_run_user
rt_run_user:
  push %rbx
  push %rbp
  push %r12
  push %r13
  push %r14
  push %r15
  mov %rsp, rt_kernel_saved_rsp(%rip)
  mov %rdi, %rax
  pushq $0x1b                     /* ss: user data */
  push %rsi                       /* rsp */
  pushq $0x2                      /* rflags: IF=0, no timer interrupts in ring 3 */
  pushq $0x23                     /* cs: user code */
  lea user_trampoline(%rip), %rcx
  push %rcx
  iretq
user_trampoline:
  call *%rax
  int3                            /* back to ring 0 through the DPL-3 gate, result in rax */

/* Exception entry points: push the vector (and a dummy error code when the CPU pushes none). */
  .macro VECTOR_ENTRY vec, has_error
  .globl rt_isr\vec
rt_isr\vec:
  .if \has_error == 0
  pushq $0
  .endif
  pushq $\vec
  jmp isr_common
  .endm
  VECTOR_ENTRY 0,0
  VECTOR_ENTRY 1,0
  VECTOR_ENTRY 2,0
  VECTOR_ENTRY 3,0
  VECTOR_ENTRY 4,0
  VECTOR_ENTRY 5,0
  VECTOR_ENTRY 6,0
  VECTOR_ENTRY 7,0
  VECTOR_ENTRY 8,1
  VECTOR_ENTRY 9,0
  VECTOR_ENTRY 10,1
  VECTOR_ENTRY 11,1
  VECTOR_ENTRY 12,1
  VECTOR_ENTRY 13,1
  VECTOR_ENTRY 14,1
  VECTOR_ENTRY 15,0
  VECTOR_ENTRY 16,0
  VECTOR_ENTRY 17,1
  VECTOR_ENTRY 18,0
  VECTOR_ENTRY 19,0
  VECTOR_ENTRY 20,0
  VECTOR_ENTRY 21,1
  VECTOR_ENTRY 22,0
  VECTOR_ENTRY 23,0
  VECTOR_ENTRY 24,0
  VECTOR_ENTRY 25,0
  VECTOR_ENTRY 26,0
  VECTOR_ENTRY 27,0
  VECTOR_ENTRY 28,0
  VECTOR_ENTRY 29,1
  VECTOR_ENTRY 30,1
  VECTOR_ENTRY 31,0

isr_common:
  /* stack: vector, error, rip, cs, rflags, rsp, ss */
  cmpq $3, (%rsp)
  jne 2f
  testq $3, 24(%rsp)              /* int3 from ring 3: a wait, or the user function finished */
  jz 2f
  cmpq $0, rt_wait_requested(%rip)
  jne wait_for_interrupt
  mov rt_kernel_saved_rsp(%rip), %rsp
  pop %r15
  pop %r14
  pop %r13
  pop %r12
  pop %rbp
  pop %rbx
  ret                             /* from rt_run_user, rax = user result */
2:
  mov (%rsp), %rdi                /* vector */
  mov 16(%rsp), %rsi              /* rip */
  mov 8(%rsp), %rdx               /* error code */
  call rt_fault
3:
  hlt
  jmp 3b

/* Interrupts (vectors 32..63): count the vector, end it at the local APIC, return. They only
   arrive inside wait_for_interrupt (ring 3 runs with IF=0), so they always interrupt ring 0. */
  .macro IRQ_ENTRY vec
  .globl rt_irq\vec
rt_irq\vec:
  push %rax
  push %rcx
  mov $\vec, %eax
  lea rt_irq_counts(%rip), %rcx
  incq (%rcx,%rax,8)
  movabs $0xfee000b0, %rax        /* local APIC EOI register */
  movl $0, (%rax)
  pop %rcx
  pop %rax
  iretq
  .endm
  .irp vec, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
  IRQ_ENTRY \vec
  .endr

/* int3 from ring 3 with rt_wait_requested set (this KVM refuses `int $0x80`, so the DPL-3
   breakpoint gate doubles as the call): sleep until an interrupt has been handled, then return
   to ring 3 with IF=0 again. sti's one-instruction shadow makes "sti; hlt" atomic: an interrupt
   already pending wakes the hlt instead of being taken before it. */
wait_for_interrupt:
  movq $0, rt_wait_requested(%rip)
  add $16, %rsp                   /* vector and error code: back to the CPU's frame */
  sti
  hlt
  cli
  iretq

/* A spurious local-APIC interrupt needs no EOI. */
  .globl rt_spurious
rt_spurious:
  iretq

/* void rt_load_tables(void* gdt_desc, void* idt_desc): lgdt, reload segments, ltr, lidt. */
  .globl rt_load_tables
rt_load_tables:
  lgdt (%rdi)
  lidt (%rsi)
  pushq $0x08
  lea 1f(%rip), %rax
  push %rax
  lretq
1:
  mov $0x10, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %ax, %ss
  xor %eax, %eax
  mov %ax, %fs
  mov %ax, %gs
  mov $0x28, %ax
  ltr %ax
  ret

  .section .bss
  .balign 16
rt_kernel_saved_rsp:
  .quad 0
  .globl rt_wait_requested
  .balign 8
rt_wait_requested:
  .quad 0
  .globl rt_irq_counts
  .balign 8
rt_irq_counts:
  .space 8 * 256
  .balign 16
  .space 16384
  .globl rt_boot_stack_top
rt_boot_stack_top:
