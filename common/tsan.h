// Happens-before edges ThreadSanitizer cannot see by itself: synchronisation done inside DPDK's
// shared libraries (QSBR RCU, rings, mempools), which are not instrumented. No-ops in other builds.
#pragma once

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace qosvisor {

// The calling thread's writes so far happen before whatever follows a TsanAcquire(addr).
inline void TsanRelease([[maybe_unused]] const void* addr) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(const_cast<void*>(addr));
#endif
}

inline void TsanAcquire([[maybe_unused]] const void* addr) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(const_cast<void*>(addr));
#endif
}

// Packets cross threads through DPDK's rings, PMDs and mempools. One object stands for all of
// those hand-offs: a port releases it before giving packets to DPDK and acquires it after taking
// packets from DPDK. (Coarse: it orders every hand-off with every other, which is what the
// appliance's single-owner packet path relies on anyway.)
inline char g_tsan_mbuf_handoff;
inline void TsanPacketsOut() { TsanRelease(&g_tsan_mbuf_handoff); }
inline void TsanPacketsIn() { TsanAcquire(&g_tsan_mbuf_handoff); }

}  // namespace qosvisor
