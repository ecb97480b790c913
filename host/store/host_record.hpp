// A host's record beside a store file: how a host proves it is alive and says which jobs it is running right now,
// in a form that survives `kill -9`.
//
// Each host process creates `<store>-hosts/<owner>` and holds an exclusive flock(2) on it for as long as it lives.
// The kernel drops that lock when the process dies, however it dies (a crash, `kill -9`, `exit()` from plugin code),
// so "can I take the lock" is a liveness test that a zombie or a recycled pid cannot fool. The file is mapped shared:
// the host writes the id of each job into a slot just before it calls the plugin, and clears the slot once the
// job's outcome is committed. The writes go to the page cache, which outlives the process; so after a crash the
// next host that takes the lock reads exactly which jobs were running (charge them an attempt) and which were only
// reserved ahead (give them back unchanged). A power loss can lose the file: then no job is charged for that crash.
//
// Marking costs a store into mapped memory (no system call, no I/O). Hosts that share a store must share a machine,
// as SQLite itself requires.
#pragma once

#include "common/error.hpp"
#include "store/job.hpp"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace jobhost::store {

// Slots held by one run, from HostRecord::mark; cleared by HostRecord::clear.
struct RunToken {
    std::vector<std::uint32_t> slots;
};

class HostRecord {
public:
    static constexpr std::uint32_t kSlots = 8192;

    // The folder of the host records of the store at `store_path`.
    static std::filesystem::path folder_of(const std::filesystem::path& store_path);

    // Creates and locks this host's record. The error names the file and says what to do.
    static core::Expected<std::unique_ptr<HostRecord>> create(const std::filesystem::path& folder,
                                                              const std::string& owner);
    // Drops the lock but keeps the file: what a crash leaves for the next host to read. retire() is the clean stop.
    ~HostRecord();
    // A clean stop: removes the record while still holding its lock, then drops the lock.
    void retire();
    HostRecord(const HostRecord&) = delete;
    HostRecord& operator=(const HostRecord&) = delete;

    // Marks jobs as running now. Thread-safe. If every slot is taken (more jobs running at once than kSlots), the
    // jobs beyond run unmarked and a crash gives them back uncharged; that is logged once.
    RunToken mark(std::span<const JobId> ids);
    // Clears what mark returned. Thread-safe.
    void clear(const RunToken& token);
    // The ids marked now.
    std::set<JobId> running() const;

    // What a dead (or stopped) owner's record says.
    struct Remains {
        std::set<JobId> running;
        std::string cause; // "killed by signal 11 (SIGSEGV)", "exit() was called from plugin code", or ""
    };
    enum class Liveness { alive, dead, unknown };
    // Whether `owner` is alive. When it is dead (its record is not locked) and `take` is set, returns its remains
    // and removes its record: the caller must then recover its jobs (recovery is idempotent, so two hosts racing
    // here do no harm). An owner without a record is dead, with nothing running.
    static Liveness inspect(const std::filesystem::path& folder, const std::string& owner, Remains* take);
    // The running set of a live or dead owner, read without locking (for display).
    static std::set<JobId> peek(const std::filesystem::path& folder, const std::string& owner);

    // Crash notes, written from a signal handler or an exit handler (async-signal-safe): what ended the process.
    void note_signal(int signo) noexcept;
    void note_exit() noexcept;

    // Removes records in `folder` whose hosts are gone (their lock is free), except `keep`. Call it only after their
    // jobs were recovered.
    static void sweep(const std::filesystem::path& folder, const std::string& keep);
    // The owners of every record in `folder` (live or not).
    static std::vector<std::string> owners(const std::filesystem::path& folder);

    // A lease owner that no other process, here or later, will use: "hostname:pid:random".
    static std::string make_owner();

    const std::string& owner() const noexcept { return owner_; }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    struct Header;
    HostRecord() = default;
    static std::filesystem::path file_of(const std::filesystem::path& folder, const std::string& owner);

    std::string owner_;
    std::filesystem::path path_;
    int fd_ = -1;
    void* map_ = nullptr;
    std::size_t map_size_ = 0;
    Header* header_ = nullptr;
    std::atomic<std::uint64_t>* slots_ = nullptr;

    mutable std::mutex mutex_; // guards free_
    std::vector<std::uint32_t> free_;
    bool warned_full_ = false;
};

// Installs handlers so that a fatal signal or an exit() that jobhost did not ask for, while armed, leaves a note in
// `record` (read by the next start; null: no record) and never looks like a clean exit: a plugin's exit(0) ends the
// process with code 70. Arm while plugin code may run; disarm before a deliberate exit. One record at a time.
void arm_crash_notes(HostRecord* record);
void disarm_crash_notes();

} // namespace jobhost::store
