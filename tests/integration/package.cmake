# The Debian package: built by CPack from this build folder, unpacked into a scratch root with dpkg -x (no root,
# no container), its systemd unit verified with systemd-analyze, and the installed binary run against the installed
# config (with an example plugin copied into the installed plugin folder). Run by CTest:
#   cmake -DBINARY_DIR=... -DWORK=... -P package.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/root")
execute_process(COMMAND cpack -G DEB -B "${WORK}/out" --config "${BINARY_DIR}/CPackConfig.cmake"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(GLOB deb "${WORK}/out/jobhost_*.deb")
if(NOT rc EQUAL 0 OR NOT deb)
  message(FATAL_ERROR "cpack failed (exit ${rc}):\n${out}\n${err}")
endif()

# what the package says it is and holds
execute_process(COMMAND dpkg-deb --field "${deb}" Package Version Depends OUTPUT_VARIABLE fields)
foreach(want "Package: jobhost" "Version: 0.1.0" "adduser" "libsystemd0" "libpq5" "libsqlite3")
  string(FIND "${fields}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the package's control fields lack '${want}':\n${fields}")
  endif()
endforeach()
execute_process(COMMAND dpkg-deb --contents "${deb}" OUTPUT_VARIABLE contents)
foreach(want "./usr/bin/jobhost" "./etc/jobhost/jobhost.toml" "./lib/systemd/system/jobhost.service"
             "./usr/lib/jobhost/plugins/" "./usr/lib/jobhost/examples/hello.so" "./usr/include/jobhost/sdk.hpp"
             "./usr/include/jobhost/testing.hpp" "./usr/lib/cmake/jobhost/jobhostConfigVersion.cmake"
             "./usr/share/doc/jobhost/README.md")
  string(FIND "${contents}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the package lacks ${want}:\n${contents}")
  endif()
endforeach()
execute_process(COMMAND dpkg-deb --ctrl-tarfile "${deb}" COMMAND tar -t OUTPUT_VARIABLE control)
if(NOT control MATCHES "postinst" OR NOT control MATCHES "postrm" OR NOT control MATCHES "conffiles")
  message(FATAL_ERROR "the package has no postinst/postrm (the jobhost user) or conffiles:\n${control}")
endif()
execute_process(COMMAND dpkg-deb --info "${deb}" conffiles OUTPUT_VARIABLE conffiles)
if(NOT conffiles MATCHES "/etc/jobhost/jobhost.toml")
  message(FATAL_ERROR "/etc/jobhost/jobhost.toml is not a conffile: an upgrade would overwrite it:\n${conffiles}")
endif()

execute_process(COMMAND dpkg -x "${deb}" "${WORK}/root" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "dpkg -x failed: ${rc}")
endif()

# the unit, as systemd reads it: a copy whose ExecStart names the unpacked binary (systemd-analyze checks that
# every command exists on this machine, where /usr/bin/jobhost is not installed)
file(READ "${WORK}/root/lib/systemd/system/jobhost.service" unit)
string(REPLACE "/usr/bin/jobhost" "${WORK}/root/usr/bin/jobhost" unit_here "${unit}")
file(WRITE "${WORK}/verify/jobhost.service" "${unit_here}")
execute_process(COMMAND systemd-analyze verify "${WORK}/verify/jobhost.service"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT err STREQUAL "")
  message(FATAL_ERROR "systemd-analyze verify found problems in jobhost.service (exit ${rc}):\n${out}\n${err}")
endif()
foreach(want "Type=notify" "ExecReload=/bin/kill -HUP $MAINPID" "Restart=on-failure" "ProtectSystem=strict"
             "NoNewPrivileges=true" "PrivateTmp=true" "WatchdogSec=" "User=jobhost")
  string(FIND "${unit}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "jobhost.service lacks ${want}")
  endif()
endforeach()

# the installed binary against the installed config: check it, then run it with an example plugin in the installed
# plugin folder; only the store and the port are moved into the scratch folder
set(bin "${WORK}/root/usr/bin/jobhost")
set(cfg "${WORK}/root/etc/jobhost/jobhost.toml")
file(COPY "${WORK}/root/usr/lib/jobhost/examples/hello.so" DESTINATION "${WORK}/root/usr/lib/jobhost/plugins")
execute_process(COMMAND "${bin}" check --config "${cfg}" --plugin-dir "${WORK}/root/usr/lib/jobhost/plugins"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed jobhost refuses the installed config (exit ${rc}):\n${out}\n${err}")
endif()
# run until the enqueued job has run (at most 60 s), then SIGTERM, and wait for a clean exit
set(script "\"$0\" run --config \"$1\" --plugin-dir \"$2\" --store \"$3\" --listen 127.0.0.1:0 --enqueue hello \
  2>\"$4\" & pid=$!; i=0; while [ $i -lt 600 ] && ! grep -q 'hello from' \"$4\"; do sleep 0.1; i=$((i+1)); done; \
  kill -TERM $pid; wait $pid")
execute_process(COMMAND sh -c "${script}" "${bin}" "${cfg}" "${WORK}/root/usr/lib/jobhost/plugins" "${WORK}/jobs.db"
                        "${WORK}/run.log"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out)
file(READ "${WORK}/run.log" err)
if(NOT rc EQUAL 0 OR NOT err MATCHES "serving 1 job type" OR NOT err MATCHES "summary hello: enqueued [1-9]")
  message(FATAL_ERROR "the installed jobhost did not serve and stop cleanly (exit ${rc}):\n${out}\n${err}")
endif()
message(STATUS "the package installs a jobhost that runs with its own config, and a unit systemd accepts")
file(REMOVE_RECURSE "${WORK}")
