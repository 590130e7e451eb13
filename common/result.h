// Result<T>: a value or the reason there is none. Used for expected failures
// (a timeout, a bad datagram, a refused request); exceptions are kept for
// programming errors and start-up failures.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace flexmon {

// What kind of failure it is: what a caller branches on (an exit status, a
// fault code, retry or give up). The message says the rest, for a person.
enum class ErrorCode {
  kInvalidInput,  // what the caller gave is wrong: fixing the input fixes it
  kNotFound,      // what was named does not exist
  kDenied,        // a credential or seal does not verify
  kUnavailable,   // a server or database is out of reach now: a retry may work
  kIoError,       // a local system call or file failed
  kCancelled,     // asked to stop before the end
};

// "invalid input", "not found", ...: for logs and tests.
std::string_view error_code_name(ErrorCode code);

// The reason an operation failed: its kind, and words a user can act on.
struct Error {
  ErrorCode code;
  std::string message;
};

inline Error fail(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // Precondition: ok().
  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // Precondition: !ok().
  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

// For operations that return nothing but may fail.
struct Unit {};
using Status = Result<Unit>;
inline Status success() { return Unit{}; }

}  // namespace flexmon
