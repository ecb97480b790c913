// Discovery: scans the plugin folder, checks each library's ABI, and reads its job descriptors, without knowing any
// job type's name in advance. One bad file never stops the scan: each problem is recorded with the file it concerns.
#pragma once

#include <jobhost/abi.h>

#include <boost/dll/shared_library.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace jobhost::loader {

// A loaded library. Shared by every descriptor and task that came from it, so it is unloaded only after the last
// of them is gone.
struct PluginLibrary {
    std::filesystem::path file;
    boost::dll::shared_library library;
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
};

struct LoaderOptions {
    std::filesystem::path plugin_dir;
    bool allow_insecure_plugins = false;
};

// Scans plugin_dir (not recursively) for *.so files, in name order. Never throws for a bad plugin. The first file
// to declare a type keeps it; a later declaration is a problem naming both files.
Discovery discover(const LoaderOptions& options);

// Loads one file into `out`. Exposed for tests; discover() calls it for each file.
void load_file(const std::filesystem::path& file, const LoaderOptions& options, Discovery& out);

std::string abi_version_string(std::uint32_t version);

} // namespace jobhost::loader
