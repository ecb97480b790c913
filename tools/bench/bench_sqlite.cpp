// SQLite engine benchmark: no-op jobs end to end (enqueue by 100, claim, execute, ack) with 2 workers, beside the
// bare limit measured in the same run: the same inserts, claims and deletes done directly through SQLite, 100 per
// transaction, on the same schema with the same settings (WAL, synchronous=NORMAL). Then the file size and the
// process's memory with a backlog of pending jobs.
//
//   bench_sqlite [jobs per round, default 100000] [rounds, default 3] [backlog, default 1000000]
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
    return p;
}

std::size_t rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
    return 0;
}

std::unique_ptr<store::SqliteStore> open_store(const fs::path& path) {
    store::SqliteOptions o;
    o.path = path;
    o.owner = "bench:" + std::to_string(::getpid());
    auto s = store::SqliteStore::open(o);
    if (!s) {
        std::fprintf(stderr, "%s\n", s.error().message.c_str());
        std::exit(1);
    }
    return std::move(*s);
}

// The bare limit: per 100 jobs, one transaction of inserts, one claiming them, one deleting them.
double bare_sqlite_rate(std::size_t n) {
    auto path = scratch("bare.db");
    open_store(path); // the same schema
    store::sqlite::Connection db(path.string(), SQLITE_OPEN_READWRITE);
    db.exec("PRAGMA journal_mode=WAL");
    db.exec("PRAGMA synchronous=NORMAL");
    auto insert = db.prepare("INSERT INTO jobs (type, payload, priority, max_attempts, state, run_at, created_at) "
                             "VALUES ('bench.00', 'null', 1, 1, 1, ?, ?)");
    auto claim = db.prepare("UPDATE jobs SET state = 2, attempt = attempt + 1, lease_owner = 'bare', "
                            "lease_expiry = ?, started_at = ? WHERE id IN (SELECT id FROM jobs WHERE type = "
                            "'bench.00' AND state = 1 AND run_at <= ? ORDER BY priority DESC, run_at, id LIMIT 100) "
                            "RETURNING id, payload");
    auto remove = db.prepare("DELETE FROM jobs WHERE id = ?");
    std::vector<std::int64_t> ids;
    auto start = Clock::now();
    for (std::size_t done = 0; done < n; done += 100) {
        auto now =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        db.exec("BEGIN");
        for (int i = 0; i < 100; ++i) insert.bind(1, now).bind(2, now).run();
        db.exec("COMMIT");
        db.exec("BEGIN");
        claim.bind(1, now + 300000).bind(2, now).bind(3, now);
        ids.clear();
        while (claim.step()) ids.push_back(claim.int64(0));
        claim.reset();
        db.exec("COMMIT");
        db.exec("BEGIN");
        for (auto id : ids) remove.bind(1, id).run();
        db.exec("COMMIT");
    }
    return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
}

double jobhost_sqlite_rate(std::size_t n) {
    auto s = open_store(scratch("jobhost.db"));
    Host host(*s);
    double rate = host.run_jobs(n, 1, 100);
    return rate;
}

} // namespace

int main(int argc, char** argv) {
    std::size_t n = argc > 1 ? std::stoul(argv[1]) : 100000;
    int rounds = argc > 2 ? std::stoi(argv[2]) : 3;
    std::size_t backlog = argc > 3 ? std::stoul(argv[3]) : 1000000;
    log::configure({log::Level::error, log::Format::text, std::nullopt});

    std::vector<double> bare, ours;
    for (int i = 0; i < rounds; ++i) {
        bare.push_back(bare_sqlite_rate(n));
        ours.push_back(jobhost_sqlite_rate(n));
    }
    std::printf("sqlite benchmark: %zu no-op jobs per round, %d rounds, 2 workers, WAL, synchronous=NORMAL (medians)\n",
                n, rounds);
    std::printf("%-52s %12s %12s %7s\n", "measure", "jobhost", "bare sqlite", "ratio");
    std::printf("%-52s %12.0f %12.0f %7.3f\n", "end to end, enqueue by 100 (jobs/s)", median(ours), median(bare),
                median(ours) / median(bare));
    std::printf("bare limit: per 100 jobs, one transaction each of 100 inserts, one claim of 100, 100 deletes\n");

    // Backlog: the memory of a host whose store holds `backlog` pending jobs.
    auto path = scratch("backlog.db");
    std::size_t rss_start = rss_kib();
    {
        auto s = open_store(path);
        std::vector<store::NewJob> jobs(1000);
        for (auto& j : jobs) j.type = "bench.00";
        auto start = Clock::now();
        for (std::size_t i = 0; i < backlog; i += jobs.size()) s->enqueue(jobs);
        double secs = std::chrono::duration<double>(Clock::now() - start).count();
        std::size_t rss_queued = rss_kib();
        Host host(*s); // starts claiming from the backlog
        std::this_thread::sleep_for(std::chrono::seconds(2));
        std::size_t rss_running = rss_kib();
        std::uint64_t ran = host.runs();
        host.ex->shutdown(std::chrono::seconds(5));
        s->flush();
        std::printf("backlog of %zu jobs: enqueued in %.1fs (%.0f jobs/s, 1000 per transaction), file %.1f MiB\n",
                    backlog, secs, static_cast<double>(backlog) / secs,
                    static_cast<double>(fs::file_size(path)) / (1024.0 * 1024.0));
        std::printf("host memory (RSS): %.1f MiB at start, %.1f MiB with the backlog queued, %.1f MiB after "
                    "running %llu of them for 2s\n",
                    static_cast<double>(rss_start) / 1024.0, static_cast<double>(rss_queued) / 1024.0,
                    static_cast<double>(rss_running) / 1024.0, static_cast<unsigned long long>(ran));
    }
    fs::remove_all(path.parent_path());
    return 0;
}
