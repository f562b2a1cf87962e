/* The tiny guest runtime: serial output, debug-exit, the qosvisor boot-info page, and running the
   guest's main loop in ring 3 (near native speed here; ring-0 code is ~5000x slower). */
#ifndef QOSVISOR_TESTS_GUESTS_RUNTIME_H_
#define QOSVISOR_TESTS_GUESTS_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#include "hv/boot_abi.h"

/* Each guest defines this; it runs in ring 3 and its result becomes the debug-exit code. */
uint64_t guest_main(void);

void rt_putc(char c);
void rt_puts(const char* s);
void rt_put_u64(uint64_t v);
__attribute__((noreturn)) void rt_exit(uint32_t code);

/* NULL when not started by qosvisor (e.g. under QEMU through the PVH entry). */
volatile struct qv_boot_info* rt_boot_info(void);
/* qosvisor's boot info, else the PVH start info's command line (QEMU -append), else "". */
const char* rt_cmdline(void);
/* Value of "key=<decimal>" in the cmdline, or dflt. */
uint64_t rt_cmdline_u64(const char* key, uint64_t dflt);
int rt_shutdown_requested(void);
/* progress[i] in the boot-info page (read by host tests); a local cell without boot info. */
volatile uint64_t* rt_progress(int i);

static inline uint64_t rt_rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
/* From boot info; without it the cmdline's tsc_khz=N, else a 2 GHz guess. */
uint64_t rt_tsc_khz(void);

/* Interrupts. Guests run in ring 3 with interrupts off; rt_wait_irq sleeps (sti; hlt in ring 0)
   until one has been handled or timeout_us passed (0: no timeout). Device interrupts come from
   the I/O APIC pin the VMM wired the device to (KVM_IRQFD), on vectors from 32; the local APIC
   timer uses RT_TIMER_VECTOR. */
#define RT_IRQ_FIRST_VECTOR 32
#define RT_TIMER_VECTOR 48
#define RT_SPURIOUS_VECTOR 0xff
void rt_irq_setup(void);
void rt_irq_route(uint32_t gsi, uint8_t vector);
void rt_wait_irq(uint64_t timeout_us);
uint64_t rt_irq_count(uint8_t vector); /* interrupts handled on a vector so far */

void* memset(void* d, int c, size_t n);
void* memcpy(void* d, const void* s, size_t n);

#endif /* QOSVISOR_TESTS_GUESTS_RUNTIME_H_ */
