// Wall-clock seconds of the phases of `diffulex quantize` (weights to F32, RTN, GPTQ, AWQ searches, error report,
// stand-ins, packing, writing), summed over the layers. quantize_model() resets them, prints them with -v and
// records them in the metadata, so a run on another machine (a GPU host) shows where its time went without a
// profiler. Phases are timed from the driver's thread; the work inside them may run on the thread pool.
#pragma once
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace dlx {

class PhaseTimes {
 public:
  // Adds the time from construction to destruction to phase `name` (a string literal).
  class Scope {
   public:
    Scope(PhaseTimes& t, const char* name) : t_(t), name_(name), start_((t.sync(), std::chrono::steady_clock::now())) {}
    // Never throws (it also runs while an error unwinds the stack): a time that cannot be recorded is dropped.
    ~Scope() {
      try {
        t_.sync();
        t_.add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
      } catch (...) {
      }
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    PhaseTimes& t_;
    const char* name_;
    std::chrono::steady_clock::time_point start_;
  };

  void reset();
  // Precise mode: `wait` (the backend's synchronize) runs when a phase starts and ends, so the work a phase
  // enqueued on an asynchronous device counts in that phase instead of in whichever later phase first waits for it.
  // It costs the overlap of host and device at every phase boundary; quantize_model sets it when
  // DIFFULEX_QUANT_SYNC_PHASES=1. Empty: off.
  void set_sync(std::function<void()> wait);
  void sync() const;
  void add(const char* name, double seconds);
  // Phases in the order they first ran.
  std::vector<std::pair<std::string, double>> totals() const;
  std::string summary() const;  // "name 1.23 s, name 0.45 s, ..."

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, double>> totals_;  // guarded by mu_
  std::function<void()> sync_;  // set between runs only
};

// The process's phase times (one quantization at a time runs in a process).
PhaseTimes& quant_phases();

}  // namespace dlx
