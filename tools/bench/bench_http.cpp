// HTTP intake: jobs per second enqueued through POST /api/v1/jobs, one job per request and in batches of 1,000 (a
// JSON array), over 8 keep-alive connections, into the memory and SQLite engines; beside the limits it is compared
// against, measured in the same run: the SQLite engine's own enqueue (1,000 per call, no HTTP) and the command
// line's `jobhost enqueue --jsonl`. Every job is queued with a one-hour delay, so that only intake is measured (no
// job runs meanwhile), and the store's count of scheduled jobs is checked against what the benchmark says it sent.
// Then how long the API's reads take with 1,000,000 jobs waiting.
#include "bench_host.hpp"

#include "store/memory_store.hpp"
#include "store/sqlite_store.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

using namespace jobhost;
using namespace jobhost::bench;
namespace fs = std::filesystem;

namespace {

constexpr int kConnections = 8;

fs::path scratch_dir() {
    auto dir = fs::temp_directory_path() / ("jobhost-bench-http-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    return dir;
}

// One keep-alive connection that sends a request and reads its whole response.
class Client {
public:
    explicit Client(int port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            std::perror("connect");
            std::exit(1);
        }
    }
    ~Client() { ::close(fd_); }
    // Returns the status code.
    int post(const std::string& body) {
        return request("POST /api/v1/jobs HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body);
    }
    int request(const std::string& req) {
        for (std::size_t sent = 0; sent < req.size();) {
            auto n = ::send(fd_, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) return 0;
            sent += static_cast<std::size_t>(n);
        }
        buf_.clear();
        std::size_t header_end = std::string::npos, length = 0;
        char chunk[65536];
        for (;;) {
            auto n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n <= 0) return 0;
            buf_.append(chunk, static_cast<std::size_t>(n));
            if (header_end == std::string::npos) {
                header_end = buf_.find("\r\n\r\n");
                if (header_end == std::string::npos) continue;
                auto cl = buf_.find("Content-Length: ");
                length = cl == std::string::npos ? 0 : std::stoul(buf_.substr(cl + 16));
            }
            if (buf_.size() >= header_end + 4 + length) break;
        }
        return std::stoi(buf_.substr(9, 3));
    }

private:
    int fd_ = -1;
    std::string buf_;
};

std::string job_json(std::size_t i) {
    return R"({"type":"bench.)" + std::string(i % 50 < 10 ? "0" : "") + std::to_string(i % 50) +
           R"(","payload":{"n":)" + std::to_string(i) + R"(},"delay":3600})";
}

// Sends `total` jobs over kConnections connections, `per_request` per request. Returns jobs per second.
double drive(int port, std::size_t total, std::size_t per_request) {
    std::size_t per_conn = total / kConnections / per_request;
    std::vector<std::string> bodies; // prepared before the clock starts
    for (std::size_t r = 0; r < 4; ++r) {
        std::string body = per_request == 1 ? "" : "[";
        for (std::size_t k = 0; k < per_request; ++k) {
            if (k) body += ",";
            body += job_json(r * per_request + k);
        }
        if (per_request != 1) body += "]";
        bodies.push_back(std::move(body));
    }
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    auto start = Clock::now();
    for (int c = 0; c < kConnections; ++c)
        threads.emplace_back([&, c] {
            Client client(port);
            for (std::size_t r = 0; r < per_conn; ++r)
                if (client.post(bodies[(r + static_cast<std::size_t>(c)) % bodies.size()]) != 201) ++failures;
        });
    for (auto& t : threads) t.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (failures) {
        std::fprintf(stderr, "%d requests failed\n", failures.load());
        std::exit(1);
    }
    return static_cast<double>(per_conn * kConnections * per_request) / secs;
}

std::size_t scheduled(store::JobStore& s) {
    std::size_t n = 0;
    for (const auto& [type, c] : s.counts()) n += c.scheduled;
    return n;
}

struct Figures {
    double single = 0, batch = 0;
};

// HTTP into one store: one round of single-job requests and one of batches; checks the store got them all.
Figures http_round(store::JobStore& s, std::size_t single_n, std::size_t batch_n) {
    Host h(s, {.workers = 2, .http = true, .http_threads = 2});
    int port = h.host->http_port();
    auto before = scheduled(s);
    Figures f;
    f.single = drive(port, single_n, 1);
    f.batch = drive(port, batch_n, 1000);
    s.flush();
    auto got = scheduled(s) - before;
    auto sent = single_n / kConnections * kConnections + batch_n / kConnections / 1000 * kConnections * 1000;
    if (got != sent) {
        std::fprintf(stderr, "the store holds %zu new scheduled jobs, but the benchmark sent %zu\n", got, sent);
        std::exit(1);
    }
    return f;
}

std::unique_ptr<store::SqliteStore> sqlite(const fs::path& path, bool fresh = true) {
    if (fresh) {
        for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path.string() + suffix);
        fs::remove_all(path.string() + "-hosts");
    }
    store::SqliteOptions o;
    o.path = path;
    auto s = store::SqliteStore::open(o);
    if (!s) {
        std::fprintf(stderr, "%s\n", s.error().message.c_str());
        std::exit(1);
    }
    return std::move(*s);
}

