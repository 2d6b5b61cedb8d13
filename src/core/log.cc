#include "core/log.h"

#include <unistd.h>

#include <cstdio>

namespace dlx {

namespace {
LogLevel g_level = LogLevel::Warn;
}

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_line(LogLevel level, const std::string& msg) {
  const char* tag = level == LogLevel::Warn ? "warning: " : "";
  std::fprintf(stderr, "%s%s\n", tag, msg.c_str());
}

Progress::Progress(std::string label, int64_t total, bool piped)
    : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO) != 0), piped_(piped) {
  start_ = last_print_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (drawn_ && tty_) std::fputc('\n', stderr);
}

void Progress::clear() {
  if (!drawn_ || !tty_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& extra) {
  if (log_level() < LogLevel::Info && !tty_ && !piped_) return;
  if (log_level() == LogLevel::Quiet) return;
  auto now = std::chrono::steady_clock::now();
  bool last = done >= total_;
  // Piped output: at most one line every 2 s plus the final one, so logs stay readable.
  if (!tty_ && !last && std::chrono::duration<double>(now - last_print_).count() < 2.0) return;
  last_print_ = now;
  double el = elapsed_s();
  double eta = done > 0 ? el * double(total_ - done) / double(done) : 0.0;
  const int width = 24;
  int filled = total_ > 0 ? int(width * done / total_) : width;
  std::string bar(size_t(filled), '#');
  bar.resize(width, ' ');
  std::string line = fmt::format("{} [{}] {}/{}  {:.1f}s  ETA {:.1f}s  {}", label_, bar, done, total_, el, eta, extra);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace dlx
