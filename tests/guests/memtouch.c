/* memtouch: dirties `pages=N` 4 KiB pages per second (default 1000), round-robin over
   `mib=M` MiB (default 16) starting at 8 MiB, paced by the TSC; progress[1] counts pages touched.
 */
#include "runtime.h"

uint64_t guest_main(void) {
  uint64_t rate = rt_cmdline_u64("pages", 1000);
  uint64_t region_pages = rt_cmdline_u64("mib", 16) * 256;
  uint64_t seconds = rt_cmdline_u64("seconds", 0); /* 0: until asked to stop */
  const uint64_t base = 8ull << 20;
  volatile struct qv_boot_info* bi = rt_boot_info();
  if (bi != 0 && base + region_pages * 4096 > bi->mem_bytes) {
    rt_puts("memtouch: region does not fit in guest memory\n");
    return 2;
  }
  volatile uint64_t* touched = rt_progress(1);
  const uint64_t ticks_per_slice = rt_tsc_khz() * 10; /* 10 ms */
  const uint64_t per_slice = rate / 100;
  uint64_t carry = rate % 100, acc = 0, next_page = 0, slices = 0;
  rt_puts("memtouch: start\n");
  uint64_t t = rt_rdtsc();
  for (;;) {
    uint64_t n = per_slice;
    acc += carry;
    if (acc >= 100) acc -= 100, ++n;
    for (uint64_t i = 0; i < n; ++i) {
      volatile uint64_t* p = (volatile uint64_t*)(uintptr_t)(base + next_page * 4096);
      *p = *p + 1;
      next_page = next_page + 1 == region_pages ? 0 : next_page + 1;
    }
    *touched = *touched + n;
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
