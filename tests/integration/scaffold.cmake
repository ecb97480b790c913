# jobhost new: the project it writes builds against the installed SDK, its test passes as written, and the host
# discovers the plugin it builds. Run by CTest:
#   cmake -DBINARY_DIR=... -DJOBHOST=... -DWORK=... -P scaffold.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/plugins")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BINARY_DIR}" --prefix "${WORK}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${rc}")
endif()

execute_process(COMMAND "${JOBHOST}" new image.resize-v2 --dir "${WORK}" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT EXISTS "${WORK}/image_resize_v2/image_resize_v2.cpp")
  message(FATAL_ERROR "jobhost new failed (exit ${rc}):\n${out}\n${err}")
endif()
foreach(f CMakeLists.txt image_resize_v2_test.cpp jobhost.toml README.md)
  if(NOT EXISTS "${WORK}/image_resize_v2/${f}")
    message(FATAL_ERROR "jobhost new did not write ${f}")
  endif()
endforeach()

# a second time, and a bad name: refused, nothing overwritten
execute_process(COMMAND "${JOBHOST}" new image.resize-v2 --dir "${WORK}" RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "exists already")
  message(FATAL_ERROR "jobhost new over an existing folder: exit ${rc}, ${err}")
endif()
execute_process(COMMAND "${JOBHOST}" new "Image Resize" --dir "${WORK}" RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "use only a-z, 0-9")
  message(FATAL_ERROR "jobhost new with a bad name: exit ${rc}, ${err}")
endif()

set(project "${WORK}/image_resize_v2")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${project}" -B "${project}/build" -DCMAKE_PREFIX_PATH=${WORK}/prefix
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the generated project failed:\n${out}\n${err}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${project}/build" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the generated project failed:\n${out}\n${err}")
endif()
execute_process(COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${project}/build" --output-on-failure
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "100% tests passed")
  message(FATAL_ERROR "the generated project's test failed:\n${out}\n${err}")
endif()

file(COPY "${project}/build/image_resize_v2.so" DESTINATION "${WORK}/plugins")
file(READ "${project}/jobhost.toml" snippet)
file(WRITE "${WORK}/jobhost.toml" "[host]\nplugin_dir = \"plugins\"\n[store]\nkind = \"memory\"\n\n${snippet}")
execute_process(COMMAND "${JOBHOST}" check --config "${WORK}/jobhost.toml" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "jobhost check refused the generated plugin with its config lines (exit ${rc}):\n${out}\n${err}")
endif()
execute_process(COMMAND "${JOBHOST}" plugins --config "${WORK}/jobhost.toml" --json RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "\"type\":\"image.resize-v2\"")
  message(FATAL_ERROR "jobhost did not discover the generated plugin (exit ${rc}):\n${out}\n${err}")
endif()
message(STATUS "jobhost new wrote a project that builds, passes its test, and is discovered")
file(REMOVE_RECURSE "${WORK}")
