/* hostile: a guest that attacks its devices: unknown ports and MMIO, bad register widths, and a
   virtio-blk queue with descriptors outside memory, a descriptor loop and an absurd length. The
   VMM must mark the device broken, count it, and keep the host running; the guest then exits. */
#include "runtime.h"
#include "virtio.h"

static struct vq queue __attribute__((aligned(4096)));

static uint32_t notify_and_status(uintptr_t dev) {
  queue.avail.ring[queue.avail.idx % VQ_SIZE] = 0;
  __asm__ volatile("" ::: "memory");
  queue.avail.idx = (uint16_t)(queue.avail.idx + 1);
  virtio_write32(dev, 0x050, 0);
  return virtio_read32(dev, 0x070);
}

static void reset(uintptr_t dev) {
  if (virtio_init(dev, 0, &queue, 1) != 0) rt_puts("hostile: reset failed\n");
}

uint64_t guest_main(void) {
  /* Ports and MMIO nobody owns, and a 2-byte access to a 32-bit register. */
  __asm__ volatile("outb %0, %1" : : "a"((uint8_t)1), "Nd"((uint16_t)0x80));
  *(volatile uint32_t*)0xd0008000 = 0xdeadbeef;
  (void)*(volatile uint32_t*)0xdfff0000;
  uintptr_t dev = virtio_find(2);
  if (dev == 0) return 10;
  *(volatile uint16_t*)(dev + 0x070) = 0xffff;
  reset(dev);

  /* 1: a descriptor far outside guest memory. */
  queue.desc[0] = (struct vq_desc){0x7fffffff000ull, 4096, 0, 0};
  uint32_t s = notify_and_status(dev);
  rt_puts((s & 0x40) ? "hostile: outside memory -> needs reset\n" : "hostile: outside: ignored\n");
  reset(dev);

  /* 2: a descriptor loop. */
  queue.desc[0] = (struct vq_desc){(uint64_t)(uintptr_t)&queue, 16, VIRTQ_DESC_F_NEXT, 1};
  queue.desc[1] = (struct vq_desc){(uint64_t)(uintptr_t)&queue, 16, VIRTQ_DESC_F_NEXT, 0};
  s = notify_and_status(dev);
  rt_puts((s & 0x40) ? "hostile: loop -> needs reset\n" : "hostile: loop: ignored\n");
  reset(dev);

  /* 3: an absurd length. */
  queue.desc[0] = (struct vq_desc){(uint64_t)(uintptr_t)&queue, 0xffffffffu, 0, 0};
  s = notify_and_status(dev);
  rt_puts((s & 0x40) ? "hostile: length -> needs reset\n" : "hostile: length: ignored\n");
  reset(dev);
  rt_puts("hostile: done\n");
  return 0;
}
