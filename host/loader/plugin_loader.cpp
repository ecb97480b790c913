#include "loader/plugin_loader.hpp"

#include "registry/job_settings.hpp"

#include <boost/dll/library_info.hpp>

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>

#include <algorithm>
#include <cctype>
#include <optional>
#include <utility>
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

config::RefusedPlugin refusal(const Problem& p) {
    return {p.type, p.file.string() + ": " + p.message};
}

std::vector<config::RefusedPlugin> refused_plugins(const Discovery& discovery) {
    std::vector<config::RefusedPlugin> out;
    for (const auto& p : discovery.problems) out.push_back(refusal(p));
    return out;
}

std::string declared_twice(const std::string& type, const fs::path& first, const fs::path& second) {
    return "job type '" + type + "' is declared twice: by " + first.string() + " and by " + second.string() +
           "; the first one is used, rename one of them or remove a copy";
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
    if (h.e_ident[EI_DATA] != ELFDATA2LSB) return "not a little-endian ELF file; build the plugin for this machine";
    // What follows is what the section reader (Boost.DLL's) relies on without checking: a section table of
    // Elf64_Shdr entries, a section-name table inside it, and every section's bytes inside the file. Without these
    // checks a damaged file made it allocate what a section header claimed (terabytes) or read past the file.
    const std::string damaged = "damaged ELF file: ";
    const std::string redo = "; rebuild the plugin, or copy it again if the copy was cut short";
    if (h.e_shnum == 0 || h.e_shentsize != sizeof(Elf64_Shdr))
        return damaged + "no section table it can read (" + std::to_string(h.e_shnum) + " entries of " +
               std::to_string(h.e_shentsize) + " bytes)" + redo;
    if (h.e_shstrndx >= h.e_shnum)
        return damaged + "the section-name table is section " + std::to_string(h.e_shstrndx) + " of " +
               std::to_string(h.e_shnum) + redo;
    std::uint64_t table_end = h.e_shoff + std::uint64_t(h.e_shnum) * h.e_shentsize;
    if (h.e_shoff > size || table_end > size)
        return "truncated ELF file: " + std::to_string(size) + " bytes, but its section table ends at byte " +
               std::to_string(table_end) + "; the copy is incomplete, rebuild or copy the plugin again";
    std::vector<Elf64_Shdr> sections(h.e_shnum);
    in.seekg(static_cast<std::streamoff>(h.e_shoff));
    in.read(reinterpret_cast<char*>(sections.data()),
            static_cast<std::streamsize>(sections.size() * sizeof(Elf64_Shdr)));
    if (!in) return "cannot read the section table of the file" + redo;
    for (std::size_t i = 0; i < sections.size(); ++i) {
        const auto& sh = sections[i];
        if (sh.sh_type == SHT_NOBITS || sh.sh_type == SHT_NULL) continue; // no bytes in the file
        if (sh.sh_offset > size || sh.sh_size > size - sh.sh_offset)
            return damaged + "section " + std::to_string(i) + " claims bytes " + std::to_string(sh.sh_offset) + " to " +
                   std::to_string(sh.sh_offset + sh.sh_size) + " of a file of " + std::to_string(size) + redo;
        if ((sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM) && sh.sh_size % sizeof(Elf64_Sym) != 0)
            return damaged + "symbol table (section " + std::to_string(i) + ") of " + std::to_string(sh.sh_size) +
                   " bytes, not a whole number of " + std::to_string(sizeof(Elf64_Sym)) + "-byte symbols" + redo;
    }
    if (sections[h.e_shstrndx].sh_type != SHT_STRTAB)
        return damaged + "the section-name table (section " + std::to_string(h.e_shstrndx) + ") is not a string table" +
               redo;
    return {};
}

void add_problem(Discovery& out, const fs::path& file, std::string type, std::string message) {
    out.problems.push_back({file, std::move(type), std::move(message)});
}

} // namespace

PluginFileInfo read_plugin_file(const std::string& path) {
    PluginFileInfo out;
    if (out.problem = check_elf(path); !out.problem.empty()) return out;
    try {
        boost::dll::library_info info(path);
        auto sections = info.sections();
        if (std::find(sections.begin(), sections.end(), "jobhost") == sections.end()) {
            out.problem = "no 'jobhost' section: this library declares no job types; declare them with "
                          "JOBHOST_JOB(...) from <jobhost/sdk.hpp>";
            return out;
        }
        out.symbols = info.symbols("jobhost");
    } catch (const std::exception& e) {
        out.problem = std::string("damaged ELF file, its sections cannot be read: ") + e.what();
        return out;
    }
    if (out.symbols.empty()) out.problem = "the 'jobhost' section lists no symbols; declare job types with JOBHOST_JOB";
    return out;
}

