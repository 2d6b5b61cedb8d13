// Errors: every failure the user can cause (bad file, bad flag, bad tensor) is an Error with a one-line
// message that names the file, tensor or field. The CLI prints it and exits non-zero; nothing crashes.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace dlx {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// check(cond, "fmt", args...): throws Error with the formatted message when cond is false.
template <typename... Args>
inline void check(bool cond, fmt::format_string<Args...> f, Args&&... args) {
  if (!cond) throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace dlx
