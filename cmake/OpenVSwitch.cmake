# The Open vSwitch library (flow syntax parser and classifier) from Debian's openvswitch-source.
# It is built once into QOSVISOR_OVS_DIR, then our C shim is linked with it into a single object
# that exports only qv_ovs_* symbols: the archive's ~5,500 unprefixed globals (xmalloc, hash_bytes,
# program_name, ...) would otherwise clash with DPDK and our own code.
set(QOSVISOR_OVS_TARBALL "/usr/src/openvswitch/openvswitch.tar.gz" CACHE FILEPATH
    "Debian openvswitch-source tarball")
if(NOT EXISTS "${QOSVISOR_OVS_TARBALL}")
  message(FATAL_ERROR "${QOSVISOR_OVS_TARBALL} is missing: install the Debian package "
                      "'openvswitch-source' (scripts/setup does this)")
endif()

set(_ovs_src "${QOSVISOR_OVS_DIR}/src")
set(_ovs_archive "${_ovs_src}/lib/.libs/libopenvswitch.a")
set(_shim_dir "${CMAKE_BINARY_DIR}/ovs-shim")
set(_shim_src "${CMAKE_SOURCE_DIR}/vswitch/ovs/ovs_flow_shim.c")
set(_shim_lib "${_shim_dir}/libqv_ovs.a")

add_custom_command(
  OUTPUT "${_ovs_archive}"
  COMMAND "${CMAKE_SOURCE_DIR}/cmake/build-ovs.sh" "${QOSVISOR_OVS_TARBALL}" "${QOSVISOR_OVS_DIR}"
  DEPENDS "${QOSVISOR_OVS_TARBALL}" "${CMAKE_SOURCE_DIR}/cmake/build-ovs.sh"
  COMMENT "Open vSwitch library (cached in ${QOSVISOR_OVS_DIR})"
  USES_TERMINAL)

file(WRITE "${_shim_dir}/exports.txt"
  "qv_ovs_init\nqv_ovs_flow_check\nqv_ovs_table_new\nqv_ovs_table_free\nqv_ovs_table_add\nqv_ovs_table_size\nqv_ovs_table_in_port_only\nqv_ovs_table_lookup\n")
add_custom_command(
  OUTPUT "${_shim_lib}"
  COMMAND ${CMAKE_C_COMPILER} -std=gnu11 -O2 -g -fno-strict-aliasing -Werror=implicit-function-declaration
          -I${_ovs_src} -I${_ovs_src}/include -I${_ovs_src}/lib
          -c "${_shim_src}" -o "${_shim_dir}/shim.o"
  COMMAND ${CMAKE_LINKER} -r -o "${_shim_dir}/combined.o" "${_shim_dir}/shim.o" "${_ovs_archive}"
  COMMAND ${CMAKE_OBJCOPY} --keep-global-symbols=${_shim_dir}/exports.txt
          "${_shim_dir}/combined.o" "${_shim_dir}/isolated.o"
  COMMAND ${CMAKE_COMMAND} -E rm -f "${_shim_lib}"
  COMMAND ${CMAKE_AR} rcs "${_shim_lib}" "${_shim_dir}/isolated.o"
  DEPENDS "${_ovs_archive}" "${_shim_src}" "${CMAKE_SOURCE_DIR}/vswitch/ovs/ovs_flow_shim.h"
  COMMENT "OVS flow shim (isolated object exporting qv_ovs_*)")
add_custom_target(qv_ovs_build DEPENDS "${_shim_lib}")

add_library(ovs::flow STATIC IMPORTED GLOBAL)
set_target_properties(ovs::flow PROPERTIES
  IMPORTED_LOCATION "${_shim_lib}"
  INTERFACE_LINK_LIBRARIES "atomic;m;Threads::Threads")
add_dependencies(ovs::flow qv_ovs_build)