// A private copy of a plugin file in an anonymous memory file: what the host maps, so that a user who writes over
// the plugin file in place (cp onto it: the same inode) changes nothing under the running code, and a new version
// of a file is a new library to the dynamic loader, never the stale mapping of the old one.
PrivateCopy::PrivateCopy(const fs::path& file) {
    std::string name = "jobhost:" + file.filename().string();
    fd_ = ::memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd_ < 0) {
        error_ = "cannot make a private copy (memfd_create: " + std::string(std::strerror(errno)) + ")";
        return;
    }
    int in = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        error_ = "cannot open the file: " + std::string(std::strerror(errno));
        return;
    }
    char buf[1 << 16];
    for (;;) {
        auto n = ::read(in, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 || ::write(fd_, buf, static_cast<std::size_t>(n)) != n) {
            error_ = "cannot copy the file: " + std::string(std::strerror(errno));
            break;
        }
    }
    ::close(in);
    path_ = "/proc/self/fd/" + std::to_string(fd_);
}

PrivateCopy::~PrivateCopy() {
    if (fd_ >= 0) ::close(fd_); // what the dynamic loader mapped stays mapped
}

void load_file(const fs::path& file, const LoaderOptions& options, Discovery& out) {
    if (!options.allow_insecure_plugins) {
        if (auto why = insecure_reason(file, false); !why.empty()) return add_problem(out, file, {}, why);
    }
    PrivateCopy copy(file);
    if (!copy.error().empty()) return add_problem(out, file, {}, copy.error());
    auto read = read_plugin_file(copy.path());
    if (!read.problem.empty()) return add_problem(out, file, {}, read.problem);
    const auto& symbols = read.symbols;

    auto lib = std::make_shared<PluginLibrary>();
    lib->file = file;
    boost::dll::fs::error_code ec;
    lib->library.load(copy.path(), ec, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    if (ec) {
        // Boost.DLL keeps only an error code; ask the dynamic loader once more for its words (missing dependency,
        // undefined symbol...).
        std::string detail = ec.message();
        if (void* h = ::dlopen(copy.path().c_str(), RTLD_NOW | RTLD_LOCAL)) {
            ::dlclose(h);
        } else if (const char* e = ::dlerror()) {
            detail = e;
        }
        return add_problem(out, file, {}, "the dynamic loader refused the library: " + detail);
    }
    lib->private_copy = copy.release();

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
            add_problem(out, file, t.type, declared_twice(t.type, dup->file, file));
            continue;
        }
        out.types.push_back(std::move(t));
        ++found;
    }
    if (found > 0) ++out.libraries_loaded;
}

namespace {

std::string describe_end(int status) {
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char* name = sigabbrev_np(sig);
        return "was killed by signal " + std::to_string(sig) +
               (name ? std::string(" (SIG") + name + ")" : std::string());
    }
    if (WIFEXITED(status)) return "ended with exit(" + std::to_string(WEXITSTATUS(status)) + ")";
    return "ended";
}

constexpr auto kProbeLimit = std::chrono::seconds(10);

} // namespace

