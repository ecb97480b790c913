#include "support/pg_server.hpp"

#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <pwd.h>
#include <signal.h>
#include <stdexcept>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>

namespace jobhost::test {

namespace fs = std::filesystem;

namespace {
std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}
std::set<std::string>& created_databases(const fs::path& dir) {
    static std::map<std::string, std::set<std::string>> all;
    return all[dir.string()];
}
} // namespace

std::string PgServer::as_server(const std::string& program) const {
    return bindir_ + "/" + program;
}

PgServer::PgServer(const std::string& settings) {
    auto r = run({"/usr/bin/pg_config", "--bindir"});
    bindir_ = trim(r.out);
    if (r.exit_code != 0 || bindir_.empty() || !fs::exists(bindir_ + "/initdb"))
        throw std::runtime_error("PostgreSQL's server programs are missing (pg_config --bindir: '" + bindir_ +
                                 "'): run tools/dev setup, which installs Debian's postgresql package");
    char tmpl[] = "/tmp/jobhost-pg-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    std::vector<std::string> prefix;
    if (::geteuid() == 0) { // the server refuses root: run it as postgres
        passwd* pw = ::getpwnam("postgres");
        if (!pw) throw std::runtime_error("running as root and there is no postgres user to run the server as");
        if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) throw std::runtime_error("chown failed");
    }
    auto init = run({"/bin/sh", "-c",
                     std::string(::geteuid() == 0 ? "exec runuser -u postgres -- " : "exec ") + as_server("initdb") +
                         " -D " + (dir_ / "data").string() + " -U postgres --auth=trust -E UTF8 --no-sync"},
                    std::chrono::seconds(120));
    if (init.exit_code != 0) throw std::runtime_error("initdb failed: " + init.err + init.out);
    std::ofstream conf(dir_ / "data" / "postgresql.conf", std::ios::app);
    conf << "listen_addresses = ''\nunix_socket_directories = '" << dir_.string()
         << "'\nport = 5432\nfsync = on\nmax_connections = 200\nshared_buffers = 64MB\n"
         << settings << "\n";
    conf.close();
    start();
}

void PgServer::start() {
    auto r = run({"/bin/sh", "-c",
                  std::string(::geteuid() == 0 ? "exec runuser -u postgres -- " : "exec ") + as_server("pg_ctl") +
                      " -D " + (dir_ / "data").string() + " -l " + (dir_ / "log").string() + " -w -t 60 start"},
                 std::chrono::seconds(90));
    if (r.exit_code != 0)
        throw std::runtime_error("pg_ctl start failed: " + r.err + r.out + "\n" + read_file(dir_ / "log"));
    running_ = true;
}

void PgServer::stop() {
    if (!running_) return;
    run({"/bin/sh", "-c",
         std::string(::geteuid() == 0 ? "exec runuser -u postgres -- " : "exec ") + as_server("pg_ctl") + " -D " +
             (dir_ / "data").string() + " -w -t 30 -m fast stop"},
        std::chrono::seconds(60));
    running_ = false;
}

void PgServer::restart() {
    stop();
    start();
}

pid_t PgServer::pid() const {
    std::ifstream f(dir_ / "data" / "postmaster.pid");
    pid_t p = -1;
    f >> p;
    return p;
}

PgServer::~PgServer() {
    if (running_) {
        pid_t p = pid();
        stop();
        if (p > 0 && ::kill(p, 0) == 0) ::kill(p, SIGKILL); // by pid, if the fast stop did not finish
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

std::string PgServer::url(const std::string& database) {
    if (database != "postgres" && !created_databases(dir_).count(database)) {
        psql("CREATE DATABASE " + database);
        created_databases(dir_).insert(database);
    }
    return "postgresql:///" + database + "?host=" + dir_.string() + "&port=5432&user=postgres";
}

std::string PgServer::psql(const std::string& sql, const std::string& database) const {
    auto r = run({"/usr/bin/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", dir_.string(), "-p", "5432", "-U",
                  "postgres", "-d", database, "-c", sql},
                 std::chrono::seconds(60));
    if (r.exit_code != 0) throw std::runtime_error("psql failed: " + r.err);
    return trim(r.out);
}

} // namespace jobhost::test
