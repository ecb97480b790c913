// SQLite engine benchmark, each figure beside the bare limit measured in the same run:
//  1. end to end: no-op jobs enqueued by 100, claimed, run and acknowledged with 2 workers, beside the same
//     inserts, claims and deletes done directly through SQLite, 100 per transaction, on the same schema;
//  2. drain: a backlog queued before the host starts (as `jobhost enqueue --jsonl` does, 1000 per transaction),
//     then drained, at 20,000 and at 1,000,000 jobs waiting; beside a bare loop that claims and deletes 100 per
//     transaction from a backlog of the same size. The drain is timed by the store itself: it ends when the store
//     counts no pending job, and the plugin's run counter (taken as a difference) must agree;
//  3. memory: the process's RSS with the large backlog queued and while it drains.
//
//   bench_sqlite [jobs per round, default 100000] [rounds, default 3] [large backlog, default 1000000]
#include "bench_host.hpp"
#include "log/log.hpp"
#include "store/sqlite.hpp"
#include "store/sqlite_store.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace jobhost;
using namespace jobhost::bench;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
    auto dir = fs::temp_directory_path() / ("jobhost-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    auto p = dir / name;
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(p.string() + suffix);
    fs::remove_all(p.string() + "-hosts");
    return p;
}

std::size_t rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
    return 0;
}

std::unique_ptr<store::SqliteStore> open_store(const fs::path& path, bool host = true) {
    store::SqliteOptions o;
    o.path = path;
    o.host = host;
    auto s = store::SqliteStore::open(o);
    if (!s) {
        std::fprintf(stderr, "%s\n", s.error().message.c_str());
        std::exit(1);
    }
    return std::move(*s);
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A bare connection on a file with jobhost's schema, for the limits.
struct Bare {
    store::sqlite::Connection db;
    store::sqlite::Statement insert, claim, remove;
    explicit Bare(const fs::path& path)
        : db((open_store(path, false)->close(), path.string()), SQLITE_OPEN_READWRITE) { // the same schema
        db.exec("PRAGMA journal_mode=WAL");
        db.exec("PRAGMA synchronous=NORMAL");
        db.exec("PRAGMA temp_store=MEMORY"); // as the engine has it: a RETURNING's rows in memory, not a file
        insert = db.prepare("INSERT INTO jobs (type, payload, priority, max_attempts, state, run_at, created_at) "
                            "VALUES ('bench.00', 'null', 1, 1, 1, ?, ?)");
        claim = db.prepare("UPDATE jobs SET state = 2, lease_owner = 'bare', lease_expiry = ? WHERE id IN (SELECT id "
                           "FROM jobs WHERE type = 'bench.00' AND state = 1 ORDER BY priority DESC, run_at, id LIMIT "
                           "100) RETURNING id, payload");
        remove = db.prepare("DELETE FROM jobs WHERE id = ?");
    }
    void fill(std::size_t n) {
        for (std::size_t done = 0; done < n; done += 1000) {
            db.exec("BEGIN");
            for (std::size_t i = 0; i < 1000 && done + i < n; ++i) insert.bind(1, now_ms()).bind(2, now_ms()).run();
            db.exec("COMMIT");
        }
    }
    // Claims and deletes 100 per transaction; returns how many.
    std::size_t drain_100() {
        std::vector<std::int64_t> ids;
        db.exec("BEGIN");
        claim.bind(1, now_ms() + 30000);
        while (claim.step()) ids.push_back(claim.int64(0));
        claim.reset();
        db.exec("COMMIT");
        db.exec("BEGIN");
        for (auto id : ids) remove.bind(1, id).run();
        db.exec("COMMIT");
        return ids.size();
    }
};

// The bare limit end to end: per 100 jobs, one transaction of inserts, one claiming them, one deleting them.
double bare_end_to_end(std::size_t n) {
    Bare b(scratch("bare.db"));
    auto start = Clock::now();
    for (std::size_t done = 0; done < n; done += 100) {
        b.db.exec("BEGIN");
        for (int i = 0; i < 100; ++i) b.insert.bind(1, now_ms()).bind(2, now_ms()).run();
        b.db.exec("COMMIT");
        b.drain_100();
    }
    return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
}

double jobhost_end_to_end(std::size_t n) {
    auto s = open_store(scratch("jobhost.db"));
    double rate;
    {
        Host host(*s);
        rate = host.run_jobs(n, 1, 100);
    }
    s->close();
    return rate;
}

double bare_drain(std::size_t backlog) {
    Bare b(scratch("bare-drain.db"));
    b.fill(backlog);
    auto start = Clock::now();
    std::size_t done = 0;
    while (done < backlog) done += b.drain_100();
    return static_cast<double>(backlog) / std::chrono::duration<double>(Clock::now() - start).count();
}

struct Drain {
    double fill_rate = 0, drain_rate = 0;
    std::size_t rss_queued = 0, rss_draining = 0;
    double file_mib = 0;
};

// Queues `backlog` jobs the way `jobhost enqueue --jsonl` does (a command-line store, 1000 per transaction), then
// starts a host and times the drain until the store counts nothing pending.
Drain jobhost_drain(std::size_t backlog) {
    Drain d;
    auto path = scratch("drain.db");
    {
        auto cli = open_store(path, false);
        std::vector<store::NewJob> jobs(1000);
        for (auto& j : jobs) j.type = "bench.00";
        auto start = Clock::now();
        for (std::size_t i = 0; i < backlog; i += jobs.size())
            cli->enqueue(std::span<const store::NewJob>(jobs).first(std::min(jobs.size(), backlog - i)));
        d.fill_rate = static_cast<double>(backlog) / std::chrono::duration<double>(Clock::now() - start).count();
        cli->close();
    }
    d.file_mib = static_cast<double>(fs::file_size(path)) / (1024.0 * 1024.0);
    auto s = open_store(path);
    d.rss_queued = rss_kib();
    {
        Host host(*s);
        std::uint64_t before = host.runs();
        auto start = Clock::now();
        std::size_t pending = backlog;
        while (pending > 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(pending > 100000 ? 100 : 5));
            if (d.rss_draining == 0 && host.runs() - before > backlog / 2) d.rss_draining = rss_kib();
            pending = 0;
            for (const auto& [type, c] : s->counts()) pending += c.pending();
        }
        double secs = std::chrono::duration<double>(Clock::now() - start).count();
        std::uint64_t ran = host.runs() - before;
        if (ran != backlog) {
            std::fprintf(stderr, "drain: the store says %zu jobs drained but the plugin ran %llu\n", backlog,
                         static_cast<unsigned long long>(ran));
            std::exit(1);
        }
        d.drain_rate = static_cast<double>(backlog) / secs;
    }
    s->close();
    return d;
}

} // namespace

