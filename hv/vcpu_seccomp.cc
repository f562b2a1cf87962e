// libseccomp filter for vCPU threads, and the SIGSYS handler that turns a trapped call into a
// recorded violation instead of a dead process.
#include "hv/vcpu_seccomp.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <ucontext.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace qosvisor::hv {
namespace {

thread_local std::atomic<long>* tls_violation = nullptr;

// Runs on the thread that made the call. Only async-signal-safe work: an atomic store, and the
// call's return value set to -EPERM in the saved registers (the kernel did not run it).
void OnSigsys(int, siginfo_t* info, void* context) {
  std::atomic<long>* violation = tls_violation;
  if (violation != nullptr) {
    long expected = 0;
    violation->compare_exchange_strong(expected, info->si_syscall);
  }
  // SAFETY: the kernel passes a ucontext_t to SA_SIGINFO handlers; REG_RAX holds the return
  // value the interrupted code sees (x86-64, the only architecture hv/ supports).
  static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RAX] = -EPERM;
}

void InstallSigsysHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnSigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSYS, &sa, nullptr);
  });
}

// Memory, futexes, signals, time, thread exit: what the C++ runtime (and the sanitizers' runtime,
// in their builds) needs on any thread.
constexpr int kRuntimeCalls[] = {
    SCMP_SYS(futex),          SCMP_SYS(mmap),         SCMP_SYS(munmap),
    SCMP_SYS(mremap),         SCMP_SYS(mprotect),     SCMP_SYS(madvise),
    SCMP_SYS(brk),            SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(sigaltstack),    SCMP_SYS(tgkill),       SCMP_SYS(tkill),
    SCMP_SYS(gettid),         SCMP_SYS(getpid),       SCMP_SYS(sched_yield),
    SCMP_SYS(nanosleep),      SCMP_SYS(clock_nanosleep), SCMP_SYS(clock_gettime),
    SCMP_SYS(gettimeofday),   SCMP_SYS(exit),         SCMP_SYS(exit_group),
    SCMP_SYS(restart_syscall), SCMP_SYS(rseq),        SCMP_SYS(sched_getaffinity),
};

// The devices' I/O on descriptors opened before the filter: serial log and console writes,
// vflash reads, writes and flushes, interrupt eventfds.
constexpr int kDeviceCalls[] = {
    SCMP_SYS(read),      SCMP_SYS(write),     SCMP_SYS(pread64),  SCMP_SYS(pwrite64),
    SCMP_SYS(readv),     SCMP_SYS(writev),    SCMP_SYS(preadv),   SCMP_SYS(pwritev),
    SCMP_SYS(fsync),     SCMP_SYS(fdatasync), SCMP_SYS(lseek),    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat), SCMP_SYS(ftruncate), SCMP_SYS(close),   SCMP_SYS(rename),
};

#ifdef QOSVISOR_SANITIZED
// Sanitizer builds (tests only): what the sanitizers' runtime does on any thread, e.g. probing
// whether memory is readable through a pipe (UBSan's vptr check), reading /proc/self/maps and the
// executable's name, and running the symbolizer when it reports. socket, connect and the like
// stay forbidden, so the filter is still tested for what it refuses.
constexpr int kSanitizerCalls[] = {
    SCMP_SYS(pipe),       SCMP_SYS(pipe2),      SCMP_SYS(readlink),   SCMP_SYS(readlinkat),
    SCMP_SYS(open),       SCMP_SYS(openat),     SCMP_SYS(stat),       SCMP_SYS(lstat),
    SCMP_SYS(access),     SCMP_SYS(faccessat),  SCMP_SYS(getdents64), SCMP_SYS(prlimit64),
    SCMP_SYS(getrlimit),  SCMP_SYS(rt_sigaction), SCMP_SYS(prctl),    SCMP_SYS(dup),
    SCMP_SYS(dup2),       SCMP_SYS(dup3),       SCMP_SYS(fcntl),      SCMP_SYS(mincore),
    SCMP_SYS(process_vm_readv), SCMP_SYS(uname), SCMP_SYS(sysinfo),   SCMP_SYS(getuid),
    SCMP_SYS(getppid),    SCMP_SYS(kill),       SCMP_SYS(wait4),      SCMP_SYS(clone),
    SCMP_SYS(clone3),     SCMP_SYS(fork),       SCMP_SYS(vfork),      SCMP_SYS(execve),
    SCMP_SYS(set_robust_list), SCMP_SYS(poll),  SCMP_SYS(ppoll),      SCMP_SYS(statx),
};
#endif

Status AddRules(scmp_filter_ctx ctx) {
  for (int nr : kRuntimeCalls) {
    if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) return Status::Error("runtime rule");
  }
#ifdef QOSVISOR_SANITIZED
  for (int nr : kSanitizerCalls) {
    if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) return Status::Error("sanitizer rule");
  }
#endif
  for (int nr : kDeviceCalls) {
    if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) return Status::Error("device rule");
  }
  // ioctl: KVM_RUN only (the vCPU's fd was opened before); everything else a vCPU needs is done
  // by the control thread.
  if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                       SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(KVM_RUN))) != 0) {
    return Status::Error("ioctl rule");
  }
#ifndef QOSVISOR_SANITIZED  // (there openat is allowed outright, above)
  // openat: only the serial log's rotation, by its exact flags (a fresh log, write-only).
  const scmp_datum_t log_flags = O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC;
  if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                       SCMP_A2(SCMP_CMP_EQ, log_flags)) != 0) {
    return Status::Error("openat rule");
  }
#endif
  return Status::Ok();
}

}  // namespace

Status ConfineVcpuThread(std::atomic<long>* violation) {
  InstallSigsysHandler();
  tls_violation = violation;
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
  if (ctx == nullptr) return Status::Error("seccomp_init failed");
  Status s = AddRules(ctx);
  // Without TSYNC the filter applies to this thread alone; the appliance's other threads keep
  // their freedom.
  if (s.ok()) {
    const int rc = seccomp_load(ctx);
    if (rc != 0) s = Status::Error(fmt::format("seccomp_load: {}", std::strerror(-rc)));
  } else {
    s = Status::Error(fmt::format("building the vCPU syscall filter: {}", s.message()));
  }
  seccomp_release(ctx);
  return s;
}

std::string SyscallName(long number) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, static_cast<int>(number));
  std::string out = fmt::format("{} ({})", name != nullptr ? name : "unknown", number);
  std::free(name);
  return out;
}

}  // namespace qosvisor::hv
