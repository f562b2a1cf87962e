/* virtio-mmio driver core for the test guests: each register access is one MMIO exit, so setup
   is done once and the data path only touches the rings in memory plus one notify per request. */
#include "virtio.h"

#include "runtime.h"

#define MMIO_BASE 0xd0000000ull
#define MMIO_SLOTS 8

static void barrier(void) { __asm__ volatile("" ::: "memory"); }

uint32_t virtio_read32(uintptr_t base, uint32_t off) { return *(volatile uint32_t*)(base + off); }

void virtio_write32(uintptr_t base, uint32_t off, uint32_t v) {
  *(volatile uint32_t*)(base + off) = v;
}

uintptr_t virtio_find(uint32_t device_id) {
  for (int i = 0; i < MMIO_SLOTS; ++i) {
    uintptr_t base = MMIO_BASE + (uintptr_t)i * 0x1000;
    if (virtio_read32(base, 0x000) != 0x74726976) continue;
    if (virtio_read32(base, 0x008) == device_id) return base;
  }
  return 0;
}

int virtio_init(uintptr_t base, uint64_t features, struct vq* queues, int nq) {
  features |= 1ull << 32; /* VERSION_1 */
  virtio_write32(base, 0x070, 0);
  virtio_write32(base, 0x070, 1);     /* ACKNOWLEDGE */
  virtio_write32(base, 0x070, 1 | 2); /* DRIVER */
  virtio_write32(base, 0x014, 0);
  uint64_t offered = virtio_read32(base, 0x010);
  virtio_write32(base, 0x014, 1);
  offered |= (uint64_t)virtio_read32(base, 0x010) << 32;
  features &= offered;
  virtio_write32(base, 0x024, 0);
  virtio_write32(base, 0x020, (uint32_t)features);
  virtio_write32(base, 0x024, 1);
  virtio_write32(base, 0x020, (uint32_t)(features >> 32));
  virtio_write32(base, 0x070, 1 | 2 | 8); /* FEATURES_OK */
  if (!(virtio_read32(base, 0x070) & 8)) return -1;
  for (int i = 0; i < nq; ++i) {
    struct vq* q = &queues[i];
    memset(q, 0, sizeof(*q));
    q->index = (uint16_t)i;
    q->base = base;
    virtio_write32(base, 0x030, (uint32_t)i);
    if (virtio_read32(base, 0x034) < VQ_SIZE) return -2;
    virtio_write32(base, 0x038, VQ_SIZE);
    uint64_t d = (uint64_t)(uintptr_t)q->desc, a = (uint64_t)(uintptr_t)&q->avail,
             u = (uint64_t)(uintptr_t)&q->used;
    virtio_write32(base, 0x080, (uint32_t)d);
    virtio_write32(base, 0x084, (uint32_t)(d >> 32));
    virtio_write32(base, 0x090, (uint32_t)a);
    virtio_write32(base, 0x094, (uint32_t)(a >> 32));
    virtio_write32(base, 0x0a0, (uint32_t)u);
    virtio_write32(base, 0x0a4, (uint32_t)(u >> 32));
    virtio_write32(base, 0x044, 1);
  }
  virtio_write32(base, 0x070, 1 | 2 | 8 | 4); /* DRIVER_OK */
  return (virtio_read32(base, 0x070) & 0x40) ? -3 : 0;
}

void vq_push(struct vq* q, uint16_t head) {
  q->avail.ring[q->avail.idx % VQ_SIZE] = head;
  barrier();
  q->avail.idx = (uint16_t)(q->avail.idx + 1);
  barrier();
  virtio_write32(q->base, 0x050, q->index);
}

int vq_poll_used(struct vq* q, uint32_t* id, uint32_t* len) {
  if (*(volatile uint16_t*)&q->used.idx == q->last_used) return 0;
  barrier();
  *id = q->used.ring[q->last_used % VQ_SIZE].id;
  *len = q->used.ring[q->last_used % VQ_SIZE].len;
  q->last_used = (uint16_t)(q->last_used + 1);
  return 1;
}

uint32_t vq_wait_used(struct vq* q, uint32_t* id) {
  uint32_t len = 0;
  while (!vq_poll_used(q, id, &len)) {
  }
  return len;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* The I/O APIC pin of the device at `base`, from the "virtio_mmio.device=4K@BASE:GSI" the VMM
   puts on the command line; -1 if it is not there. */
static int virtio_gsi(uintptr_t base) {
  static const char key[] = "virtio_mmio.device=4K@0x";
  for (const char* s = rt_cmdline(); *s; ++s) {
    const char* k = key;
    const char* p = s;
    while (*k && *p == *k) ++p, ++k;
    if (*k != 0) continue;
    uint64_t at = 0;
    for (int d; (d = hex_digit(*p)) >= 0; ++p) at = at * 16 + (uint64_t)d;
    if (at != base || *p != ':') continue;
    int gsi = 0;
    for (++p; *p >= '0' && *p <= '9'; ++p) gsi = gsi * 10 + (*p - '0');
    return gsi;
  }
  return -1;
}

int virtio_route_interrupt(uintptr_t base, uint8_t vector) {
  int gsi = virtio_gsi(base);
  if (gsi < 0) return -1;
  rt_irq_setup();
  rt_irq_route((uint32_t)gsi, vector);
  return 0;
}

uint32_t virtio_ack_interrupt(uintptr_t base) {
  uint32_t status = virtio_read32(base, 0x060);
  if (status != 0) virtio_write32(base, 0x064, status);
  return status;
}

int vq_arm_interrupt(struct vq* q) {
  *(volatile uint16_t*)&q->avail.used_event = q->last_used;
  __asm__ volatile("mfence" ::: "memory"); /* the store before re-reading used.idx */
  return *(volatile uint16_t*)&q->used.idx != q->last_used;
}
