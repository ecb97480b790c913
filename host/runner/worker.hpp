// `jobhost worker`: the process side of the process runner. Started by the host with one end of a socketpair as
// fd 3 and the host's private copy of the plugin library as fd 4; never started by hand. It loads the library,
// creates the one task of its job type (constructor and validate_config run here, not in the host), answers kReady
// (or kInitFailed with the reason), then runs what each kRun frame carries until the host closes the socket.
#pragma once

namespace jobhost::runner {

// Returns the process exit code. `socket_fd` is the host's socket.
int worker_main(int socket_fd);

} // namespace jobhost::runner
