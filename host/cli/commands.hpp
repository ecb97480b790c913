// The jobhost subcommands. Each returns the process exit code:
//   0  clean exit
//   1  runtime failure (the host started but could not keep serving)
//   2  usage or configuration error, or a plugin problem under --strict (nothing was run)
#pragma once

#include "common/error.hpp"
#include "config/config.hpp"
#include "log/log.hpp"
#include "store/store.hpp"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace jobhost::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitUsage = 2;

struct CommonOptions {
    std::optional<std::filesystem::path> config;     // --config
    std::optional<std::filesystem::path> plugin_dir; // --plugin-dir, overrides [host] plugin_dir
    std::optional<log::Level> log_level;             // --log-level, overrides [log] level
    bool strict = false;                             // --strict
    bool json = false;                               // --json
    std::vector<std::string> enqueue;                // run --enqueue TYPE[=JSON], repeatable
    std::optional<std::string> store;                // --store FILE (or "memory"), overrides [store]
    std::optional<std::string> listen;               // run --listen HOST:PORT (or "off"), overrides [http]
};

// Reads --config (or the defaults) and applies the command-line overrides. Returns an exit code on error, else -1.
int load_config(const CommonOptions& options, config::Config& config);

int run_command(const CommonOptions& options);
int plugins_command(const CommonOptions& options);
int check_command(const CommonOptions& options);
// GET /api/v1/status from a running host (url empty: the config's [http] listen) and print it.
int status_command(const CommonOptions& options, const std::string& url);
// jobhost reload: asks a running host to rescan its plugin folder (POST /api/v1/plugins/reload) and prints what
// changed. Exit 1 when a file was refused.
int reload_command(const CommonOptions& options, const std::string& url);
// jobhost new TYPE [--dir D]: writes D/TYPE/ (TYPE with '.' and '-' as '_'), a ready out-of-tree plugin project:
// the task's .cpp, a CMakeLists.txt using find_package(jobhost), a test that runs the task through
// jobhost/testing.hpp, the config lines to add, and a README. Refuses an existing folder.
int new_command(const std::string& type, const std::optional<std::filesystem::path>& dir);

} // namespace jobhost::cli
