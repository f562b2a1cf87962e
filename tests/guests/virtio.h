/* A minimal virtio-mmio (v2) driver for the test guests: device discovery by scanning the
   qosvisor MMIO windows, feature negotiation, and split queues used from ring 3, polled or
   (with rt_wait_irq) interrupt-driven. */
#ifndef QOSVISOR_TESTS_GUESTS_VIRTIO_H_
#define QOSVISOR_TESTS_GUESTS_VIRTIO_H_

#include <stdint.h>

#define VQ_SIZE 16

struct vq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct vq {
  struct vq_desc desc[VQ_SIZE] __attribute__((aligned(16)));
  struct {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[VQ_SIZE];
    uint16_t used_event;
  } avail __attribute__((aligned(2)));
  struct {
    uint16_t flags;
    uint16_t idx;
    struct {
      uint32_t id;
      uint32_t len;
    } ring[VQ_SIZE];
    uint16_t avail_event;
  } used __attribute__((aligned(4)));
  uint16_t last_used;
  uint16_t index;
  uintptr_t base;
};

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

/* Base of the first virtio-mmio device with this id (2 blk, 1 net), or 0. */
uintptr_t virtio_find(uint32_t device_id);
uint32_t virtio_read32(uintptr_t base, uint32_t off);
void virtio_write32(uintptr_t base, uint32_t off, uint32_t v);
/* Negotiates `features` (VERSION_1 is added), sets up nq queues, sets DRIVER_OK. 0 on success. */
int virtio_init(uintptr_t base, uint64_t features, struct vq* queues, int nq);
/* Makes chain `head` available and notifies the device. */
void vq_push(struct vq* q, uint16_t head);
/* Waits for the next used element; returns its length and sets *id. Busy-polls memory. */
uint32_t vq_wait_used(struct vq* q, uint32_t* id);
/* Sets up interrupt delivery (rt_irq_setup) and routes the device's pin to `vector`; -1 when the
   command line names no pin for it. */
int virtio_route_interrupt(uintptr_t base, uint8_t vector);
/* Reads and acknowledges the device's interrupt status (1: used buffers, 2: config change). */
uint32_t virtio_ack_interrupt(uintptr_t base);
/* With EVENT_IDX: asks for an interrupt once the device has used anything beyond what we have
   seen. Returns 1 if something is already there (check before sleeping). */
int vq_arm_interrupt(struct vq* q);
/* Non-blocking: 1 and fills id/len if a used element is ready. */
int vq_poll_used(struct vq* q, uint32_t* id, uint32_t* len);

#endif /* QOSVISOR_TESTS_GUESTS_VIRTIO_H_ */
