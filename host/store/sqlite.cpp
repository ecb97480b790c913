#include "store/sqlite.hpp"

namespace jobhost::store::sqlite {

namespace {
[[noreturn]] void fail(sqlite3* db, int rc, std::string_view what) {
    std::string msg = std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    throw SqliteError(rc, msg);
}
} // namespace

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
    int rc =
        sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc != SQLITE_OK) fail(db, rc, "preparing " + std::string(sql.substr(0, 60)));
}

Statement::~Statement() {
    sqlite3_finalize(stmt_);
}

Statement& Statement::operator=(Statement&& o) noexcept {
    if (this != &o) {
        sqlite3_finalize(stmt_);
        db_ = o.db_;
        stmt_ = o.stmt_;
        o.stmt_ = nullptr;
    }
    return *this;
}

Statement& Statement::bind(int index, std::int64_t v) {
    sqlite3_bind_int64(stmt_, index, v);
    return *this;
}
Statement& Statement::bind(int index, double v) {
    sqlite3_bind_double(stmt_, index, v);
    return *this;
}
Statement& Statement::bind(int index, std::string_view v) {
    sqlite3_bind_text(stmt_, index, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
}
Statement& Statement::bind_null(int index) {
    sqlite3_bind_null(stmt_, index);
    return *this;
}

bool Statement::step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    std::string sql = sqlite3_sql(stmt_) ? sqlite3_sql(stmt_) : "";
    sqlite3_reset(stmt_);
    fail(db_, rc, "running " + sql.substr(0, 60));
}

void Statement::run() {
    while (step()) {
    }
    reset();
}

void Statement::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

std::string Statement::text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}

Connection::Connection(const std::string& path, int flags) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close(db_);
        db_ = nullptr;
        throw SqliteError(rc, msg);
    }
    sqlite3_extended_result_codes(db_, 1);
}

Connection::~Connection() {
    cache_.clear(); // finalize before closing
    sqlite3_close_v2(db_);
}

Statement& Connection::cached(std::string_view sql) {
    auto it = cache_.find(std::string(sql));
    if (it != cache_.end()) {
        it->second.reset();
        return it->second;
    }
    return cache_.emplace(std::string(sql), Statement(db_, sql)).first->second;
}

void Connection::exec(std::string_view sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        throw SqliteError(rc, msg);
    }
}

std::int64_t Connection::scalar(std::string_view sql) {
    Statement s(db_, sql);
    std::int64_t v = s.step() ? s.int64(0) : 0;
    s.reset();
    return v;
}

} // namespace jobhost::store::sqlite
