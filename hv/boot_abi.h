/* The contract between the VMM and the tiny test guests: where the VMM puts its boot structures
   and the boot-info page. Plain C so that tests/guests/ includes the same file. */
#ifndef QOSVISOR_HV_BOOT_ABI_H_
#define QOSVISOR_HV_BOOT_ABI_H_

#include <stdint.h>

/* Guest physical layout of the VMM's boot area; images may not load below QV_BOOT_AREA_END. */
#define QV_BOOT_GDT_GPA 0x500ULL
#define QV_BOOT_TSS_GPA 0x1000ULL /* 104-byte TSS + 8 KiB I/O bitmap + terminator: to 0x3069 */
#define QV_BOOT_INFO_GPA 0x5000ULL
#define QV_BOOT_CMDLINE_GPA 0x6000ULL
#define QV_BOOT_CMDLINE_MAX 4096ULL
#define QV_BOOT_STACK_TOP 0x8ff0ULL /* page 0x8000: initial rsp and TSS.rsp0 */
#define QV_BOOT_PML4_GPA 0x9000ULL
#define QV_BOOT_PDPT_GPA 0xa000ULL
#define QV_BOOT_PD_GPA 0xb000ULL /* 4 page directories: 4 GiB of 2 MiB identity pages */
#define QV_BOOT_AREA_END 0x10000ULL

/* GDT the VMM installs (selectors). */
#define QV_SEL_KERNEL_CODE 0x08
#define QV_SEL_KERNEL_DATA 0x10
#define QV_SEL_USER_DATA 0x1b
#define QV_SEL_USER_CODE 0x23
#define QV_SEL_TSS 0x28

#define QV_BOOT_INFO_MAGIC 0x314f464e49425651ULL /* "QVBINFO1" little endian */
#define QV_E820_MAX 16
#define QV_E820_RAM 1
#define QV_E820_RESERVED 2

struct qv_e820_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t pad;
};

/* At QV_BOOT_INFO_GPA; rdi holds its address at the 64-bit entry point. */
struct qv_boot_info {
  uint64_t magic;
  uint64_t mem_bytes;
  uint64_t tsc_khz; /* 0 if unknown */
  uint64_t cmdline_gpa;
  uint32_t cmdline_len;
  uint32_t e820_count;
  uint64_t shutdown_request; /* the VMM sets 1 to ask the guest to exit; guests poll it */
  uint64_t progress[4];      /* guest-written progress counters the host may read */
  struct qv_e820_entry e820[QV_E820_MAX];
  /* Fields added later go here, at the end, so guests built before them keep working. */
  uint64_t generation; /* 0 for a booted VM; a fresh value in every fork child and restored copy */
};

/* isa-debug-exit: a write of v makes QEMU exit with status (v << 1) | 1; qosvisor reports v. */
#define QV_DEBUG_EXIT_PORT 0xf4
#define QV_SERIAL_PORT 0x3f8

#endif /* QOSVISOR_HV_BOOT_ABI_H_ */
