/* fault: executes an invalid instruction in ring 3; the runtime reports the exception on serial
   and exits with 0xe0 | vector (0xe6 for #UD). Checks that guest faults end cleanly. */
#include "runtime.h"

uint64_t guest_main(void) {
  rt_puts("fault: about to execute ud2\n");
  __asm__ volatile("ud2");
  return 0;
}
