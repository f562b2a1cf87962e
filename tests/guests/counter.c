/* counter: increments progress[0] in the boot-info page as fast as ring 3 allows, prints a line
   every 2^28 increments, and exits (code 0) when the VMM requests shutdown (unless deaf=1). */
#include "runtime.h"

uint64_t guest_main(void) {
  volatile uint64_t* counter = rt_progress(0);
  rt_puts("counter: start\n");
  uint64_t limit = rt_cmdline_u64("limit", 0); /* 0: run until asked to stop */
  /* deaf=1 ignores the shutdown request, so the VMM has to force the stop */
  int deaf = rt_cmdline_u64("deaf", 0) != 0;
  for (;;) {
    for (int i = 0; i < (1 << 16); ++i) *counter = *counter + 1;
    uint64_t c = *counter;
    if ((c & ((1ull << 28) - 1)) == 0) {
      rt_puts("count ");
      rt_put_u64(c);
      rt_putc('\n');
    }
    if ((!deaf && rt_shutdown_requested()) || (limit != 0 && c >= limit)) {
      rt_puts("counter: stop at ");
      rt_put_u64(c);
      rt_putc('\n');
      return 0;
    }
  }
}
