#include "store/host_record.hpp"

#include "log/log.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <random>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace jobhost::store {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMagic = 0x314452484a424f4aULL; // "JOBJHRD1"
constexpr int kNoteNone = 0, kNoteExit = -1;

std::string errno_text(int e) {
    return std::strerror(e);
}

const char* signal_name(int signo) {
    switch (signo) {
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL";
    default: return "";
    }
}

} // namespace

struct HostRecord::Header {
    std::uint64_t magic;
    std::uint32_t slots;
    std::atomic<std::int32_t> note; // 0: nothing; > 0: a fatal signal; -1: exit() from plugin code
    char owner[240];
};

namespace {
constexpr std::size_t kHeaderSize = 4096;
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && std::atomic<std::uint64_t>::is_always_lock_free);

struct Mapping {
    void* base = nullptr;
    std::size_t size = 0;
    ~Mapping() {
        if (base) ::munmap(base, size);
    }
};

// Reads the running set from a mapped record; empty when the file is not a host record.
std::set<JobId> read_running(int fd, std::string* cause) {
    std::set<JobId> out;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(kHeaderSize)) return out;
    Mapping m;
    m.size = static_cast<std::size_t>(st.st_size);
    m.base = ::mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd, 0);
    if (m.base == MAP_FAILED) {
        m.base = nullptr;
        return out;
    }
    const auto* magic = static_cast<const std::uint64_t*>(m.base);
    const auto* slots_count = reinterpret_cast<const std::uint32_t*>(static_cast<const char*>(m.base) + 8);
    const auto* note = reinterpret_cast<const std::int32_t*>(static_cast<const char*>(m.base) + 12);
    if (*magic != kMagic) return out;
    std::size_t n = std::min<std::size_t>(*slots_count, (m.size - kHeaderSize) / 8);
    const auto* slots = reinterpret_cast<const std::uint64_t*>(static_cast<const char*>(m.base) + kHeaderSize);
    for (std::size_t i = 0; i < n; ++i)
        if (slots[i] != 0) out.insert(slots[i]);
    if (cause) {
        int v = *note;
        if (v > 0) {
            *cause = "killed by signal " + std::to_string(v);
            if (*signal_name(v)) *cause += std::string(" (") + signal_name(v) + ")";
        } else if (v == kNoteExit) {
            *cause = "exit() was called from plugin code";
        }
    }
    return out;
}

} // namespace

fs::path HostRecord::folder_of(const fs::path& store_path) {
    return fs::path(store_path.string() + "-hosts");
}

fs::path HostRecord::file_of(const fs::path& folder, const std::string& owner) {
    std::string name = owner;
    for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
    return folder / (name + ".host");
}

std::string HostRecord::make_owner() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    std::random_device rd;
    std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    char suffix[17];
    std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(r));
    return std::string(name) + ":" + std::to_string(::getpid()) + ":" + std::string(suffix, 8);
}

core::Expected<std::unique_ptr<HostRecord>> HostRecord::create(const fs::path& folder, const std::string& owner) {
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec)
        return core::Error{"cannot create the host records folder " + folder.string() + ": " + ec.message() +
                           "; check that the store's folder is writable"};
    std::unique_ptr<HostRecord> r(new HostRecord());
    r->owner_ = owner;
    r->path_ = file_of(folder, owner);
    // Created and locked under a temporary name, then renamed into place, so that no sweep sees it unlocked.
    auto tmp = r->path_;
    tmp += ".tmp";
    r->fd_ = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (r->fd_ < 0)
        return core::Error{"cannot create the host record " + r->path_.string() + ": " + errno_text(errno) +
                           "; check that the store's folder is writable"};
    if (::flock(r->fd_, LOCK_EX | LOCK_NB) != 0)
        return core::Error{"cannot lock the host record " + r->path_.string() + ": " + errno_text(errno)};
    r->map_size_ = kHeaderSize + std::size_t{kSlots} * 8;
    if (::ftruncate(r->fd_, static_cast<off_t>(r->map_size_)) != 0)
        return core::Error{"cannot size the host record " + r->path_.string() + ": " + errno_text(errno)};
    r->map_ = ::mmap(nullptr, r->map_size_, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd_, 0);
    if (r->map_ == MAP_FAILED) {
        r->map_ = nullptr;
        return core::Error{"cannot map the host record " + r->path_.string() + ": " + errno_text(errno)};
    }
    r->header_ = new (r->map_) Header{};
    r->header_->magic = kMagic;
    r->header_->slots = kSlots;
    r->header_->note.store(kNoteNone);
    std::strncpy(r->header_->owner, owner.c_str(), sizeof r->header_->owner - 1);
    r->slots_ = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<char*>(r->map_) + kHeaderSize);
    if (::rename(tmp.c_str(), r->path_.c_str()) != 0)
        return core::Error{"cannot create the host record " + r->path_.string() + ": " + errno_text(errno)};
    r->free_.reserve(kSlots);
    for (std::uint32_t i = kSlots; i-- > 0;) r->free_.push_back(i);
    return r;
}

namespace {
std::atomic<HostRecord*> g_record{nullptr};
} // namespace

