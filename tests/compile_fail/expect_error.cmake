# Compiles FILE and passes only if the compiler refuses it with MESSAGE in its output.
execute_process(COMMAND ${COMPILER} ${ARGS} ${FILE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${FILE} compiled, but JOBHOST_JOB should have refused it")
endif()
string(FIND "${out}${err}" "${MESSAGE}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${FILE} failed to compile, but not with \"${MESSAGE}\":\n${err}")
endif()
