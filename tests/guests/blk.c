/* blk: exercises a vflash disk through virtio-blk: writes a pattern (write=1), reads it back and
   verifies it (verify=1, also across VM restarts), checks out-of-range requests fail, prints the
   device id, and with wait_resize=1 waits for a capacity change and uses the new last sector. */
#include "runtime.h"
#include "virtio.h"

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8

static struct vq queue __attribute__((aligned(4096)));
static struct {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
} header;
static uint8_t data[4096] __attribute__((aligned(4096)));
static volatile uint8_t status;
static uintptr_t dev;

static uint8_t request(uint32_t type, uint64_t sector, uint32_t len) {
  header.type = type;
  header.reserved = 0;
  header.sector = sector;
  status = 0xff;
  queue.desc[0] = (struct vq_desc){(uint64_t)(uintptr_t)&header, 16, VIRTQ_DESC_F_NEXT, 1};
  uint16_t dflags = (type == T_OUT ? 0 : VIRTQ_DESC_F_WRITE);
  if (len > 0) {
    queue.desc[1] =
        (struct vq_desc){(uint64_t)(uintptr_t)data, len, (uint16_t)(dflags | VIRTQ_DESC_F_NEXT), 2};
    queue.desc[2] = (struct vq_desc){(uint64_t)(uintptr_t)&status, 1, VIRTQ_DESC_F_WRITE, 0};
  } else {
    queue.desc[0].next = 2;
    queue.desc[2] = (struct vq_desc){(uint64_t)(uintptr_t)&status, 1, VIRTQ_DESC_F_WRITE, 0};
  }
  vq_push(&queue, 0);
  uint32_t id;
  vq_wait_used(&queue, &id);
  return status;
}

static uint64_t capacity(void) {
  uint32_t gen, lo, hi;
  do {
    gen = virtio_read32(dev, 0x0fc);
    lo = virtio_read32(dev, 0x100);
    hi = virtio_read32(dev, 0x104);
  } while (gen != virtio_read32(dev, 0x0fc));
  return ((uint64_t)hi << 32) | lo;
}

static uint8_t pattern(uint64_t seed, uint64_t sector, uint32_t i) {
  return (uint8_t)(seed * 31 + sector * 7 + i);
}

/* Fills/verifies 8 sectors starting at `sector`. */
static void fill(uint64_t seed, uint64_t sector) {
  for (uint32_t i = 0; i < 4096; ++i) data[i] = pattern(seed, sector + i / 512, i % 512);
}
static int check(uint64_t seed, uint64_t sector) {
  for (uint32_t i = 0; i < 4096; ++i) {
    if (data[i] != pattern(seed, sector + i / 512, i % 512)) return 0;
  }
  return 1;
}

uint64_t guest_main(void) {
  dev = virtio_find(2);
  if (dev == 0) {
    rt_puts("blk: no virtio-blk device\n");
    return 10;
  }
  if (virtio_init(dev, 1ull << 9 /* FLUSH */, &queue, 1) != 0) {
    rt_puts("blk: device setup failed\n");
    return 11;
  }
  uint64_t seed = rt_cmdline_u64("seed", 1);
  uint64_t sectors = rt_cmdline_u64("sectors", 64) & ~7ull;
  uint64_t cap = capacity();
  memset(data, 0, 21);
  if (request(T_GET_ID, 0, 20) != 0) return 12;
  rt_puts("blk: capacity=");
  rt_put_u64(cap);
  rt_puts(" id=");
  rt_puts((const char*)data);
  rt_putc('\n');

  if (rt_cmdline_u64("write", 0)) {
    for (uint64_t s = 0; s < sectors; s += 8) {
      fill(seed, s);
      if (request(T_OUT, s, 4096) != 0) {
        rt_puts("blk: write failed\n");
        return 13;
      }
    }
    if (request(T_FLUSH, 0, 0) != 0) return 14;
    rt_puts("blk: wrote ");
    rt_put_u64(sectors);
    rt_puts(" sectors\n");
  }
  if (rt_cmdline_u64("verify", 0)) {
    for (uint64_t s = 0; s < sectors; s += 8) {
      if (request(T_IN, s, 4096) != 0 || !check(seed, s)) {
        rt_puts("blk: verify FAILED at sector ");
        rt_put_u64(s);
        rt_putc('\n');
        return 3;
      }
    }
    rt_puts("blk: verify ok\n");
  }
  const int refused = request(T_IN, cap, 512) == 1;
  const int wait_resize = rt_cmdline_u64("wait_resize", 0) != 0;
  /* The interrupt is routed before the line a host waits for is printed, so a resize made after
     it always raises an interrupt here (held by the local APIC until the guest sleeps). */
  if (wait_resize && virtio_route_interrupt(dev, RT_IRQ_FIRST_VECTOR) != 0) return 17;
  if (refused) rt_puts("blk: out-of-range read refused\n");

  if (wait_resize) {
    /* Only a device interrupt ends the wait; the 10 ms naps are there to see a shutdown request. */
    uint64_t taken = rt_irq_count(RT_IRQ_FIRST_VECTOR);
    for (;;) {
      rt_wait_irq(10000);
      if (rt_shutdown_requested()) return 4;
      if (rt_irq_count(RT_IRQ_FIRST_VECTOR) == taken) continue;
      taken = rt_irq_count(RT_IRQ_FIRST_VECTOR);
      if (!(virtio_ack_interrupt(dev) & 2)) continue;
      uint64_t now = capacity();
      if (now == cap) continue;
      rt_puts("blk: capacity changed to ");
      rt_put_u64(now);
      rt_puts(" (on its config interrupt)\n");
      uint64_t last = (now & ~7ull) - 8;
      fill(seed + 1, last);
      if (request(T_OUT, last, 4096) != 0) return 15;
      memset(data, 0, sizeof(data));
      if (request(T_IN, last, 4096) != 0 || !check(seed + 1, last)) return 16;
      rt_puts("blk: new last sectors ok\n");
      return 0;
    }
  }
  return 0;
}
