// PostgreSQL engine benchmark, on a server of its own (initdb into a temporary folder, synchronous_commit left at
// PostgreSQL's default), each figure beside the bare limit measured in the same run:
//  1. drain: a backlog queued the way `jobhost enqueue --jsonl` does (1000 per transaction), then drained by a host
//     with 2 and with 50 slots (no-op jobs); timed until the plugin ran them all and then the store counts nothing
//     pending, and the plugin's run counter (taken as a difference) must agree. Before them, on each round's new
//     schema, a first drain with 2 slots, reported apart: that host creates its start mark sequences (the hosts
//     after it take them over as spares, as on any database where a host ran before);
//  2. the bare limit: a libpq loop on the same schema that claims 100 ready jobs with one
//     `UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING` and deletes them with one `DELETE ... = ANY`, each in its own
//     transaction, on 1 and on 2 connections (threads); the ratio is against the better of the two. Beside it, the
//     same loop on 2 connections that also marks each job started before its run the way a host does when its runs
//     start one at a time (a setval of the unlogged sequence of the jobs' line to the job's place in it, in a
//     transaction of its own, on a connection of its own, sent without waiting for the answer, the answers read every
//     64 jobs): the bare limit under the store contract;
//  3. bytes on disk per pending job (the jobs table with its indexes and TOAST, at the backlog's size);
//  4. for each drain, the CPU the whole machine spent per job (every process, from /proc/stat) and how busy its cores
//     were, and for the host's drains what its own process spent: what bounds a drain on a machine this small;
//  5. for the host's drains, how fast a host gets going on a backlog: its pace in its first 50 ms as a share of its
//     pace over the whole drain.
// Every drain, the host's and the bare loop's, starts from the same table: the backlog queued again and vacuumed.
//
//   bench_postgres [backlog, default 100000] [rounds, default 3] [--statements] [--only-slots N] [--prefetch N]
//
// --statements: the server loads pg_stat_statements, and each drain prints what the database did for it (statements
// by total time, with calls and rows per 1000 jobs, and the transactions that wrote; the statements that triggers run
// are listed too, and their time is also inside the statement that fired them): where a host's time goes.
// --only-slots N: only jobhost's drain with N slots, each round (to profile the host, e.g. under `perf record`), and
// what each of the server's processes spent during it (the host's writer, its marks, the WAL writer, ...).
// --prefetch N: the host reserves at most N jobs per type ahead (PostgresOptions::prefetch), to compare settings.
#include "bench_host.hpp"
#include "log/log.hpp"
#include "store/pg.hpp"
#include "store/postgres_store.hpp"
#include "support/pg_server.hpp"

#include <sys/resource.h>

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>

using namespace jobhost;
using namespace jobhost::bench;

