// The system calls a vCPU thread may make once it runs guest code (as Firecracker confines its
// vCPU threads): KVM_RUN, memory and futexes, the devices' file I/O and the serial log's rotation.
// Anything else does not run: it traps, and the vCPU's VM is stopped with the call named.
#pragma once

#include <atomic>
#include <string>

#include "common/status.h"

namespace qosvisor::hv {

// Installs the filter on the calling thread only. `violation` receives the number of the first
// forbidden system call the thread attempts (the call itself fails with EPERM without running);
// the thread is expected to check it and stop.
Status ConfineVcpuThread(std::atomic<long>* violation);

// "socket (41)"-style name of a system call number, for reports.
std::string SyscallName(long number);

}  // namespace qosvisor::hv
