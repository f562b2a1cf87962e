# Applies QOSVISOR_SANITIZE (e.g. "address;undefined") to every target built after this point.
if(QOSVISOR_SANITIZE)
  list(JOIN QOSVISOR_SANITIZE "," _qv_san)
  add_compile_options(-fsanitize=${_qv_san} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${_qv_san})
  # The vCPU syscall filter lets the sanitizers' runtime do its own work (hv/vcpu_seccomp.cc).
  add_compile_definitions(QOSVISOR_SANITIZED=1)
  # GCC warns that ThreadSanitizer does not model fences. Ours (virtqueue.cc) order the host's
  # stores against a guest's view of shared memory, which no sanitizer can watch anyway.
  if("thread" IN_LIST QOSVISOR_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    add_compile_options(-Wno-tsan)
  endif()
endif()

# Fuzz builds: every library gets libFuzzer's coverage instrumentation (the fuzz targets add the
# fuzzer's main), so the fuzzer is guided by the parser's and classifier's branches, not only by
# the few in the target itself.
if(QOSVISOR_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
