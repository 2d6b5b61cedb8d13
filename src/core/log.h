// Logging to stderr with a level; progress lines that redraw in place on a terminal and print
// plainly (one line per update, rate-limited) when stderr is piped.
#pragma once
#include <fmt/format.h>

#include <chrono>
#include <string>

namespace dlx {

enum class LogLevel { Quiet = 0, Warn = 1, Info = 2, Debug = 3 };
void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& msg);

template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() >= LogLevel::Info) log_line(LogLevel::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() >= LogLevel::Warn) log_line(LogLevel::Warn, fmt::format(f, std::forward<Args>(args)...));
}

// Progress over `total` units: update(done, extra) redraws "label [####    ] done/total  elapsed  ETA  extra".
class Progress {
 public:
  // piped: print plain lines (every 2 s and the last) when stderr is not a terminal even below -v (--progress).
  Progress(std::string label, int64_t total, bool piped = false);
  ~Progress();  // finishes the line
  void update(int64_t done, const std::string& extra = "");
  void set_total(int64_t total) { total_ = total; }
  void clear();  // on a terminal, erases the line drawn (the next update draws it again)
  double elapsed_s() const;

 private:
  std::string label_;
  int64_t total_;
  bool tty_, piped_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace dlx