namespace {

std::size_t prefetch_override = 0; // --prefetch N; 0: the store's default
std::unique_ptr<store::PostgresStore> open_store(const std::string& url, const std::string& schema, bool host) {
    store::PostgresOptions o;
    if (prefetch_override) o.prefetch = prefetch_override;
    o.url = url;
    o.schema = schema;
    o.host = host;
    auto s = store::PostgresStore::open(o);
    if (!s) throw std::runtime_error(s.error().message);
    return std::move(*s);
}

double fill(const std::string& url, const std::string& schema, std::size_t backlog) {
    auto cli = open_store(url, schema, false);
    std::vector<store::NewJob> jobs(1000);
    for (auto& j : jobs) j.type = "bench.00";
    auto start = Clock::now();
    for (std::size_t i = 0; i < backlog; i += jobs.size())
        cli->enqueue(std::span<const store::NewJob>(jobs).first(std::min(jobs.size(), backlog - i)));
    double rate = static_cast<double>(backlog) / std::chrono::duration<double>(Clock::now() - start).count();
    cli->close();
    return rate;
}

// Each drain starts from the same tables: the backlog queued again, and the dead rows of the drains before it vacuumed
// away (jobs, and the start marks, counts and hosts that the host's drains write). (Without it each drain walked over
// the dead index entries its predecessors left at the head of the ready index, as many as autovacuum happened to leave;
// the bare loops, which run last, paid the most: vacuuming first raised them from 67,200 to 81,400 jobs/s on 1
// connection and from 90,500 to 101,800 on 2, in runs an hour apart.)
void refill(const std::string& url, const std::string& schema, std::size_t backlog, test::PgServer& server) {
    fill(url, schema, backlog);
    server.psql("VACUUM ANALYZE " + schema + ".jobs, " + schema + ".running, " + schema + ".count_deltas, " + schema +
                ".hosts");
}

// With --statements: what the database did since the last call (top statements by time, and the transactions that
// wrote).
struct Statements {
    test::PgServer* server = nullptr; // null: off
    double xid_before = 0;
    // The next transaction id to be assigned: every transaction that writes takes one, so the difference counts the
    // drain's writing transactions (pg_stat_database.xact_commit lags: a live backend flushes its counts at most once
    // a second, and it showed 486 commits per 1000 jobs for a drain that ran 694 autocommitted marks per 1000).
    double next_xid() const { return std::stod(server->psql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")); }
    void reset() {
        if (!server) return;
        server->psql("SELECT pg_stat_statements_reset()");
        xid_before = next_xid();
    }
    void print(const char* what, std::size_t jobs) const {
        if (!server) return;
        double k = static_cast<double>(jobs) / 1000.0;
        std::printf("  what the database did for %s (per 1000 jobs):\n", what);
        std::printf("    %.1f transactions that wrote (transaction ids taken)\n", (next_xid() - xid_before) / k);
        // planning counted apart: a prepared statement planned again at each call (a custom plan) costs that too
        auto rows =
            server->psql("SELECT calls, round(total_exec_time::numeric, 1), rows, plans, "
                         "round(total_plan_time::numeric, 1), regexp_replace(left(query, 90), '\\s+', ' ', "
                         "'g') FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT 12");
        std::printf("    %8s %11s %9s %8s %8s\n", "calls", "executing", "rows", "plans", "planning");
        std::istringstream in(rows);
        for (std::string line; std::getline(in, line);) {
            std::istringstream f(line);
            std::string calls, ms, n, plans, plan_ms, query;
            std::getline(f, calls, '|');
            std::getline(f, ms, '|');
            std::getline(f, n, '|');
            std::getline(f, plans, '|');
            std::getline(f, plan_ms, '|');
            std::getline(f, query);
            std::printf("    %8.1f %8.1f ms %9.1f %8.1f %5.1f ms  %s\n", std::stod(calls) / k, std::stod(ms) / k,
                        std::stod(n) / k, std::stod(plans) / k, std::stod(plan_ms) / k, query.c_str());
        }
    }
};
Statements statements;

// What this process (the host: every thread) spent: CPU time, context switches and page faults, from getrusage.
struct Usage {
    double cpu_us = 0;
    double switches = 0;
    double faults = 0;
    static Usage now() {
        rusage u{};
        ::getrusage(RUSAGE_SELF, &u);
        auto us = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
        return {us(u.ru_utime) + us(u.ru_stime), static_cast<double>(u.ru_nvcsw + u.ru_nivcsw),
                static_cast<double>(u.ru_minflt + u.ru_majflt)};
    }
};
Usage host_cost; // per job, of the last drain
// The pace of a host's drain in its first 50 ms, as a share of its pace over the whole drain (of the last drain): how
// fast a host gets going on a backlog (it used to take 140 ms to reach full pace with 50 slots).
double start_share = 0;

// What each of the server's processes spent during a drain (--only-slots): CPU per job and the share of one core,
// by application_name for client backends (the host's writer "jobhost", its "jobhost marks", ...) and by backend type
// for the others (walwriter, ...): which of them bounds the drain. From /proc/<pid>/stat (clock ticks), read for every
// process named postgres when the drain starts (a scan of /proc: about a millisecond, while the host already runs)
// and named from pg_stat_activity once it ended.
struct ServerProcesses {
    std::map<int, double> before_us; // pid -> CPU
    std::map<std::string, double> spent_us;
    static double cpu_us(int pid, std::string* comm = nullptr) {
        std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto open = text.find('('), close = text.rfind(')'); // the command may hold spaces
        if (open == std::string::npos || close == std::string::npos) return -1;
        if (comm) *comm = text.substr(open + 1, close - open - 1);
        std::istringstream f(text.substr(close + 2));
        std::string field;
        double utime = 0, stime = 0;
        for (int i = 3; i <= 15 && f >> field; ++i) { // fields 14 and 15: utime, stime
            if (i == 14) utime = std::stod(field);
            if (i == 15) stime = std::stod(field);
        }
        return (utime + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }
    void start() {
        before_us.clear();
        for (const auto& e : std::filesystem::directory_iterator("/proc")) {
            auto name = e.path().filename().string();
            if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
            std::string comm;
            int pid = std::stoi(name);
            double us = cpu_us(pid, &comm);
            if (us >= 0 && comm == "postgres") before_us[pid] = us;
        }
    }
    void finish(test::PgServer& server) {
        spent_us.clear();
        std::istringstream in(server.psql("SELECT pid, CASE WHEN backend_type = 'client backend' THEN "
                                          "coalesce(nullif(application_name, ''), 'client') ELSE backend_type END "
                                          "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"));
        for (std::string line; std::getline(in, line);) {
            auto bar = line.find('|');
            if (bar == std::string::npos) continue;
            int pid = std::stoi(line.substr(0, bar));
            auto it = before_us.find(pid);
            double now = cpu_us(pid);
            if (it != before_us.end() && now >= 0) spent_us[line.substr(bar + 1)] += now - it->second;
        }
    }
    void print(std::size_t jobs, double secs) const {
        std::printf("  the server's processes per job:");
        for (const auto& [name, us] : spent_us)
            if (us > 0)
                std::printf(" %s %.1f us (%.0f %% of a core);", name.c_str(), us / static_cast<double>(jobs),
                            us / (secs * 1e6) * 100);
        std::printf("\n");
    }
};
ServerProcesses server_processes; // with --only-slots
test::PgServer* only_server = nullptr;

// What the whole machine spent (every process: the host, the server's backends, its WAL writer, the bench itself),
// from /proc/stat: the CPU a drain costs per job, and how busy the cores were. On a machine with few cores, CPU per job
// bounds a drain: with every core busy, it can start no more jobs a second than the cores' time divided by it.
struct Machine {
    double busy_us = 0;
    double total_us = 0;
    static Machine now() {
        std::ifstream in("/proc/stat");
        std::string cpu;
        double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
        in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
        double tick_us = 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
        double busy = user + nice + system + irq + softirq + steal;
        return {busy * tick_us, (busy + idle + iowait) * tick_us};
    }
};
struct MachineCost {
    double us_per_job = 0; // CPU of every process, per job
    double busy = 0;       // the share of all cores that was busy
};
MachineCost machine_since(const Machine& before, std::size_t jobs) {
    auto after = Machine::now();
    return {(after.busy_us - before.busy_us) / static_cast<double>(jobs),
            (after.busy_us - before.busy_us) / std::max(1.0, after.total_us - before.total_us)};
}
MachineCost machine_cost; // of the last drain, jobhost's or the bare loop's

double drain(const std::string& url, const std::string& schema, std::size_t backlog, std::size_t slots) {
    auto s = open_store(url, schema, true);
    statements.reset();
    double rate = 0;
    {
        HostSetup setup;
        setup.workers = slots;
        Host host(*s, setup);
        // each host loads a private copy of the plugin, so its run counter starts at 0 (reading it after the start
        // would miss the jobs run meanwhile)
        std::uint64_t before = 0;
        if (only_server) server_processes.start();
        auto usage = Usage::now();
        auto machine = Machine::now();
        auto start = Clock::now();
        // the plugin's counter first (an atomic), then the store until it counts nothing pending: asking the store
        // every few ms all along cost the database a tenth of its time (three statements a call)
        auto pending_now = [&] {
            std::size_t n = 0;
            for (const auto& [type, c] : s->counts()) n += c.pending();
            return n;
        };
        std::optional<std::pair<double, std::uint64_t>> first; // (seconds, runs) when 50 ms had passed
        for (int i = 1; host.runs() - before < backlog; ++i) { // (a lost run would stop it: then the check says so)
            std::this_thread::sleep_for(std::chrono::microseconds(500));
            if (auto t = Clock::now() - start; !first && t >= std::chrono::milliseconds(50))
                first.emplace(std::chrono::duration<double>(t).count(), host.runs() - before);
            if (i % 2000 == 0 && pending_now() == 0) break;
        }
        std::size_t pending = backlog;
        while ((pending = pending_now()) > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        double secs = std::chrono::duration<double>(Clock::now() - start).count();
        std::uint64_t ran = host.runs() - before;
        if (ran != backlog)
            throw std::runtime_error("drain: the store says " + std::to_string(backlog) +
                                     " jobs drained but the plugin ran " + std::to_string(ran));
        rate = static_cast<double>(backlog) / secs;
        start_share = first ? static_cast<double>(first->second) / first->first / rate : 1.0;
        machine_cost = machine_since(machine, backlog);
        auto after = Usage::now();
        host_cost = {(after.cpu_us - usage.cpu_us) / static_cast<double>(backlog),
                     (after.switches - usage.switches) / static_cast<double>(backlog),
                     (after.faults - usage.faults) / static_cast<double>(backlog)};
        if (only_server) server_processes.finish(*only_server); // (after the machine's figures: it starts psql)
    }
    statements.print(("a drain with " + std::to_string(slots) + " slots").c_str(), backlog);
    s->close();
    return rate;
}

// The bare limit on the same schema and backlog: claim 100, delete them, on `connections` threads. `marked`: each
// job is also marked started before its (empty) run on a second connection, as a host marks a run that starts alone
// (what makes a crash charge exactly the runs that started): BEGIN, setval of the thread's unlogged sequence (its
// line) to the job's place, COMMIT in a pipeline, sent without waiting, the answers read every 64 jobs and before the
// delete.
double bare_drain(const std::string& url, const std::string& schema, std::size_t backlog, int connections,
                  bool marked = false) {
    std::atomic<std::size_t> done{0};
    if (marked) { // (before the clock starts)
        auto c = store::pg::Connection::open(url);
        c->exec("DO $$ BEGIN FOR i IN 0 .. " + std::to_string(connections - 1) +
                " LOOP EXECUTE format('CREATE UNLOGGED SEQUENCE IF NOT EXISTS " + schema +
                ".bare_mark_%s MINVALUE 0 START 0', i); END LOOP; END $$");
    }
    statements.reset();
    auto machine = Machine::now();
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < connections; ++t)
        threads.emplace_back([&, t] {
            auto c = store::pg::Connection::open(url);
            auto m = store::pg::Connection::open(url);
            m->exec("SET synchronous_commit = off");
            const std::string mark = "SELECT setval($1::oid::regclass, $2::int8)";
            std::string line;
            std::int64_t place = 0;
            if (marked) {
                line = m->exec("SELECT '" + schema + ".bare_mark_" + std::to_string(t) + "'::regclass::oid").text(0, 0);
                for (const auto* sql : {"BEGIN", "COMMIT", mark.c_str()}) m->prepare(sql);
                m->enter_pipeline();
            }
            std::size_t unsynced = 0;
            const std::string claim =
                "WITH picked AS MATERIALIZED (SELECT id FROM " + schema +
                ".jobs WHERE type = 'bench.00' AND state = 1 ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE "
                "SKIP LOCKED) UPDATE " +
                schema +
                ".jobs j SET state = 2, lease_owner = 'bare' FROM picked WHERE j.id = picked.id RETURNING j.id";
            const std::string remove = "DELETE FROM " + schema + ".jobs WHERE id = ANY($1::int8[])";
            for (;;) {
                auto r = c->run(claim);
                if (r.rows() == 0) break;
                std::vector<std::int64_t> ids;
                for (int i = 0; i < r.rows(); ++i) ids.push_back(r.int64(i, 0));
                if (marked) {
                    for (std::size_t k = 0; k < ids.size(); ++k) {
                        m->send("BEGIN");
                        m->send(mark, store::pg::Params().add(line).add(++place));
                        m->send("COMMIT");
                        m->flush();
                        if (++unsynced == 64) {
                            m->sync();
                            unsynced = 0;
                        }
                    }
                    m->sync(); // (so that the delete finds every mark)
                    unsynced = 0;
                }
                c->run(remove, store::pg::Params().add(store::pg::int_array(ids)));
                done += ids.size();
            }
        });
    for (auto& t : threads) t.join();
    if (done != backlog)
        throw std::runtime_error("bare drain: " + std::to_string(done.load()) + " of " + std::to_string(backlog));
    double rate = static_cast<double>(backlog) / std::chrono::duration<double>(Clock::now() - start).count();
    machine_cost = machine_since(machine, backlog);
    statements.print(marked             ? "the bare loop marking each job, 2 connections"
                     : connections == 1 ? "the bare loop on 1 connection"
                                        : "the bare loop on 2 connections",
                     backlog);
    return rate;
}

} // namespace

int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    bool show = std::erase(args, "--statements") > 0;
    std::size_t only_slots = 0;
    if (auto it = std::find(args.begin(), args.end(), "--only-slots"); it != args.end()) {
        if (it + 1 == args.end()) throw std::runtime_error("--only-slots needs a number of slots");
        only_slots = std::stoul(*(it + 1));
        args.erase(it, it + 2);
    }
    if (auto it = std::find(args.begin(), args.end(), "--prefetch"); it != args.end()) {
        if (it + 1 == args.end()) throw std::runtime_error("--prefetch needs a number of jobs");
        prefetch_override = std::stoul(*(it + 1));
        args.erase(it, it + 2);
    }
    std::size_t backlog = args.size() > 0 ? std::stoul(args[0]) : 100000;
    int rounds = args.size() > 1 ? std::stoi(args[1]) : 3;
    log::configure({log::Level::error, log::Format::text, std::nullopt});
    test::PgServer server(show ? "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n"
                                 "pg_stat_statements.track_planning = on"
                               : "");
    if (show) {
        server.psql("CREATE EXTENSION pg_stat_statements");
        statements.server = &server;
    }
    auto url = server.url();
    if (only_slots > 0) only_server = &server;

    // Each drain's figures, one per round: jobs/s, the whole machine's CPU per job (us) and busy share, and for the
    // host's drains its own process's CPU per job.
    struct Series {
        std::vector<double> rate, cpu, busy, host, start;
        void add(double r, bool is_host = false) {
            rate.push_back(r);
            cpu.push_back(machine_cost.us_per_job);
            busy.push_back(machine_cost.busy);
            if (!is_host) return;
            host.push_back(host_cost.cpu_us);
            start.push_back(start_share);
        }
    };
    std::vector<double> fills;
    Series cold, two, fifty, bare1, bare2, marked;
    double bytes_per_job = 0;
    for (int i = 0; i < rounds; ++i) {
        std::string schema = "bench_" + std::to_string(i);
        fills.push_back(fill(url, schema, backlog));
        // the table as a backlog of this size leaves it: heap, indexes and TOAST
        server.psql("VACUUM ANALYZE " + schema + ".jobs");
        bytes_per_job = std::stod(server.psql("SELECT pg_total_relation_size('" + schema + ".jobs')")) /
                        static_cast<double>(backlog);
        // The first host on a new schema creates its start mark sequences as it needs them (about 0.35 ms of the
        // server's time each, up to 2048 in a drain): a drain of its own, before the ones compared, after which they
        // are spares that the next hosts take (as on any database that ran a host before).
        cold.add(drain(url, schema, backlog, 2), true);
        refill(url, schema, backlog, server);
        if (only_slots > 0) {
            double rate = drain(url, schema, backlog, only_slots);
            std::printf(
                "round %d: jobhost %zu slots %.0f jobs/s; the host per job: %.1f us of CPU, %.2f context switches, "
                "%.3f page faults; the whole machine per job: %.1f us of CPU (%.0f %% busy); its first 50 ms at %.2f "
                "of its pace\n",
                i + 1, only_slots, rate, host_cost.cpu_us, host_cost.switches, host_cost.faults,
                machine_cost.us_per_job, machine_cost.busy * 100, start_share);
            server_processes.print(backlog, static_cast<double>(backlog) / rate); // the drain's seconds
            continue;
        }
        two.add(drain(url, schema, backlog, 2), true);
        refill(url, schema, backlog, server);
        fifty.add(drain(url, schema, backlog, 50), true);
        refill(url, schema, backlog, server);
        bare1.add(bare_drain(url, schema, backlog, 1));
        refill(url, schema, backlog, server);
        bare2.add(bare_drain(url, schema, backlog, 2));
        refill(url, schema, backlog, server);
        marked.add(bare_drain(url, schema, backlog, 2, true));
        std::printf("round %d: enqueue %.0f/s, jobhost 2 slots on the new schema %.0f/s, then 2 slots %.0f/s, 50 slots "
                    "%.0f/s, bare 1 connection %.0f/s, 2 connections %.0f/s, marking each job %.0f/s\n",
                    i + 1, fills.back(), cold.rate.back(), two.rate.back(), fifty.rate.back(), bare1.rate.back(),
                    bare2.rate.back(), marked.rate.back());
    }
    if (only_slots > 0) return 0;
    double bare = std::max(median(bare1.rate), median(bare2.rate));
    std::printf("\nPostgreSQL, %zu no-op jobs queued before the host starts, medians of %d rounds:\n", backlog, rounds);
    std::printf("  enqueue (by 1000, as --jsonl)      %9.0f jobs/s\n", median(fills));
    std::printf("  jobhost drain, 2 slots              %9.0f jobs/s   %.2f x bare\n", median(two.rate),
                median(two.rate) / bare);
    std::printf("  jobhost drain, 50 slots             %9.0f jobs/s   %.2f x bare\n", median(fifty.rate),
                median(fifty.rate) / bare);
    std::printf("  jobhost drain, 2 slots, the first host on a new schema (it creates its start mark sequences) %.0f "
                "jobs/s   %.2f x bare\n",
                median(cold.rate), median(cold.rate) / bare);
    std::printf("  bare libpq claim 100 + delete, 1 conn %7.0f jobs/s\n", median(bare1.rate));
    std::printf("  bare libpq claim 100 + delete, 2 conns %6.0f jobs/s\n", median(bare2.rate));
    std::printf("  bare, and a start mark per job, 2 conns %5.0f jobs/s   (jobhost 2 slots: %.2f x this)\n",
                median(marked.rate), median(two.rate) / median(marked.rate));
    std::printf("  on disk per pending job             %9.0f bytes (table, indexes, TOAST)\n", bytes_per_job);
    // What each drain cost the whole machine: with every core busy, jobs/s can be no more than the cores' time
    // divided by the CPU a job costs.
    const double cores = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("  CPU of the whole machine per job (%.0f cores), medians; and the most that CPU allows:\n", cores);
    auto cpu_line = [&](const char* what, const Series& d) {
        std::printf("    %-34s %6.1f us, cores %3.0f %% busy; at most %7.0f jobs/s", what, median(d.cpu),
                    median(d.busy) * 100, cores * 1e6 / median(d.cpu));
        if (!d.host.empty()) std::printf("   (the host's process: %.1f us)", median(d.host));
        std::printf("\n");
    };
    cpu_line("jobhost drain, 2 slots", two);
    cpu_line("jobhost drain, 50 slots", fifty);
    cpu_line("jobhost, 2 slots, on a new schema", cold);
    cpu_line("bare loop, 1 connection", bare1);
    cpu_line("bare loop, 2 connections", bare2);
    cpu_line("bare loop marking each job", marked);
    // The machine is noisy: the bare loop moves between rounds, so each round's drains are also compared with the
    // bare loop of that same round.
    auto paired = [&](const std::vector<double>& host, const char* what) {
        std::vector<double> ratios;
        std::string each;
        for (std::size_t i = 0; i < host.size(); ++i) {
            ratios.push_back(host[i] / std::max(bare1.rate[i], bare2.rate[i]));
            char buf[16];
            std::snprintf(buf, sizeof buf, "%s%.2f", i ? ", " : "", ratios.back());
            each += buf;
        }
        std::printf("  %s / bare of the same round: median %.2f (%s)\n", what, median(ratios), each.c_str());
    };
    std::printf("  a host's drain in its first 50 ms, against its pace over the whole drain (medians): 2 slots %.2f, "
                "50 slots %.2f\n",
                median(two.start), median(fifty.start));
    paired(two.rate, "jobhost 2 slots ");
    paired(fifty.rate, "jobhost 50 slots");
    return 0;
}

int main(int argc, char** argv) {
    try { // so that the server is stopped whatever happens
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_postgres: %s\n", e.what());
        return 1;
    }
}
