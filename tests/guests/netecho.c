/* netecho: a UDP echo server on virtio-net (port 7: answers with addresses and ports swapped),
   and with send=N a client that sends N datagrams to port 7 (broadcast) and counts the answers.
   progress[2] = datagrams echoed, progress[3] = answers received. ip=<last octet> (default 2).
   A fork child or restored copy sees a new boot-info generation: it reads its MAC again (the VMM
   gave it a new one) and says so on the console.
   With irq=1 it sleeps until the device interrupts (or 10 ms pass, to notice a shutdown
   request) instead of polling: progress[0] = device interrupts, progress[1] = timer wake-ups. */
#include "runtime.h"
#include "virtio.h"

#define RX 0
#define TX 1
#define BUF 2048
#define HDR 12

static struct vq queues[2] __attribute__((aligned(4096)));
static uint8_t rx_buf[VQ_SIZE][BUF] __attribute__((aligned(64)));
static uint8_t tx_buf[VQ_SIZE][BUF] __attribute__((aligned(64)));
static uint8_t mac[6];
static uint16_t tx_next;
static uint32_t tx_in_flight;

static void post_rx(uint16_t i) {
  queues[RX].desc[i] = (struct vq_desc){(uint64_t)(uintptr_t)rx_buf[i], BUF, VIRTQ_DESC_F_WRITE, 0};
  vq_push(&queues[RX], i);
}

static void reclaim_tx(void) {
  uint32_t id, len;
  while (vq_poll_used(&queues[TX], &id, &len)) --tx_in_flight;
}

/* Sends the frame at tx_buf[slot] + HDR of `len` bytes. */
static void send_frame(uint16_t slot, uint32_t len) {
  memset(tx_buf[slot], 0, HDR);
  queues[TX].desc[slot] = (struct vq_desc){(uint64_t)(uintptr_t)tx_buf[slot], HDR + len, 0, 0};
  ++tx_in_flight;
  vq_push(&queues[TX], slot);
}

static uint16_t tx_slot(void) {
  while (tx_in_flight >= VQ_SIZE) reclaim_tx();
  uint16_t s = tx_next;
  tx_next = (uint16_t)((tx_next + 1) % VQ_SIZE);
  return s;
}

static void read_mac(uintptr_t dev) {
  for (int i = 0; i < 6; ++i) mac[i] = *(volatile uint8_t*)(dev + 0x100 + (uintptr_t)i);
}

static void put_mac(void) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 6; ++i) {
    if (i != 0) rt_putc(':');
    rt_putc(hex[mac[i] >> 4]);
    rt_putc(hex[mac[i] & 15]);
  }
}

/* A clone learns it is one from the generation id, a plain memory read (no exit). */
static void check_generation(uintptr_t dev, uint64_t* seen) {
  volatile struct qv_boot_info* bi = rt_boot_info();
  if (bi == 0 || bi->generation == *seen) return;
  *seen = bi->generation;
  read_mac(dev);
  rt_puts("netecho: new generation, mac ");
  put_mac();
  rt_putc('\n');
}

