// A thin RAII layer over the SQLite C API: a connection and prepared statements. Errors throw SqliteError with
// SQLite's own message and the statement that failed; callers turn them into user-facing messages.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

namespace jobhost::store::sqlite {

class SqliteError : public std::runtime_error {
public:
    SqliteError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

class Statement {
public:
    Statement() = default;
    Statement(sqlite3* db, std::string_view sql);
    ~Statement();
    Statement(Statement&& o) noexcept : db_(o.db_), stmt_(o.stmt_) { o.stmt_ = nullptr; }
    Statement& operator=(Statement&& o) noexcept;
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    Statement& bind(int index, std::int64_t v);
    Statement& bind(int index, double v);
    Statement& bind(int index, std::string_view v);
    Statement& bind_null(int index);
    // Steps once: true while a row is available.
    bool step();
    // Steps to the end.
    void run();
    void reset();

    std::int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
    double real(int col) const { return sqlite3_column_double(stmt_, col); }
    bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
    std::string text(int col) const;

private:
    sqlite3* db_ = nullptr;
    sqlite3_stmt* stmt_ = nullptr;
};

class Connection {
public:
    // Opens (flags: SQLITE_OPEN_READWRITE, | SQLITE_OPEN_CREATE to create).
    Connection(const std::string& path, int flags);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    sqlite3* get() const noexcept { return db_; }
    void exec(std::string_view sql);
    Statement prepare(std::string_view sql) { return Statement(db_, sql); }
    // A statement prepared once per connection and reused; reset after each use. Not thread-safe, like the
    // connection itself.
    Statement& cached(std::string_view sql);
    std::int64_t changes() const { return sqlite3_changes64(db_); }
    std::int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
    // A single integer from a query, e.g. "PRAGMA user_version".
    std::int64_t scalar(std::string_view sql);

private:
    sqlite3* db_ = nullptr;
    std::unordered_map<std::string, Statement> cache_;
};

} // namespace jobhost::store::sqlite
