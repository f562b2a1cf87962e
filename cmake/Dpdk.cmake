# DPDK 22.11 from pkg-config, as SYSTEM includes, experimental API allowed (rte_bpf, memif).
find_package(PkgConfig REQUIRED)
pkg_check_modules(DPDK REQUIRED IMPORTED_TARGET libdpdk)
add_library(qv_dpdk INTERFACE)
target_link_libraries(qv_dpdk INTERFACE PkgConfig::DPDK)
get_target_property(_dpdk_inc PkgConfig::DPDK INTERFACE_INCLUDE_DIRECTORIES)
set_target_properties(PkgConfig::DPDK PROPERTIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${_dpdk_inc}")
target_compile_definitions(qv_dpdk INTERFACE ALLOW_EXPERIMENTAL_API)