int main(int argc, char** argv) {
    std::size_t n = argc > 1 ? std::stoul(argv[1]) : 100000;
    int rounds = argc > 2 ? std::stoi(argv[2]) : 3;
    std::size_t large = argc > 3 ? std::stoul(argv[3]) : 1000000;
    const std::size_t small = 20000;
    log::configure({log::Level::error, log::Format::text, std::nullopt});

    std::vector<double> bare, ours;
    for (int i = 0; i < rounds; ++i) {
        bare.push_back(bare_end_to_end(n));
        ours.push_back(jobhost_end_to_end(n));
    }
    std::vector<double> small_drain, small_bare;
    Drain last_small;
    for (int i = 0; i < rounds; ++i) {
        last_small = jobhost_drain(small);
        small_drain.push_back(last_small.drain_rate);
        small_bare.push_back(bare_drain(small));
    }
    std::size_t rss_start = rss_kib();
    Drain big = jobhost_drain(large);
    double big_bare = bare_drain(large);

    std::printf("sqlite benchmark: 2 workers, no-op jobs, WAL, synchronous=NORMAL; medians of %d rounds where rounds\n",
                rounds);
    std::printf("%-58s %12s %12s %7s\n", "measure", "jobhost", "bare sqlite", "ratio");
    std::printf("%-58s %12.0f %12.0f %7.3f\n", "end to end, enqueue by 100 (jobs/s)", median(ours), median(bare),
                median(ours) / median(bare));
    std::printf("%-58s %12.0f %12.0f %7.3f\n", ("drain, " + std::to_string(small) + " waiting (jobs/s)").c_str(),
                median(small_drain), median(small_bare), median(small_drain) / median(small_bare));
    std::printf("%-58s %12.0f %12.0f %7.3f\n", ("drain, " + std::to_string(large) + " waiting (jobs/s, 1 run)").c_str(),
                big.drain_rate, big_bare, big.drain_rate / big_bare);
    std::printf("%-58s %12.3f %12.3f\n", "drain rate, large backlog / small backlog",
                big.drain_rate / median(small_drain), big_bare / median(small_bare));
    std::printf("bare limits: per 100 jobs one transaction of inserts, one claim, one of deletes; the bare drain\n"
                "claims and deletes 100 per transaction from a backlog of the same size\n");
    std::printf("backlog of %zu: queued at %.0f jobs/s (1000 per transaction), file %.1f MiB\n", large, big.fill_rate,
                big.file_mib);
    std::printf("host memory (RSS): %.1f MiB before, %.1f MiB with the backlog queued, %.1f MiB half way through "
                "the drain\n",
                static_cast<double>(rss_start) / 1024.0, static_cast<double>(big.rss_queued) / 1024.0,
                static_cast<double>(big.rss_draining) / 1024.0);
    fs::remove_all(scratch("x").parent_path());
    return 0;
}
