# Applies QOSVISOR_SANITIZE (e.g. "address;undefined") to every target built after this point.
if(QOSVISOR_SANITIZE)
  list(JOIN QOSVISOR_SANITIZE "," _qv_san)
  add_compile_options(-fsanitize=${_qv_san} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${_qv_san})
endif()
