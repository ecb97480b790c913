#include "loader/plugin_loader.hpp"

#include "registry/job_settings.hpp"

#include <boost/dll/library_info.hpp>

#include <dlfcn.h>
#include <elf.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

namespace jobhost::loader {

namespace fs = std::filesystem;

std::string Problem::to_string() const {
    std::string s = file.string();
    if (!type.empty()) s += " (type '" + type + "')";
    return s + ": " + message;
}

std::string abi_version_string(std::uint32_t version) {
    return std::to_string(JOBHOST_ABI_VERSION_MAJOR(version)) + "." +
           std::to_string(JOBHOST_ABI_VERSION_MINOR(version));
}

namespace {

// Refuses files and folders that someone other than their owner may write: loading them runs their code.
std::string insecure_reason(const fs::path& p, bool is_dir) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return {};
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) == 0) return {};
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return std::string("refusing to load: the ") + (is_dir ? "plugin folder " : "file ") + p.string() +
           " is writable by users other than its owner (mode " + mode +
           "), so anyone among them could run code inside jobhost; run 'chmod go-w " + p.string() +
           "' or set [host] allow_insecure_plugins = true";
}

// Checks the ELF header before handing the file to the dynamic loader, so that a text file or a truncated copy
// gets a precise message instead of whatever dlopen says.
std::string check_elf(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return "cannot open the file: " + std::string(std::strerror(errno));
    std::error_code ec;
    auto size = fs::file_size(file, ec);
    Elf64_Ehdr h{};
    in.read(reinterpret_cast<char*>(&h), sizeof h);
    std::size_t got = static_cast<std::size_t>(in.gcount());
    if (got < SELFMAG || std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0)
        return "not a shared library: the file does not start with an ELF header (is it a source or text file named "
               ".so?); remove it from the plugin folder";
    if (got < sizeof h)
        return "truncated ELF file: " + std::to_string(size) + " bytes, shorter than an ELF header; rebuild the plugin";
    if (h.e_ident[EI_CLASS] != ELFCLASS64) return "not a 64-bit ELF file; build the plugin for this machine";
    if (h.e_type != ET_DYN)
        return "an ELF file but not a shared library (e_type " + std::to_string(h.e_type) +
               "); build it with add_library(... MODULE) or -shared";
    std::uint64_t table_end = h.e_shoff + std::uint64_t(h.e_shnum) * h.e_shentsize;
    if (table_end > size)
        return "truncated ELF file: " + std::to_string(size) + " bytes, but its section table ends at byte " +
               std::to_string(table_end) + "; the copy is incomplete, rebuild or copy the plugin again";
    return {};
}

void add_problem(Discovery& out, const fs::path& file, std::string type, std::string message) {
    out.problems.push_back({file, std::move(type), std::move(message)});
}

} // namespace

