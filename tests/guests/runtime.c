/* Guest runtime: ring-0 setup kept to a few hundred instructions (GDT/TSS/IDT), then everything
   else, including port I/O through the TSS I/O bitmap, runs in ring 3. */
#include "runtime.h"

struct tss64 {
  uint32_t reserved0;
  uint64_t rsp[3];
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t iomap_base;
  uint8_t iomap[8192]; /* all zero: every port allowed from ring 3 (IOPL is ignored here) */
  uint8_t iomap_end;   /* must be 0xff */
} __attribute__((packed));

struct table_desc {
  uint16_t limit;
  uint64_t base;
} __attribute__((packed));

struct idt_gate {
  uint16_t off_lo;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t off_mid;
  uint32_t off_hi;
  uint32_t reserved;
};

extern char rt_isr0[], rt_isr1[], rt_isr2[], rt_isr3[], rt_isr4[], rt_isr5[], rt_isr6[], rt_isr7[],
    rt_isr8[], rt_isr9[], rt_isr10[], rt_isr11[], rt_isr12[], rt_isr13[], rt_isr14[], rt_isr15[],
    rt_isr16[], rt_isr17[], rt_isr18[], rt_isr19[], rt_isr20[], rt_isr21[], rt_isr22[], rt_isr23[],
    rt_isr24[], rt_isr25[], rt_isr26[], rt_isr27[], rt_isr28[], rt_isr29[], rt_isr30[], rt_isr31[];
static char* const isr_table[32] = {
    rt_isr0,  rt_isr1,  rt_isr2,  rt_isr3,  rt_isr4,  rt_isr5,  rt_isr6,  rt_isr7,
    rt_isr8,  rt_isr9,  rt_isr10, rt_isr11, rt_isr12, rt_isr13, rt_isr14, rt_isr15,
    rt_isr16, rt_isr17, rt_isr18, rt_isr19, rt_isr20, rt_isr21, rt_isr22, rt_isr23,
    rt_isr24, rt_isr25, rt_isr26, rt_isr27, rt_isr28, rt_isr29, rt_isr30, rt_isr31};

extern char rt_irq32[], rt_irq33[], rt_irq34[], rt_irq35[], rt_irq36[], rt_irq37[], rt_irq38[],
    rt_irq39[], rt_irq40[], rt_irq41[], rt_irq42[], rt_irq43[], rt_irq44[], rt_irq45[], rt_irq46[],
    rt_irq47[], rt_irq48[], rt_irq49[], rt_irq50[], rt_irq51[], rt_irq52[], rt_irq53[], rt_irq54[],
    rt_irq55[], rt_irq56[], rt_irq57[], rt_irq58[], rt_irq59[], rt_irq60[], rt_irq61[], rt_irq62[],
    rt_irq63[], rt_spurious[];
static char* const irq_table[32] = {
    rt_irq32, rt_irq33, rt_irq34, rt_irq35, rt_irq36, rt_irq37, rt_irq38, rt_irq39,
    rt_irq40, rt_irq41, rt_irq42, rt_irq43, rt_irq44, rt_irq45, rt_irq46, rt_irq47,
    rt_irq48, rt_irq49, rt_irq50, rt_irq51, rt_irq52, rt_irq53, rt_irq54, rt_irq55,
    rt_irq56, rt_irq57, rt_irq58, rt_irq59, rt_irq60, rt_irq61, rt_irq62, rt_irq63};
extern volatile uint64_t rt_irq_counts[256];
extern volatile uint64_t rt_wait_requested;

uint64_t rt_run_user(uint64_t (*fn)(void), void* user_stack_top);
void rt_load_tables(struct table_desc* gdt, struct table_desc* idt);
extern char rt_boot_stack_top[];

