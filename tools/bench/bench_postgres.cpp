// PostgreSQL engine benchmark, on a server of its own (initdb into a temporary folder, synchronous_commit left at
// PostgreSQL's default), each figure beside the bare limit measured in the same run:
//  1. drain: a backlog queued the way `jobhost enqueue --jsonl` does (1000 per transaction), then drained by a host
//     with 2 and with 50 slots (no-op jobs); timed until the store counts nothing pending, and the plugin's run
//     counter (taken as a difference) must agree;
//  2. the bare limit: a libpq loop on the same schema that claims 100 ready jobs with one
//     `UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING` and deletes them with one `DELETE ... = ANY`, each in its own
//     transaction, on 1 and on 2 connections (threads); the ratio is against the better of the two;
//  3. bytes on disk per pending job (the jobs table with its indexes and TOAST, at the backlog's size).
//
//   bench_postgres [backlog, default 100000] [rounds, default 3]
#include "bench_host.hpp"
#include "log/log.hpp"
#include "store/pg.hpp"
#include "store/postgres_store.hpp"
#include "support/pg_server.hpp"

#include <atomic>

using namespace jobhost;
using namespace jobhost::bench;

namespace {

std::unique_ptr<store::PostgresStore> open_store(const std::string& url, const std::string& schema, bool host) {
    store::PostgresOptions o;
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

double drain(const std::string& url, const std::string& schema, std::size_t backlog, std::size_t slots) {
    auto s = open_store(url, schema, true);
    double rate = 0;
    {
        HostSetup setup;
        setup.workers = slots;
        Host host(*s, setup);
        // each host loads a private copy of the plugin, so its run counter starts at 0 (reading it after the start
        // would miss the jobs run meanwhile)
        std::uint64_t before = 0;
        auto start = Clock::now();
        std::size_t pending = backlog;
        while (pending > 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            pending = 0;
            for (const auto& [type, c] : s->counts()) pending += c.pending();
        }
        double secs = std::chrono::duration<double>(Clock::now() - start).count();
        std::uint64_t ran = host.runs() - before;
        if (ran != backlog)
            throw std::runtime_error("drain: the store says " + std::to_string(backlog) +
                                     " jobs drained but the plugin ran " + std::to_string(ran));
        rate = static_cast<double>(backlog) / secs;
    }
    s->close();
    return rate;
}

// The bare limit on the same schema and backlog: claim 100, delete them, on `connections` threads.
double bare_drain(const std::string& url, const std::string& schema, std::size_t backlog, int connections) {
    std::atomic<std::size_t> done{0};
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < connections; ++t)
        threads.emplace_back([&] {
            auto c = store::pg::Connection::open(url);
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
                c->run(remove, store::pg::Params().add(store::pg::int_array(ids)));
                done += ids.size();
            }
        });
    for (auto& t : threads) t.join();
    if (done != backlog)
        throw std::runtime_error("bare drain: " + std::to_string(done.load()) + " of " + std::to_string(backlog));
    return static_cast<double>(backlog) / std::chrono::duration<double>(Clock::now() - start).count();
}

} // namespace

int run(int argc, char** argv) {
    std::size_t backlog = argc > 1 ? std::stoul(argv[1]) : 100000;
    int rounds = argc > 2 ? std::stoi(argv[2]) : 3;
    log::configure({log::Level::error, log::Format::text, std::nullopt});
    test::PgServer server;
    auto url = server.url();

    std::vector<double> fills, two, fifty, bare1, bare2;
    double bytes_per_job = 0;
    for (int i = 0; i < rounds; ++i) {
        std::string schema = "bench_" + std::to_string(i);
        fills.push_back(fill(url, schema, backlog));
        // the table as a backlog of this size leaves it: heap, indexes and TOAST
        server.psql("VACUUM ANALYZE " + schema + ".jobs");
        bytes_per_job = std::stod(server.psql("SELECT pg_total_relation_size('" + schema + ".jobs')")) /
                        static_cast<double>(backlog);
        two.push_back(drain(url, schema, backlog, 2));
        fill(url, schema, backlog);
        fifty.push_back(drain(url, schema, backlog, 50));
        fill(url, schema, backlog);
        bare1.push_back(bare_drain(url, schema, backlog, 1));
        fill(url, schema, backlog);
        bare2.push_back(bare_drain(url, schema, backlog, 2));
        std::printf("round %d: enqueue %.0f/s, jobhost 2 slots %.0f/s, 50 slots %.0f/s, bare 1 connection %.0f/s, "
                    "2 connections %.0f/s\n",
                    i + 1, fills.back(), two.back(), fifty.back(), bare1.back(), bare2.back());
    }
    double bare = std::max(median(bare1), median(bare2));
    std::printf("\nPostgreSQL, %zu no-op jobs queued before the host starts, medians of %d rounds:\n", backlog, rounds);
    std::printf("  enqueue (by 1000, as --jsonl)      %9.0f jobs/s\n", median(fills));
    std::printf("  jobhost drain, 2 slots              %9.0f jobs/s   %.2f x bare\n", median(two), median(two) / bare);
    std::printf("  jobhost drain, 50 slots             %9.0f jobs/s   %.2f x bare\n", median(fifty),
                median(fifty) / bare);
    std::printf("  bare libpq claim 100 + delete, 1 conn %7.0f jobs/s\n", median(bare1));
    std::printf("  bare libpq claim 100 + delete, 2 conns %6.0f jobs/s\n", median(bare2));
    std::printf("  on disk per pending job             %9.0f bytes (table, indexes, TOAST)\n", bytes_per_job);
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
