// Discovery: scans the plugin folder, checks each library's ABI, and reads its job descriptors, without knowing any
// job type's name in advance. One bad file never stops the scan: each problem is recorded with the file it concerns.
#pragma once

#include "config/config.hpp"

#include <jobhost/abi.h>

#include <boost/dll/shared_library.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace jobhost::loader {

// A loaded library. Shared by every descriptor and task that came from it, so it is unloaded only after the last
// of them is gone.
struct PluginLibrary {
    std::filesystem::path file;
    boost::dll::shared_library library;
    // The private copy it was loaded from (a memfd, loaded as /proc/self/fd/N). Never closed: the dynamic loader
    // knows a library by that name, so the name must not come to mean another file while this process lives.
    int private_copy = -1;
};

struct DiscoveredType {
    std::string type;
    std::filesystem::path file;
    std::uint32_t abi_version = 0;
    jh_job_descriptor descriptor{}; // the host's zero-filled copy, up to the plugin's struct_size
    std::shared_ptr<PluginLibrary> library;
};

// A file or a job type that was skipped, and why.
struct Problem {
    std::filesystem::path file;
    std::string type; // empty when the whole file was skipped
    std::string message;
    std::string to_string() const;
};

struct Discovery {
    std::vector<DiscoveredType> types;
    std::vector<Problem> problems;
    std::size_t libraries_loaded = 0;
    std::vector<std::filesystem::path> files; // every *.so the scan saw, loaded or not (for a rescan's removals)
};

// The problems as the config check takes them: what each refused file or type was, and why.
std::vector<config::RefusedPlugin> refused_plugins(const Discovery& discovery);
// One of them.
config::RefusedPlugin refusal(const Problem& problem);

// Why a second file's declaration of `type` is refused: `first` keeps it.
std::string declared_twice(const std::string& type, const std::filesystem::path& first,
                           const std::filesystem::path& second);

struct LoaderOptions {
    std::filesystem::path plugin_dir;
    bool allow_insecure_plugins = false;
};

// Scans plugin_dir (not recursively) for *.so files, in name order. Never throws for a bad plugin, and never dies
// of one: each file is probed in a child process first (probe_files), and one that crashed, aborted or exited there
// is refused with what happened. The first file to declare a type keeps it; a later declaration is a problem naming
// both files.
// `want`, when set, picks the files to probe and load (a rescan loads only what changed); the others are listed in
// `files` and otherwise skipped.
Discovery discover(const LoaderOptions& options, const std::function<bool(const std::filesystem::path&)>& want = {});

// A copy of a plugin file in an anonymous memory file (memfd), readable at path() while the object lives: what
// the host loads instead of the file users write.
class PrivateCopy {
public:
    explicit PrivateCopy(const std::filesystem::path& file);
    ~PrivateCopy();
    PrivateCopy(const PrivateCopy&) = delete;
    PrivateCopy& operator=(const PrivateCopy&) = delete;
    const std::string& path() const noexcept { return path_; }
    const std::string& error() const noexcept { return error_; } // empty when the copy is whole
    // Hands the descriptor over (see PluginLibrary::private_copy); the object no longer closes it.
    int release() noexcept { return std::exchange(fd_, -1); }

private:
    int fd_ = -1;
    std::string path_, error_;
};

// Loads one file (its private copy) into `out`. Exposed for tests; discover() calls it for each file that
// survived the probe.
void load_file(const std::filesystem::path& file, const LoaderOptions& options, Discovery& out);

// Loads each file in a short-lived child process first (one child for the whole list, a new one after a file ends
// it) and returns, for each file, how loading it ended the child ("was killed by signal 6 (SIGABRT); it said:
// terminate called after throwing ... what(): ...", "ended with exit(3)", "did not finish loading it within 10s"), or
// an empty string for a file that loaded there without harm.
std::vector<std::string> probe_files(const std::vector<std::filesystem::path>& files, const LoaderOptions& options);

// What jobhost reads of a plugin file itself, before the dynamic loader sees it: the ELF header's checks, then the
// symbol names in its 'jobhost' section. Either those names, or why the file is refused (`problem`). Never runs the
// file's code; tests/fuzz/fuzz_elf.cpp feeds it any bytes.
struct PluginFileInfo {
    std::vector<std::string> symbols;
    std::string problem;
};
PluginFileInfo read_plugin_file(const std::string& path);

std::string abi_version_string(std::uint32_t version);

} // namespace jobhost::loader