// The SQLite engine's own enqueue: 1,000 jobs per call, as the HTTP batch hands them over.
double sqlite_direct(const fs::path& path, std::size_t n) {
    auto s = sqlite(path);
    std::vector<store::NewJob> jobs(1000);
    auto later = store::Clock::now() + std::chrono::hours(1);
    auto start = Clock::now();
    for (std::size_t i = 0; i < n; i += 1000) {
        for (std::size_t k = 0; k < jobs.size(); ++k) {
            jobs[k].type = job_json(i + k).substr(9, 8);
            jobs[k].payload = "{\"n\":" + std::to_string(i + k) + "}";
            jobs[k].run_at = later;
        }
        s->enqueue(jobs);
    }
    s->flush();
    double rate = static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
    s->close();
    return rate;
}

// `jobhost enqueue bench.00 --jsonl FILE --store PATH --delay 1h`, timed as a whole command.
double cli_jsonl(const fs::path& dir, std::size_t n) {
    auto file = dir / "jobs.jsonl";
    {
        std::ofstream out(file);
        for (std::size_t i = 0; i < n; ++i) out << "{\"n\":" << i << "}\n";
    }
    auto db = dir / "cli.db";
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db.string() + suffix);
    std::string cmd = std::string(JOBHOST_BINARY) + " enqueue bench.00 --jsonl " + file.string() + " --store " +
                      db.string() + " --plugin-dir " + JOBHOST_BENCH_PLUGIN_DIR + " --delay 1h > /dev/null";
    auto start = Clock::now();
    int rc = std::system(cmd.c_str());
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (rc != 0) {
        std::fprintf(stderr, "'%s' failed\n", cmd.c_str());
        std::exit(1);
    }
    return static_cast<double>(n) / secs;
}

// Milliseconds a GET takes (median of 15, a new connection each).
double get_ms(int port, const std::string& target) {
    std::vector<double> took;
    for (int i = 0; i < 15; ++i) {
        Client c(port);
        auto start = Clock::now();
        int status = c.request("GET " + target + " HTTP/1.1\r\nHost: b\r\n\r\n");
        took.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        if (status != 200) {
            std::fprintf(stderr, "GET %s answered %d\n", target.c_str(), status);
            std::exit(1);
        }
    }
    return median(took);
}

// The API's reads against a host whose SQLite store holds `backlog` waiting jobs.
std::vector<std::pair<std::string, double>> reads_with_backlog(const fs::path& path, std::size_t backlog) {
    {
        auto s = sqlite(path);
        std::vector<store::NewJob> jobs(1000);
        for (std::size_t i = 0; i < backlog; i += 1000) {
            for (std::size_t k = 0; k < jobs.size(); ++k) {
                jobs[k].type = job_json(i + k).substr(9, 8);
                jobs[k].run_at = store::Clock::now() + std::chrono::hours(1);
            }
            s->enqueue(jobs);
        }
        s->close();
    }
    auto s = sqlite(path, false);
    std::vector<std::pair<std::string, double>> out;
    {
        Host h(*s, {.workers = 2, .http = true, .http_threads = 2});
        int port = h.host->http_port();
        for (const char* t : {"/healthz", "/api/v1/status", "/api/v1/types/bench.07", "/metrics",
                              "/api/v1/jobs?limit=50", "/api/v1/jobs?type=bench.07&state=scheduled&limit=50",
                              "/api/v1/jobs?state=dead&limit=50", "/api/v1/dlq?limit=50", "/"})
            out.emplace_back(t, get_ms(port, t));
    }
    s->close();
    return out;
}

} // namespace

int main(int argc, char** argv) {
    int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
    auto dir = scratch_dir();
    std::vector<double> mem_single, mem_batch, sql_single, sql_batch, direct, cli;
    for (int r = 0; r < rounds; ++r) {
        store::MemoryStore m;
        auto f = http_round(m, 80'000, 800'000);
        mem_single.push_back(f.single);
        mem_batch.push_back(f.batch);
        auto s = sqlite(dir / "http.db");
        auto g = http_round(*s, 40'000, 400'000);
        s->close();
        sql_single.push_back(g.single);
        sql_batch.push_back(g.batch);
        direct.push_back(sqlite_direct(dir / "direct.db", 400'000));
        cli.push_back(cli_jsonl(dir, 400'000));
    }
    auto reads = reads_with_backlog(dir / "backlog.db", 1'000'000);
    fs::remove_all(dir);
    std::printf("http intake benchmark: POST /api/v1/jobs over %d keep-alive connections, 2 HTTP threads; medians of "
                "%d rounds\n",
                kConnections, rounds);
    std::printf("%-62s %12s\n", "measure", "jobs/s");
    std::printf("%-62s %12.0f\n", "memory engine, HTTP, 1 job per request", median(mem_single));
    std::printf("%-62s %12.0f\n", "memory engine, HTTP, 1,000 jobs per request", median(mem_batch));
    std::printf("%-62s %12.0f\n", "sqlite engine, HTTP, 1 job per request", median(sql_single));
    std::printf("%-62s %12.0f\n", "sqlite engine, HTTP, 1,000 jobs per request", median(sql_batch));
    std::printf("%-62s %12.0f\n", "limit: sqlite engine's own enqueue, 1,000 per call (no HTTP)", median(direct));
    std::printf("%-62s %12.0f\n", "limit: jobhost enqueue --jsonl into sqlite (whole command)", median(cli));
    std::printf("ratios: sqlite HTTP batch / engine's own %.2f, / --jsonl %.2f\n", median(sql_batch) / median(direct),
                median(sql_batch) / median(cli));
    std::printf("\nreads with 1,000,000 jobs waiting in SQLite (median of 15 GETs, a new connection each, ms):\n");
    for (const auto& [target, ms] : reads) std::printf("  %-58s %8.2f\n", target.c_str(), ms);
    return 0;
}