HostRecord::~HostRecord() {
    HostRecord* self = this;
    g_record.compare_exchange_strong(self, nullptr);
    if (map_) ::munmap(map_, map_size_);
    if (fd_ >= 0) ::close(fd_);
}

void HostRecord::retire() {
    HostRecord* self = this;
    g_record.compare_exchange_strong(self, nullptr);
    if (fd_ < 0) return;
    std::error_code ec;
    fs::remove(path_, ec); // while still locked: nobody mistakes a live host for a dead one
    if (map_) ::munmap(map_, map_size_);
    map_ = nullptr;
    header_ = nullptr;
    ::close(fd_);
    fd_ = -1;
}

std::vector<std::string> HostRecord::owners(const fs::path& folder) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(folder, ec)) {
        if (e.path().extension() != ".host") continue;
        int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        char h[sizeof(Header)] = {};
        std::uint64_t magic = 0;
        if (::pread(fd, h, sizeof h, 0) == static_cast<ssize_t>(sizeof h)) {
            std::memcpy(&magic, h, sizeof magic);
            h[sizeof h - 1] = 0;
            if (magic == kMagic) out.emplace_back(h + offsetof(Header, owner));
        }
        ::close(fd);
    }
    return out;
}

void HostRecord::sweep(const fs::path& folder, const std::string& keep) {
    for (const auto& owner : owners(folder))
        if (owner != keep) inspect(folder, owner, nullptr);
}

RunToken HostRecord::mark(std::span<const JobId> ids) {
    RunToken t;
    t.slots.reserve(ids.size());
    {
        std::lock_guard lock(mutex_);
        std::size_t n = std::min(ids.size(), free_.size());
        for (std::size_t i = 0; i < n; ++i) {
            t.slots.push_back(free_.back());
            free_.pop_back();
        }
        if (n < ids.size() && !warned_full_) {
            warned_full_ = true;
            log::write(log::Level::warning, "store",
                       "more than " + std::to_string(kSlots) +
                           " jobs run at once; the ones beyond are not marked as running, so a crash now would give "
                           "them back without charging an attempt");
        }
    }
    for (std::size_t i = 0; i < t.slots.size(); ++i) slots_[t.slots[i]].store(ids[i], std::memory_order_release);
    return t;
}

void HostRecord::clear(const RunToken& token) {
    for (auto s : token.slots) slots_[s].store(0, std::memory_order_release);
    std::lock_guard lock(mutex_);
    free_.insert(free_.end(), token.slots.begin(), token.slots.end());
}

std::set<JobId> HostRecord::running() const {
    std::set<JobId> out;
    for (std::uint32_t i = 0; i < kSlots; ++i)
        if (auto v = slots_[i].load(std::memory_order_acquire)) out.insert(v);
    return out;
}

HostRecord::Liveness HostRecord::inspect(const fs::path& folder, const std::string& owner, Remains* take) {
    auto path = file_of(folder, owner);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? Liveness::dead : Liveness::unknown;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        ::close(fd);
        return e == EWOULDBLOCK ? Liveness::alive : Liveness::unknown;
    }
    if (take) take->running = read_running(fd, &take->cause);
    std::error_code ec;
    fs::remove(path, ec); // while locked: whoever looks next finds no record, which also means dead
    ::close(fd);
    return Liveness::dead;
}

std::set<JobId> HostRecord::peek(const fs::path& folder, const std::string& owner) {
    int fd = ::open(file_of(folder, owner).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    auto out = read_running(fd, nullptr);
    ::close(fd);
    return out;
}

void HostRecord::note_signal(int signo) noexcept {
    if (header_) header_->note.store(signo, std::memory_order_relaxed);
}

void HostRecord::note_exit() noexcept {
    if (header_) header_->note.store(kNoteExit, std::memory_order_relaxed);
}

namespace {

std::atomic<bool> g_handlers_installed{false};
std::atomic<bool> g_armed{false};
std::atomic<pid_t> g_armed_pid{0}; // a forked child (a plugin probe) inherits the handlers but must not write notes

void on_fatal_signal(int signo) {
    if (auto* r = g_record.load(); r && ::getpid() == g_armed_pid.load()) r->note_signal(signo);
    // SA_RESETHAND restored the default action: raising again ends the process with this signal and its core.
    ::raise(signo);
}

void on_exit() {
    if (!g_armed.load() || ::getpid() != g_armed_pid.load()) return;
    if (HostRecord* r = g_record.load()) r->note_exit();
    static const char msg[] = "jobhost: exit() was called while the host was running (plugin code?); this is not a "
                              "clean stop: the jobs that were running are charged an attempt at the next start\n";
    [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
    ::_exit(70);
}

} // namespace

void arm_crash_notes(HostRecord* record) {
    g_record.store(record);
    g_armed_pid.store(::getpid());
    g_armed.store(true);
    if (g_handlers_installed.exchange(true)) return;
    struct sigaction sa {};
    sa.sa_handler = &on_fatal_signal;
    sa.sa_flags = static_cast<int>(SA_RESETHAND | SA_NODEFER);
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) ::sigaction(s, &sa, nullptr);
    std::atexit(&on_exit);
}

void disarm_crash_notes() {
    g_armed.store(false);
    g_record.store(nullptr);
}

} // namespace jobhost::store