static uint64_t gdt[7] = {
    0,
    0x00af9b000000ffffull, /* 0x08 kernel code 64 */
    0x00cf93000000ffffull, /* 0x10 kernel data */
    0x00cff3000000ffffull, /* 0x18 user data (0x1b) */
    0x00affb000000ffffull, /* 0x20 user code 64 (0x23) */
    0,
    0, /* 0x28 TSS, filled at run time (its address is not a link constant) */
};
static struct idt_gate idt[256];
static struct tss64 tss __attribute__((aligned(16)));
static uint8_t user_stack[65536] __attribute__((aligned(16)));
static uint8_t fault_stack[16384] __attribute__((aligned(16)));
static volatile struct qv_boot_info* boot_info;
static volatile uint64_t local_progress[4];

void* memset(void* d, int c, size_t n) {
  uint8_t* p = d;
  while (n--) *p++ = (uint8_t)c;
  return d;
}

void* memcpy(void* d, const void* s, size_t n) {
  uint8_t* p = d;
  const uint8_t* q = s;
  while (n--) *p++ = *q++;
  return d;
}

static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

void rt_putc(char c) { outb(QV_SERIAL_PORT, (uint8_t)c); }

void rt_puts(const char* s) {
  while (*s) rt_putc(*s++);
}

void rt_put_u64(uint64_t v) {
  char buf[21];
  int i = 20;
  buf[i] = 0;
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  rt_puts(&buf[i]);
}

void rt_exit(uint32_t code) {
  outl(QV_DEBUG_EXIT_PORT, code);
  for (;;) {
  }
}

volatile struct qv_boot_info* rt_boot_info(void) { return boot_info; }

/* Set by the PVH entry: the physical address of Xen's hvm_start_info (QEMU -append's text is at
   its cmdline_paddr), 0 when entered by qosvisor. */
extern volatile uint64_t rt_pvh_start_info;
#define PVH_START_MAGIC 0x336ec578u

const char* rt_cmdline(void) {
  if (boot_info == 0) {
    const volatile uint32_t* pvh = (const volatile uint32_t*)(uintptr_t)rt_pvh_start_info;
    if (pvh == 0 || pvh[0] != PVH_START_MAGIC) return "";
    const uint64_t cmdline = *(const volatile uint64_t*)(uintptr_t)(rt_pvh_start_info + 24);
    return cmdline != 0 ? (const char*)(uintptr_t)cmdline : "";
  }
  if (boot_info->cmdline_len == 0) return "";
  return (const char*)(uintptr_t)boot_info->cmdline_gpa;
}

uint64_t rt_cmdline_u64(const char* key, uint64_t dflt) {
  const char* s = rt_cmdline();
  while (*s) {
    const char* k = key;
    const char* p = s;
    while (*k && *p == *k) ++p, ++k;
    if (*k == 0 && *p == '=') {
      uint64_t v = 0;
      ++p;
      if (*p < '0' || *p > '9') return dflt;
      while (*p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
      return v;
    }
    while (*s && *s != ' ') ++s;
    while (*s == ' ') ++s;
  }
  return dflt;
}

int rt_shutdown_requested(void) { return boot_info != 0 && boot_info->shutdown_request != 0; }

volatile uint64_t* rt_progress(int i) {
  return boot_info != 0 ? &boot_info->progress[i] : &local_progress[i];
}

uint64_t rt_tsc_khz(void) {
  if (boot_info != 0 && boot_info->tsc_khz != 0) return boot_info->tsc_khz;
  return rt_cmdline_u64("tsc_khz", 2000000);
}

/* Called from ring 0 on an unexpected exception: report and end the VM with 0xe0 | vector. */
void rt_fault(uint64_t vector, uint64_t rip, uint64_t error) {
  rt_puts("guest fault: vector ");
  rt_put_u64(vector);
  rt_puts(" rip ");
  rt_put_u64(rip);
  rt_puts(" error ");
  rt_put_u64(error);
  rt_putc('\n');
  rt_exit(0xe0 | (uint32_t)vector);
}

static void set_gate(int vector, char* handler, int from_ring3) {
  uint64_t h = (uint64_t)(uintptr_t)handler;
  idt[vector].off_lo = (uint16_t)h;
  idt[vector].selector = 0x08;
  idt[vector].type_attr = from_ring3 ? 0xee : 0x8e;
  idt[vector].off_mid = (uint16_t)(h >> 16);
  idt[vector].off_hi = (uint32_t)(h >> 32);
}

/* ---- interrupts, all set up from ring 3: the identity map is user-accessible, so the APIC
   registers are plain memory stores, and port I/O is allowed by the TSS bitmap. */

#define LAPIC 0xfee00000u
#define IOAPIC 0xfec00000u

static void lapic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t*)(uintptr_t)(LAPIC + reg) = v; }

