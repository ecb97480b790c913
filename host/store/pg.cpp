#include "store/pg.hpp"

#include "log/log.hpp"

#include <charconv>
#include <poll.h>
#include <regex>

namespace jobhost::store::pg {

namespace {
bool is_disconnect_state(const std::string& s) {
    // class 08: connection exception; 57P01..57P03: the server is shutting down or starting; 53300: too many
    // connections is not a disconnect (retrying at once will not help either, but the writer backs off the same).
    return s.rfind("08", 0) == 0 || s == "57P01" || s == "57P02" || s == "57P03";
}
} // namespace

std::int64_t Result::int64(int row, int col) const {
    const char* v = PQgetvalue(r_.get(), row, col);
    std::int64_t out = 0;
    std::from_chars(v, v + PQgetlength(r_.get(), row, col), out);
    return out;
}

std::size_t Result::affected() const {
    const char* n = r_ ? PQcmdTuples(r_.get()) : "";
    std::size_t out = 0;
    std::from_chars(n, n + std::char_traits<char>::length(n), out);
    return out;
}

std::string int_array(const std::vector<std::int64_t>& values) {
    std::string out = "{";
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(values[i]);
    }
    return out + "}";
}

std::string text_array(const std::vector<std::string>& values) {
    std::string out = "{";
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char c : values[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

std::string redact(const std::string& url) {
    // postgresql://user:secret@host/db -> postgresql://user:***@host/db; password=secret -> password=***
    static const std::regex userinfo(R"(^(postgres(?:ql)?://[^:/@]*):[^@]*@)");
    static const std::regex keyword(R"(password\s*=\s*('[^']*'|\S+))");
    auto out = std::regex_replace(url, userinfo, "$1:***@");
    return std::regex_replace(out, keyword, "password=***");
}

std::unique_ptr<Connection> Connection::open(const std::string& url) {
    // A server that does not answer (a partition, a host that is down) fails the attempt within 5 s rather than
    // never; a connect_timeout in the URL itself wins, as it comes later.
    const char* keys[] = {"connect_timeout", "dbname", nullptr};
    const char* values[] = {"5", url.c_str(), nullptr};
    PGconn* c = PQconnectdbParams(keys, values, 1);
    if (!c) throw Error("cannot connect to PostgreSQL at " + redact(url) + ": out of memory", "", true);
    if (PQstatus(c) != CONNECTION_OK) {
        std::string msg = PQerrorMessage(c);
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
        PQfinish(c);
        throw Error("cannot connect to PostgreSQL at " + redact(url) + ": " + msg, "08001", true);
    }
    // What the server says outside an answer (a NOTICE, or why it ends the session) goes to the log, not to stderr.
    PQsetNoticeProcessor(
        c,
        [](void*, const char* message) {
            std::string m = message;
            while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
            bool notice = m.rfind("NOTICE", 0) == 0 || m.rfind("DEBUG", 0) == 0 || m.rfind("INFO", 0) == 0;
            log::write(notice ? log::Level::debug : log::Level::info, "store", "PostgreSQL says: " + m);
        },
        nullptr);
    return std::unique_ptr<Connection>(new Connection(c));
}

Connection::~Connection() {
    if (conn_) PQfinish(conn_);
}

Error Connection::error(const std::string& prefix) const {
    std::string msg = conn_ ? PQerrorMessage(conn_) : "no connection";
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return Error(prefix + msg, "", !ok());
}

void Connection::check(const Result& r) const {
    auto status = r.get() ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_PIPELINE_SYNC) return;
    const char* state = r.get() ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = state ? state : "";
    std::string msg = r.get() ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    if (msg.empty()) msg = PQerrorMessage(conn_);
    bool gone = !ok() || is_disconnect_state(sqlstate);
    throw Error(msg.empty() ? std::string("the PostgreSQL connection was lost") : msg, sqlstate, gone);
}

Result Connection::exec(const std::string& sql) {
    Result r(PQexec(conn_, sql.c_str()));
    check(r);
    return r;
}

const std::string& Connection::prepare(const std::string& sql) {
    auto it = prepared_.find(sql);
    if (it != prepared_.end()) return it->second;
    std::string name = "s" + std::to_string(prepared_.size());
    Result r(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr));
    check(r);
    return prepared_.emplace(sql, name).first->second;
}

namespace {
std::vector<const char*> pointers(const Params& params) {
    std::vector<const char*> out;
    out.reserve(params.values.size());
    for (const auto& v : params.values) out.push_back(v ? v->c_str() : nullptr);
    return out;
}
} // namespace

Result Connection::run(const std::string& sql, const Params& params) {
    const auto& name = prepare(sql);
    auto values = pointers(params);
    Result r(PQexecPrepared(conn_, name.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0));
    check(r);
    return r;
}

bool Connection::silent() const {
    if (!ok()) return false;
    pollfd p{PQsocket(conn_), POLLIN | POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 0;
}

void Connection::enter_pipeline() {
    if (PQpipelineStatus(conn_) == PQ_PIPELINE_OFF && PQenterPipelineMode(conn_) != 1)
        throw error("cannot enter pipeline mode: ");
}

void Connection::send(const std::string& sql, const Params& params) {
    auto it = prepared_.find(sql);
    if (it == prepared_.end())
        throw Error("a statement was sent in pipeline mode without being prepared first", "", false);
    auto values = pointers(params);
    if (PQsendQueryPrepared(conn_, it->second.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr,
                            0) != 1)
        throw error("could not send a statement: ");
}

void Connection::flush() {
    if (PQflush(conn_) != 0) throw error("could not send to the server: "); // blocking: 0 once all is written
}

void Connection::sync() {
    if (PQpipelineSync(conn_) != 1) throw error("could not send to the server: ");
    flush();
    std::optional<Error> first;
    bool after_end = false; // PQgetResult gives null after each statement's answer; two in a row: nothing is coming
    for (;;) {
        PGresult* raw = PQgetResult(conn_);
        if (!raw) {
            if (first) throw *first;
            if (after_end || !ok()) throw error("the PostgreSQL connection was lost: ");
            after_end = true;
            continue;
        }
        after_end = false;
        Result r(raw);
        auto status = PQresultStatus(raw);
        if (status == PGRES_PIPELINE_SYNC) break;
        if (status == PGRES_PIPELINE_ABORTED || first) continue; // skipped after an error
        try {
            check(r);
        } catch (const Error& e) {
            first = e;
        }
    }
    if (first) throw *first;
}

} // namespace jobhost::store::pg
