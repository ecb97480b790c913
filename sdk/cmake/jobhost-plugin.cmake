# jobhost_add_plugin(<name> SOURCES <files...> [OUTPUT_DIRECTORY <dir>])
# Builds a job plugin: a MODULE library with hidden visibility, linked to the SDK, named <name>.so (no "lib"
# prefix), written to OUTPUT_DIRECTORY when given.
function(jobhost_add_plugin name)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE jobhost::sdk)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}")
  endif()
endfunction()
