# find_package(jobhost) for plugins built out of tree: gives jobhost::sdk and jobhost_add_plugin().
include(CMakeFindDependencyMacro)
find_dependency(Boost 1.81 COMPONENTS json)
include("${CMAKE_CURRENT_LIST_DIR}/jobhostTargets.cmake")
include("${CMAKE_CURRENT_LIST_DIR}/jobhost-plugin.cmake")