static void ioapic_write(uint32_t reg, uint32_t v) {
  *(volatile uint32_t*)(uintptr_t)IOAPIC = reg;
  *(volatile uint32_t*)(uintptr_t)(IOAPIC + 0x10) = v;
}

void rt_irq_setup(void) {
  outb(0x21, 0xff); /* mask both 8259s: only the I/O APIC delivers */
  outb(0xa1, 0xff);
  lapic_write(0x350, 1u << 16); /* LINT0 (the 8259's ExtINT path): masked */
  lapic_write(0x360, 1u << 16); /* LINT1: masked */
  lapic_write(0x080, 0);        /* task priority: accept every vector */
  lapic_write(0x0f0, 0x100 | RT_SPURIOUS_VECTOR); /* software enable */
}

void rt_irq_route(uint32_t gsi, uint8_t vector) {
  /* Edge-triggered, active high, fixed delivery to APIC 0: KVM's irqfd pulses the line. */
  ioapic_write(0x10 + 2 * gsi + 1, 0);
  ioapic_write(0x10 + 2 * gsi, vector);
}

uint64_t rt_irq_count(uint8_t vector) { return rt_irq_counts[vector]; }

void rt_wait_irq(uint64_t timeout_us) {
  if (timeout_us != 0) {
    lapic_write(0x3e0, 0xb);                /* timer divide by 1: KVM's APIC bus is 1 GHz */
    lapic_write(0x320, RT_TIMER_VECTOR);    /* one-shot */
    lapic_write(0x380, (uint32_t)(timeout_us * 1000 > 0xffffffffu ? 0xffffffffu : timeout_us * 1000));
  }
  rt_wait_requested = 1;
  __asm__ volatile("int3" ::: "memory");
  if (timeout_us != 0) lapic_write(0x380, 0); /* disarm */
}

void rt_entry(volatile struct qv_boot_info* info) {
  if (info != 0 && info->magic == QV_BOOT_INFO_MAGIC) boot_info = info;
  uint64_t base = (uint64_t)(uintptr_t)&tss;
  uint64_t limit = sizeof(tss) - 1;
  gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
           ((limit & 0xf0000) << 32) | ((base & 0xff000000ull) << 32);
  gdt[6] = base >> 32;
  tss.rsp[0] = (uint64_t)(uintptr_t)(fault_stack + sizeof(fault_stack));
  tss.iomap_base = (uint16_t) __builtin_offsetof(struct tss64, iomap);
  tss.iomap_end = 0xff;
  for (int i = 0; i < 32; ++i) set_gate(i, isr_table[i], i == 3); /* int3 reachable from ring 3 */
  for (int i = 0; i < 32; ++i) set_gate(RT_IRQ_FIRST_VECTOR + i, irq_table[i], 0);
  set_gate(RT_SPURIOUS_VECTOR, rt_spurious, 0);
  struct table_desc gd = {sizeof(gdt) - 1, (uint64_t)(uintptr_t)gdt};
  struct table_desc id = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt};
  rt_load_tables(&gd, &id);
  uint64_t code = rt_run_user(guest_main, user_stack + sizeof(user_stack));
  rt_exit((uint32_t)code);
}