std::vector<std::string> probe_files(const std::vector<fs::path>& files, const LoaderOptions& options) {
    std::vector<std::string> out(files.size());
    std::size_t next = 0;
    while (next < files.size()) {
        // progress: the probe says which file it begins and ends; go: the parent lets it begin a file once it has
        // read all the probe said before (so that what a file says is told apart from what the one before it said,
        // which two pipes alone cannot order), a socket so that a probe killed meanwhile (say by a thread a plugin
        // left running) cannot kill this process with SIGPIPE (send with MSG_NOSIGNAL); err: the probe's stderr.
        int progress[2] = {-1, -1}, go[2] = {-1, -1}, err[2] = {-1, -1};
        auto close_all = [&] {
            for (int* pipe : {progress, go, err})
                for (int i : {0, 1})
                    if (pipe[i] >= 0) ::close(std::exchange(pipe[i], -1));
        };
        if (::pipe2(progress, O_CLOEXEC) != 0 || ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0 ||
            ::pipe2(err, O_CLOEXEC) != 0) {
            close_all();
            return out; // cannot probe: load as before
        }
        pid_t pid = ::fork();
        if (pid < 0) {
            close_all();
            return out;
        }
        if (pid == 0) { // the probe: its death names the file it was on
            ::close(progress[0]);
            ::close(go[1]);
            ::close(err[0]);
            ::dup2(err[1], 2); // what the plugin or the runtime says as it dies becomes part of the reason
            for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL); // die as it would
            for (std::size_t i = next; i < files.size(); ++i) {
                auto index = static_cast<std::uint32_t>(i);
                char ok = 0;
                if (::write(progress[1], &index, sizeof index) != sizeof index) ::_exit(0);
                if (::read(go[0], &ok, 1) != 1) ::_exit(0);
                {
                    Discovery d;
                    load_file(files[i], options, d);
                } // unloaded here: a crash in a static destructor counts too
                if (::write(progress[1], &index, sizeof index) != sizeof index) ::_exit(0);
            }
            ::_exit(0);
        }
        ::close(std::exchange(progress[1], -1));
        ::close(std::exchange(go[0], -1));
        ::close(std::exchange(err[1], -1));
        ::fcntl(err[0], F_SETFL, ::fcntl(err[0], F_GETFL) | O_NONBLOCK);
        std::optional<std::uint32_t> on; // the file begun and not ended
        std::string said;                // its stderr since it began the file
        bool err_open = true;
        auto read_err = [&] { // what the probe has said so far
            char buf[512];
            for (;;) {
                auto n = ::read(err[0], buf, sizeof buf);
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) return; // EAGAIN: nothing more for now
                if (n == 0) {
                    err_open = false;
                    return;
                }
                if (said.size() < 4096) said.append(buf, static_cast<std::size_t>(n));
            }
        };
        bool timed_out = false, progress_open = true;
        auto deadline = std::chrono::steady_clock::now() + kProbeLimit;
        while (progress_open || err_open) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p[2] = {{progress_open ? progress[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
            int r = ::poll(p, 2, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
            if (r == 0) { // this file's load does not finish
                timed_out = true;
                ::kill(pid, SIGKILL);
                break;
            }
            if (r < 0) {
                if (errno == EINTR) continue;
                break;
            }
            if (p[1].revents) read_err();
            if (p[0].revents) {
                std::uint32_t index = 0;
                if (::read(progress[0], &index, sizeof index) != static_cast<ssize_t>(sizeof index)) {
                    progress_open = false; // the probe is gone (or done)
                } else if (on && *on == index) {
                    on.reset();
                } else {
                    // It waits for `go` now, having said all it will say before this file: read that and drop it.
                    read_err();
                    on = index;
                    said.clear();
                    deadline = std::chrono::steady_clock::now() + kProbeLimit;
                    char ok = 1;
                    if (::send(go[1], &ok, 1, MSG_NOSIGNAL) != 1) progress_open = false;
                }
            }
        }
        if (on) read_err(); // after a time-out: what the pipe still holds (it does not wait for more)
        close_all();
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (!on) break; // every file ended
        std::string reason = timed_out ? "did not finish loading it within " + std::to_string(kProbeLimit.count()) + "s"
                                       : describe_end(status);
        while (!said.empty() && std::isspace(static_cast<unsigned char>(said.back()))) said.pop_back();
        for (char& c : said)
            if (c == '\n') c = ' ';
        if (said.size() > 300) said = "..." + said.substr(said.size() - 300);
        if (!said.empty()) reason += "; it said: " + said;
        out[*on] = reason;
        next = *on + 1;
    }
    return out;
}

Discovery discover(const LoaderOptions& options, const std::function<bool(const fs::path&)>& want) {
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
        if (it->path().extension() != ".so") continue;
        out.files.push_back(it->path());
        if (want && !want(it->path())) continue;
        std::error_code lec;
        if (it->is_symlink(lec)) { // checked like the file it points to, and the folder that file lives in
            auto target = fs::canonical(it->path(), lec);
            if (lec) {
                auto link = fs::read_symlink(it->path(), lec);
                add_problem(out, it->path(), {},
                            lec ? "a symbolic link that cannot be read: " + lec.message()
                                : "a symbolic link to " + link.string() +
                                      ", which does not exist or loops back on itself; fix or remove the link");
                continue;
            }
            if (!fs::is_regular_file(target, lec)) {
                add_problem(out, it->path(), {}, "a symbolic link to " + target.string() + ", which is not a file");
                continue;
            }
            if (!options.allow_insecure_plugins && target.parent_path() != fs::canonical(dir, lec)) {
                if (auto why = insecure_reason(target.parent_path(), true); !why.empty()) {
                    add_problem(out, it->path(), {}, "a symbolic link to " + target.string() + ": " + why);
                    continue;
                }
            }
            files.push_back(it->path());
        } else if (it->is_regular_file(lec)) {
            files.push_back(it->path());
        }
    }
    if (ec) add_problem(out, dir, {}, "cannot list the plugin folder: " + ec.message());
    std::sort(files.begin(), files.end());
    auto probes = probe_files(files, options);
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (probes[i].empty())
            load_file(files[i], options, out);
        else
            add_problem(out, files[i], {},
                        "refused: a probe process that loaded it first " + probes[i] +
                            " (a static constructor of the plugin, or of a library it uses, crashed, threw, aborted "
                            "or exited while loading); jobhost does not load it: fix the plugin and rebuild");
    }
    return out;
}

} // namespace jobhost::loader
