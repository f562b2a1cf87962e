/* hello: prints a greeting and what the VMM told it (memory size, cmdline), then exits with
   debug-exit code 0. The smallest end-to-end check of boot, serial and exit. */
#include "runtime.h"

uint64_t guest_main(void) {
  rt_puts("hello from the qosvisor test guest\n");
  volatile struct qv_boot_info* bi = rt_boot_info();
  if (bi != 0) {
    rt_puts("mem_bytes=");
    rt_put_u64(bi->mem_bytes);
    rt_puts(" e820=");
    rt_put_u64(bi->e820_count);
    rt_puts(" cmdline=");
    rt_puts(rt_cmdline());
    rt_putc('\n');
  }
  return rt_cmdline_u64("exit", 0);
}
