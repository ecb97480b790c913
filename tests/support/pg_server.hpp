// A PostgreSQL server of the test's own: initdb into a temporary folder, started by pg_ctl on a Unix socket in that
// folder (no TCP port to collide on), stopped by pid when the object goes. Debian's postgresql package (installed by
// tools/dev) provides the programs; the server refuses to run as root, so as root it runs as the postgres user.
#pragma once

#include <filesystem>
#include <string>

#include <sys/types.h>

namespace jobhost::test {

class PgServer {
public:
    // throws std::runtime_error with the server's log when it cannot start; `settings`: more postgresql.conf lines
    explicit PgServer(const std::string& settings = {});
    ~PgServer();
    PgServer(const PgServer&) = delete;
    PgServer& operator=(const PgServer&) = delete;

    // A libpq URL for `database` (created on first use when it is not "postgres").
    std::string url(const std::string& database = "postgres");
    // psql -At -c `sql` against `database`; throws with psql's message on failure.
    std::string psql(const std::string& sql, const std::string& database = "postgres") const;
    void stop(); // fast shutdown: connections are closed
    void start();
    void restart(); // pg_ctl restart -m fast
    pid_t pid() const;
    const std::filesystem::path& dir() const noexcept { return dir_; }

private:
    std::string as_server(const std::string& program) const;
    std::filesystem::path dir_;
    std::string bindir_;
    bool running_ = false;
};

} // namespace jobhost::test
