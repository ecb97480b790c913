// The host's one error type for fallible calls (loading, config, store): a value, cheap on success, whose message
// says what failed, where, and what to do.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace jobhost::core {

// What kind of failure an Error is, for callers that answer differently by kind (HTTP status codes, exit codes):
// never read it from the message's text.
enum class Code {
    failed,        // anything else (an I/O error, a broken file): the caller's fault is not established
    invalid,       // the input is malformed or out of bounds
    not_found,     // what was named does not exist
    conflict,      // it exists already, or is held by something else
    unprocessable, // well-formed, but cannot be acted on now (a disabled or unusable job type)
    unavailable,   // try again later: the host is shutting down, the database does not answer
};

struct Error {
    std::string message;
    Code code = Code::failed;
};

// Either a T or an Error. Access the value only after checking ok().
template <class T>
class Expected {
public:
    Expected(T value) : v_(std::move(value)) {}
    Expected(Error error) : v_(std::move(error)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const Error& error() const& { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

} // namespace jobhost::core
