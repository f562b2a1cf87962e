/* memtouch: dirties `pages=N` 4 KiB pages per second (default 1000), round-robin over
   `mib=M` MiB (default 16) starting at `at=A` MiB (default 8), paced by the TSC; progress[1]
   counts pages touched; `random=1` picks each page at random in the region instead.
   Optional, for the page tracker's tests and benchmarks:
   - a hot region: `hot_pages=H` more pages per second round-robin over `hot_mib=S` MiB at
     `hot_at=B` MiB (default: right after the main region);
   - a sparse region: `sparse_mib=P` MiB at `sparse_at=C` MiB (default: after the others), of
     which only the first page of every 2 MiB is written, every 10 ms;
   - a filled region: `fill_mib=F` MiB at `fill_at=D` MiB (default 8), every page written once
     at the start (memory that holds data but no longer changes, as a fork parent's mostly does).
 */
#include "runtime.h"

struct sweep {
  uint64_t base, pages, next, per_slice, carry, acc, random;
};

static void sweep_init(struct sweep* s, uint64_t base, uint64_t pages, uint64_t rate) {
  s->base = base;
  s->pages = pages;
  s->next = 0;
  s->per_slice = rate / 100;
  s->carry = rate % 100;
  s->acc = 0;
  s->random = 0;
}

/* xorshift64: a page index spread over the region, the same sequence every run. */
static uint64_t next_random(uint64_t* state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

/* One 10 ms slice of a sweep, counted into *touched as it goes (a flat-out slice may take far
   longer than 10 ms, and the host reads the count while it runs). */
static void sweep_slice(struct sweep* s, volatile uint64_t* touched) {
  if (s->pages == 0) return;
  uint64_t n = s->per_slice;
  s->acc += s->carry;
  if (s->acc >= 100) s->acc -= 100, ++n;
  for (uint64_t i = 0; i < n; ++i) {
    if ((i & 1023) == 1023) *touched = *touched + 1024;
    uint64_t page = s->next;
    if (s->random != 0) {
      page = next_random(&s->random) % s->pages;
    } else {
      s->next = s->next + 1 == s->pages ? 0 : s->next + 1;
    }
    volatile uint64_t* p = (volatile uint64_t*)(uintptr_t)(s->base + page * 4096);
    *p = *p + 1;
  }
  *touched = *touched + (n & 1023);
}

static void touch_sparse(uint64_t base, uint64_t mib) {
  for (uint64_t off = 0; off < (mib << 20); off += 2ull << 20) {
    volatile uint64_t* p = (volatile uint64_t*)(uintptr_t)(base + off);
    *p = *p + 1;
  }
}

uint64_t guest_main(void) {
  const uint64_t mib = rt_cmdline_u64("mib", 16);
  const uint64_t base = rt_cmdline_u64("at", 8) << 20;
  const uint64_t hot_mib = rt_cmdline_u64("hot_mib", 0);
  const uint64_t hot_base = rt_cmdline_u64("hot_at", (base >> 20) + mib) << 20;
  const uint64_t sparse_mib = rt_cmdline_u64("sparse_mib", 0);
  uint64_t after = base + (mib << 20);
  if (hot_base + (hot_mib << 20) > after) after = hot_base + (hot_mib << 20);
  const uint64_t sparse_base = rt_cmdline_u64("sparse_at", after >> 20) << 20;
  uint64_t seconds = rt_cmdline_u64("seconds", 0); /* 0: until asked to stop */
  volatile struct qv_boot_info* bi = rt_boot_info();
  uint64_t top = base + (mib << 20);
  if (hot_base + (hot_mib << 20) > top) top = hot_base + (hot_mib << 20);
  if (sparse_base + (sparse_mib << 20) > top) top = sparse_base + (sparse_mib << 20);
  if (bi != 0 && top > bi->mem_bytes) {
    rt_puts("memtouch: region does not fit in guest memory\n");
    return 2;
  }
  struct sweep main_sweep, hot_sweep;
  sweep_init(&main_sweep, base, mib * 256, rt_cmdline_u64("pages", 1000));
  if (rt_cmdline_u64("random", 0) != 0) main_sweep.random = 0x9e3779b97f4a7c15ull;
  sweep_init(&hot_sweep, hot_base, hot_mib * 256, rt_cmdline_u64("hot_pages", 0));
  volatile uint64_t* touched = rt_progress(1);
  const uint64_t fill_base = rt_cmdline_u64("fill_at", 8) << 20;
  const uint64_t fill_mib = rt_cmdline_u64("fill_mib", 0);
  if (bi != 0 && fill_base + (fill_mib << 20) > bi->mem_bytes) {
    rt_puts("memtouch: fill region does not fit in guest memory\n");
    return 2;
  }
  for (uint64_t off = 0; off < (fill_mib << 20); off += 4096) {
    *(volatile uint64_t*)(uintptr_t)(fill_base + off) = off | 1;
  }
  const uint64_t ticks_per_slice = rt_tsc_khz() * 10; /* 10 ms */
  uint64_t slices = 0;
  rt_puts("memtouch: start\n");
  uint64_t t = rt_rdtsc();
  for (;;) {
    sweep_slice(&main_sweep, touched);
    sweep_slice(&hot_sweep, touched);
    if (sparse_mib != 0) touch_sparse(sparse_base, sparse_mib);
    if (++slices % 100 == 0) {
      rt_puts("memtouch: ");
      rt_put_u64(*touched);
      rt_puts(" pages\n");
      if (seconds != 0 && slices / 100 >= seconds) return 0;
    }
    if (rt_shutdown_requested()) return 0;
    t += ticks_per_slice;
    while ((int64_t)(rt_rdtsc() - t) < 0) {
      if (rt_shutdown_requested()) return 0;
    }
  }
}
