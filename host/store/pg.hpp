// A thin layer over libpq: a connection with prepared statements cached by their text, results that free
// themselves, and errors that say whether the connection was lost. Parameters travel as text.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace jobhost::store::pg {

class Error : public std::runtime_error {
public:
    Error(const std::string& what, std::string sqlstate, bool disconnect)
        : std::runtime_error(what), sqlstate_(std::move(sqlstate)), disconnect_(disconnect) {}
    const std::string& sqlstate() const noexcept { return sqlstate_; }
    // The connection is gone (the server restarted, the network dropped): reconnect and retry.
    bool disconnect() const noexcept { return disconnect_; }

private:
    std::string sqlstate_;
    bool disconnect_;
};

class Result {
public:
    Result() = default;
    explicit Result(PGresult* r) : r_(r, &PQclear) {}
    int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
    int columns() const { return r_ ? PQnfields(r_.get()) : 0; }
    bool null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
    std::string text(int row, int col) const {
        return std::string(PQgetvalue(r_.get(), row, col), static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
    }
    std::int64_t int64(int row, int col) const;
    std::optional<std::int64_t> opt_int64(int row, int col) const {
        if (null(row, col)) return std::nullopt;
        return int64(row, col);
    }
    // Rows changed by an INSERT, UPDATE or DELETE.
    std::size_t affected() const;
    PGresult* get() const noexcept { return r_.get(); }

private:
    std::shared_ptr<PGresult> r_;
};

// Text parameters; nullopt is SQL NULL.
struct Params {
    std::vector<std::optional<std::string>> values;
    Params& add(std::string v) {
        values.emplace_back(std::move(v));
        return *this;
    }
    Params& add(std::int64_t v) { return add(std::to_string(v)); }
    Params& add_null() {
        values.emplace_back(std::nullopt);
        return *this;
    }
};

// A bigint[] literal: {1,2,3}.
std::string int_array(const std::vector<std::int64_t>& values);
// A text[] literal with every element quoted and escaped.
std::string text_array(const std::vector<std::string>& values);

class Connection {
public:
    // Connects; the error says where and why, without the password.
    static std::unique_ptr<Connection> open(const std::string& url);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Runs one or more statements without parameters.
    Result exec(const std::string& sql);
    // Runs a statement, prepared once per connection.
    Result run(const std::string& sql, const Params& params = {});
    // Prepares a statement once per connection (run() does it itself); returns its name.
    const std::string& prepare(const std::string& sql);

    // Pipeline mode: statements are sent without waiting for their answers, which the server holds until sync() (or
    // until about 8 KiB of them fill its output buffer). Only statements prepared before enter_pipeline() may be sent.
    void enter_pipeline();
    void send(const std::string& sql, const Params& params = {}); // into libpq's buffer
    void flush();                                                 // that buffer into the socket, all of it
    // Asks for the answers of everything sent, reads them, and throws the first error among them.
    void sync();

    bool ok() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }
    // Whether the server has neither sent anything nor closed the connection since it was last read (a look at the
    // socket, without waiting). In pipeline mode between syncs the server has nothing to say unless the session is
    // ending or a statement failed. (libpq takes a send on a connection the server ended, and reports the failure
    // only once it reads.)
    bool silent() const;
    int socket() const { return PQsocket(conn_); }
    PGconn* get() const noexcept { return conn_; }
    // Throws the error of a failed result (or a lost connection).
    void check(const Result& r) const;
    Error error(const std::string& prefix) const;

private:
    explicit Connection(PGconn* c) : conn_(c) {}
    PGconn* conn_ = nullptr;
    std::unordered_map<std::string, std::string> prepared_; // sql -> statement name
};

// The URL without its password, for messages.
std::string redact(const std::string& url);

} // namespace jobhost::store::pg
