#pragma once
// One error type for the whole engine (house style §5). The message names the file, tensor, field
// or value at fault. UserError = bad input from the user or their files; InternalError = a broken
// invariant in our own code. Both are exceptions; library code never exits or aborts.
// Thread-safety: plain value types.
#include <sstream>
#include <stdexcept>
#include <string>

namespace upcycle {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class UserError : public Error {
 public:
  using Error::Error;
};

class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace upcycle

// Bad user input: throws UserError with the concatenated message.
#define UPCYCLE_CHECK(cond, ...)                                            \
  do {                                                                      \
    if (!(cond)) throw ::upcycle::UserError(::upcycle::detail::concat(__VA_ARGS__)); \
  } while (0)

// Internal invariant: throws InternalError naming the location.
#define UPCYCLE_ASSERT(cond, ...)                                                      \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw ::upcycle::InternalError(::upcycle::detail::concat(                        \
          "internal error at ", __FILE__, ":", __LINE__, ": ", #cond, " ", ##__VA_ARGS__)); \
  } while (0)
