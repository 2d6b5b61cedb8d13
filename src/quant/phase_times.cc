#include "quant/phase_times.h"

#include <fmt/format.h>

namespace dlx {

void PhaseTimes::reset() {
  std::lock_guard<std::mutex> g(mu_);
  totals_.clear();
}

void PhaseTimes::add(const char* name, double seconds) {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [n, s] : totals_)
    if (n == name) {
      s += seconds;
      return;
    }
  totals_.emplace_back(name, seconds);
}

void PhaseTimes::set_sync(std::function<void()> wait) { sync_ = std::move(wait); }

void PhaseTimes::sync() const {
  if (sync_) sync_();
}

std::vector<std::pair<std::string, double>> PhaseTimes::totals() const {
  std::lock_guard<std::mutex> g(mu_);
  return totals_;
}

std::string PhaseTimes::summary() const {
  std::string out;
  for (const auto& [n, s] : totals()) out += fmt::format("{}{} {:.2f} s", out.empty() ? "" : ", ", n, s);
  return out;
}

PhaseTimes& quant_phases() {
  static PhaseTimes t;
  return t;
}

}  // namespace dlx