void load_file(const fs::path& file, const LoaderOptions& options, Discovery& out) {
    if (!options.allow_insecure_plugins) {
        if (auto why = insecure_reason(file, false); !why.empty()) return add_problem(out, file, {}, why);
    }
    if (auto why = check_elf(file); !why.empty()) return add_problem(out, file, {}, why);

    std::vector<std::string> symbols;
    try {
        boost::dll::library_info info(file);
        auto sections = info.sections();
        if (std::find(sections.begin(), sections.end(), "jobhost") == sections.end())
            return add_problem(out, file, {},
                               "no 'jobhost' section: this library declares no job types; declare them with "
                               "JOBHOST_JOB(...) from <jobhost/sdk.hpp>");
        symbols = info.symbols("jobhost");
    } catch (const std::exception& e) {
        return add_problem(out, file, {}, std::string("damaged ELF file, its sections cannot be read: ") + e.what());
    }
    if (symbols.empty())
        return add_problem(out, file, {}, "the 'jobhost' section lists no symbols; declare job types with JOBHOST_JOB");

    auto lib = std::make_shared<PluginLibrary>();
    lib->file = file;
    boost::dll::fs::error_code ec;
    lib->library.load(file, ec, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    if (ec) {
        // Boost.DLL keeps only an error code; ask the dynamic loader once more for its words (missing dependency,
        // undefined symbol...).
        std::string detail = ec.message();
        if (void* h = ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL)) {
            ::dlclose(h);
        } else if (const char* e = ::dlerror()) {
            detail = e;
        }
        return add_problem(out, file, {}, "the dynamic loader refused the library: " + detail);
    }

    std::size_t found = 0;
    for (const auto& symbol : symbols) {
        if (symbol.rfind("jobhost_job_", 0) != 0) continue;
        const void* const* alias = nullptr;
        try {
            alias = &lib->library.get<const void*>(symbol);
        } catch (const std::exception& e) {
            add_problem(out, file, {}, "symbol " + symbol + " cannot be resolved: " + e.what());
            continue;
        }
        const auto* raw = static_cast<const unsigned char*>(*alias);
        if (!raw) {
            add_problem(out, file, {}, "symbol " + symbol + " points to nothing");
            continue;
        }
        std::uint32_t size = 0, version = 0;
        std::memcpy(&size, raw, sizeof size);
        if (size >= 2 * sizeof(std::uint32_t)) std::memcpy(&version, raw + sizeof size, sizeof version);
        const std::string label = "descriptor " + symbol;
        if (size < 2 * sizeof(std::uint32_t)) {
            add_problem(out, file, {},
                        label + " has struct_size " + std::to_string(size) +
                            ", too small to hold an ABI version; the plugin is damaged or not built "
                            "with <jobhost/abi.h>");
            continue;
        }
        if (JOBHOST_ABI_VERSION_MAJOR(version) != JOBHOST_ABI_MAJOR) {
            add_problem(out, file, {},
                        label + " was built for plugin ABI " + abi_version_string(version) + ", this host speaks " +
                            abi_version_string(JOBHOST_ABI_VERSION) +
                            "; the major versions differ, so rebuild the "
                            "plugin against this host's SDK");
            continue;
        }
        if (JOBHOST_ABI_VERSION_MINOR(version) > JOBHOST_ABI_MINOR) {
            add_problem(out, file, {},
                        label + " was built for plugin ABI " + abi_version_string(version) +
                            ", newer than this host's " + abi_version_string(JOBHOST_ABI_VERSION) +
                            "; upgrade jobhost or rebuild the plugin against this host's SDK");
            continue;
        }
        if (size < JOBHOST_DESCRIPTOR_MIN_SIZE) {
            add_problem(out, file, {},
                        label + " has struct_size " + std::to_string(size) + ", smaller than the " +
                            std::to_string(JOBHOST_DESCRIPTOR_MIN_SIZE) +
                            " bytes of the oldest supported descriptor (ABI 1.0); rebuild the plugin");
            continue;
        }
        DiscoveredType t;
        std::memcpy(&t.descriptor, raw, std::min<std::size_t>(size, sizeof t.descriptor));
        t.descriptor.struct_size = static_cast<std::uint32_t>(std::min<std::size_t>(size, sizeof t.descriptor));
        t.type = t.descriptor.type ? t.descriptor.type : "";
        t.file = file;
        t.abi_version = version;
        t.library = lib;
        if (auto err = registry::validate_type_name(t.type); !err.empty()) {
            add_problem(out, file, t.type, "invalid metadata: " + err);
            continue;
        }
        if (!t.descriptor.create || !t.descriptor.destroy || !t.descriptor.run) {
            add_problem(out, file, t.type, "invalid metadata: the descriptor lacks create, destroy or run");
            continue;
        }
        auto settings = registry::settings_from_descriptor(t.descriptor);
        auto errors = registry::validate_settings(settings);
        if (!errors.empty()) {
            std::string msg = "invalid metadata: " + errors.front();
            for (std::size_t i = 1; i < errors.size(); ++i) msg += "; " + errors[i];
            add_problem(out, file, t.type, msg + "; fix the JOBHOST_JOB line and rebuild");
            continue;
        }
        auto dup = std::find_if(out.types.begin(), out.types.end(), [&](const auto& o) { return o.type == t.type; });
        if (dup != out.types.end()) {
            add_problem(out, file, t.type,
                        "job type '" + t.type + "' is declared twice: by " + dup->file.string() + " and by " +
                            file.string() + "; the first one is used, rename one of them or remove a copy");
            continue;
        }
        out.types.push_back(std::move(t));
        ++found;
    }
    if (found > 0) ++out.libraries_loaded;
}

Discovery discover(const LoaderOptions& options) {
    Discovery out;
    const fs::path& dir = options.plugin_dir;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        add_problem(out, dir, {},
                    "the plugin folder does not exist or is not a folder; create it or set [host] plugin_dir");
        return out;
    }
    if (!options.allow_insecure_plugins) {
        if (auto why = insecure_reason(dir, true); !why.empty()) {
            add_problem(out, dir, {}, why);
            return out;
        }
    }
    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".so" && it->is_regular_file(ec)) files.push_back(it->path());
    }
    if (ec) add_problem(out, dir, {}, "cannot list the plugin folder: " + ec.message());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) load_file(f, options, out);
    return out;
}

} // namespace jobhost::loader