static uint16_t be16(const uint8_t* p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint16_t ip_checksum(const uint8_t* p, int n) {
  uint32_t sum = 0;
  for (int i = 0; i < n; i += 2) sum += be16(p + i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t build_request(uint8_t* f, uint8_t my_ip, uint64_t seq) {
  static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  memcpy(f, bcast, 6);
  memcpy(f + 6, mac, 6);
  f[12] = 0x08, f[13] = 0x00;
  uint8_t* ip = f + 14;
  const uint32_t payload = 16, udp_len = 8 + payload, ip_len = 20 + udp_len;
  memset(ip, 0, 20);
  ip[0] = 0x45;
  ip[2] = (uint8_t)(ip_len >> 8), ip[3] = (uint8_t)ip_len;
  ip[8] = 64, ip[9] = 17;
  ip[12] = 10, ip[13] = 0, ip[14] = 0, ip[15] = my_ip;
  ip[16] = 10, ip[17] = 0, ip[18] = 0, ip[19] = 255;
  uint16_t c = ip_checksum(ip, 20);
  ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
  uint8_t* udp = ip + 20;
  udp[0] = 0x04, udp[1] = 0xd2; /* 1234 */
  udp[2] = 0, udp[3] = 7;
  udp[4] = (uint8_t)(udp_len >> 8), udp[5] = (uint8_t)udp_len;
  udp[6] = udp[7] = 0; /* no UDP checksum (allowed for IPv4) */
  for (int i = 0; i < 8; ++i) udp[8 + i] = (uint8_t)(seq >> (8 * i));
  memcpy(udp + 16, "qosvisor", 8);
  return 14 + ip_len;
}

/* Handles one received frame; returns 1 if it was an answer to us. */
static int handle(uint8_t* f, uint32_t len, uint8_t my_ip) {
  if (len < 42 || be16(f + 12) != 0x0800) return 0;
  uint8_t* ip = f + 14;
  uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4;
  if ((ip[0] >> 4) != 4 || ihl < 20 || ip[9] != 17 || 14 + ihl + 8 > len) return 0;
  uint8_t* udp = ip + ihl;
  uint16_t dport = be16(udp + 2);
  if (dport == 1234 && ip[19] == my_ip) return 1;
  if (dport != 7 || ip[15] == my_ip) return 0;
  /* Echo: swap MACs, IPs and ports. Both checksums are sums of 16-bit words, so swapping
     fields leaves them valid; the destination broadcast address becomes ours. */
  uint16_t slot = tx_slot();
  uint8_t* o = tx_buf[slot] + HDR;
  memcpy(o, f, len);
  memcpy(o, f + 6, 6);
  memcpy(o + 6, mac, 6);
  uint8_t* oip = o + 14;
  memcpy(oip + 12, ip + 16, 4);
  memcpy(oip + 16, ip + 12, 4);
  oip[15] = my_ip;
  oip[10] = oip[11] = 0;
  uint16_t c = ip_checksum(oip, (int)ihl);
  oip[10] = (uint8_t)(c >> 8), oip[11] = (uint8_t)c;
  uint8_t* oudp = oip + ihl;
  memcpy(oudp, udp + 2, 2);
  memcpy(oudp + 2, udp, 2);
  oudp[6] = oudp[7] = 0;
  send_frame(slot, len);
  ++*rt_progress(2);
  return 0;
}

uint64_t guest_main(void) {
  uintptr_t dev = virtio_find(1);
  if (dev == 0) {
    rt_puts("netecho: no virtio-net device\n");
    return 10;
  }
  /* MAC (5), STATUS (16), EVENT_IDX (29) */
  if (virtio_init(dev, (1ull << 5) | (1ull << 16) | (1ull << 29), queues, 2) != 0) {
    rt_puts("netecho: device setup failed\n");
    return 11;
  }
  read_mac(dev);
  volatile struct qv_boot_info* bi = rt_boot_info();
  uint64_t generation = bi != 0 ? bi->generation : 0;
  uint8_t my_ip = (uint8_t)rt_cmdline_u64("ip", 2);
  uint64_t to_send = rt_cmdline_u64("send", 0);
  for (uint16_t i = 0; i < VQ_SIZE; ++i) post_rx(i);
  const int use_irq = rt_cmdline_u64("irq", 0) != 0;
  const uint8_t vector = RT_IRQ_FIRST_VECTOR;
  if (use_irq && virtio_route_interrupt(dev, vector) != 0) {
    rt_puts("netecho: no interrupt line on the command line\n");
    return 12;
  }
  rt_puts("netecho: ready ip 10.0.0.");
  rt_put_u64(my_ip);
  rt_putc('\n');

  uint64_t sent = 0, answers = 0;
  const uint64_t gap = rt_tsc_khz() * 10; /* one request per 10 ms */
  uint64_t next_send = rt_rdtsc();
  for (;;) {
    uint32_t id, len;
    check_generation(dev, &generation);
    while (vq_poll_used(&queues[RX], &id, &len)) {
      if (id < VQ_SIZE && len > HDR && len <= BUF) {
        answers += (uint64_t)handle(rx_buf[id] + HDR, len - HDR, my_ip);
        *rt_progress(3) = answers;
      }
      post_rx((uint16_t)(id % VQ_SIZE));
    }
    reclaim_tx();
    if (sent < to_send && (int64_t)(rt_rdtsc() - next_send) >= 0) {
      uint16_t slot = tx_slot();
      send_frame(slot, build_request(tx_buf[slot] + HDR, my_ip, sent));
      ++sent;
      next_send += gap;
    }
    if (to_send != 0 && answers >= to_send) {
      rt_puts("netecho: got ");
      rt_put_u64(answers);
      rt_puts(" answers\n");
      return 0;
    }
    if (rt_shutdown_requested()) {
      rt_puts("netecho: echoed ");
      rt_put_u64(*rt_progress(2));
      if (use_irq) {
        rt_puts(" on ");
        rt_put_u64(rt_irq_count(vector));
        rt_puts(" interrupts");
      }
      rt_putc('\n');
      return 0;
    }
    if (use_irq && sent >= to_send) {
      /* Nothing left to send on a schedule: sleep until a frame arrives. */
      if (!vq_arm_interrupt(&queues[RX])) rt_wait_irq(10000);
      virtio_ack_interrupt(dev);
      *rt_progress(0) = rt_irq_count(vector);
      *rt_progress(1) = rt_irq_count(RT_TIMER_VECTOR);
    }
  }
}
