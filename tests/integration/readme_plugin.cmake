# The README's first plugin, built out of tree against the installed SDK exactly as the README says, then
# discovered by the jobhost binary. Run by CTest:
#   cmake -DSOURCE_DIR=... -DBINARY_DIR=... -DJOBHOST=... -DWORK=... -P readme_plugin.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/src" "${WORK}/plugins")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BINARY_DIR}" --prefix "${WORK}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${rc}")
endif()

file(READ "${SOURCE_DIR}/README.md" readme)
string(REGEX MATCH "`greet.cpp`:\n\n```cpp\n(.*)```\n\n`CMakeLists.txt` beside it" _ "${readme}")
set(source "${CMAKE_MATCH_1}")
string(FIND "${source}" "```" fence)
if(fence GREATER -1)
  string(SUBSTRING "${source}" 0 ${fence} source)
endif()
if(source STREQUAL "")
  message(FATAL_ERROR "the README no longer has the greet.cpp block")
endif()
file(WRITE "${WORK}/src/greet.cpp" "${source}")
string(REGEX MATCH "or out of tree[^\n]*\n\n```cmake\n([^`]*)```" _ "${readme}")
if(CMAKE_MATCH_1 STREQUAL "")
  message(FATAL_ERROR "the README no longer has the out-of-tree CMakeLists.txt block")
endif()
file(WRITE "${WORK}/src/CMakeLists.txt" "${CMAKE_MATCH_1}")

execute_process(COMMAND "${CMAKE_COMMAND}" -S "${WORK}/src" -B "${WORK}/build" -DCMAKE_PREFIX_PATH=${WORK}/prefix
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the README plugin failed:\n${out}\n${err}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${WORK}/build" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the README plugin failed:\n${out}\n${err}")
endif()
file(COPY "${WORK}/build/greet.so" DESTINATION "${WORK}/plugins")
execute_process(COMMAND "${JOBHOST}" plugins --plugin-dir "${WORK}/plugins" --json RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "\"type\":\"greet\"" OR NOT out MATCHES "\"interval\":\\{\"value\":\"1m\"")
  message(FATAL_ERROR "jobhost did not discover the README plugin (exit ${rc}):\n${out}\n${err}")
endif()
message(STATUS "the README plugin builds out of tree and is discovered as 'greet'")
file(REMOVE_RECURSE "${WORK}")
