// Errors inside native code are C++ exceptions of one type carrying the failing statement,
// file and line; the N-API layer turns them into rejected Promises. Nothing here aborts.
#pragma once
#include <stdexcept>
#include <string>

namespace saekit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Thrown for data-dependent input problems the TS layer cannot cheaply see (a NaN deep in a
// batch). Carries the offending row so the caller can name it.
class InputError : public Error {
 public:
  InputError(const std::string& what, long long row, long long col)
      : Error(what), row(row), col(col) {}
  long long row, col;
};

// Thrown when the caller asked a long call to stop (its CancelFlag, backend.h): the partial
// result is dropped. Not a failure of the input or the device.
class Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& what) : Error(what) {}
};

[[noreturn]] inline void fail(const std::string& msg, const char* file, int line) {
  throw Error(msg + " (" + file + ":" + std::to_string(line) + ")");
}

}  // namespace saekit

#define SAEKIT_CHECK(cond, msg) \
  do {                          \
    if (!(cond)) ::saekit::fail(std::string("check failed: ") + #cond + ": " + (msg), __FILE__, __LINE__); \
  } while (0)
