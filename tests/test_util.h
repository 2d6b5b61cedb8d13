// Shared test helpers: temp directories, random tensors, error norms, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/tensor.h"

// Timing-based checks (speed ratios, response times, resident memory) mean nothing in builds instrumented by a
// sanitizer (g++ defines __SANITIZE_*__, clang answers __has_feature) or built without optimization.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
#define DIFFULEX_TIMING_UNRELIABLE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define DIFFULEX_TIMING_UNRELIABLE 1
#endif
#endif

namespace dlx::test {

// Sets an environment variable for a scope and puts the previous value (or its absence) back when the scope ends,
// also when an assertion or an exception ends a test early: a switch left on would change the tests after it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* v = std::getenv(name)) had_ = true, old_ = v;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

#ifdef DIFFULEX_TIMING_UNRELIABLE
constexpr bool kTimingUnreliable = true;
#else
constexpr bool kTimingUnreliable = false;
#endif

// A fresh directory under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("diffulex_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
             std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string source_path(const std::string& rel) { return std::string(DIFFULEX_SOURCE_DIR) + "/" + rel; }

// Lines [first, last) (0-based) of the KJV held-out text, testdata/kjv/heldout.txt, each ending in a newline: the
// quantizer tests' calibration text and the eval tests' splits.
inline std::string kjv_heldout_lines(int first, int last) {
  std::ifstream in(source_path("testdata/kjv/heldout.txt"));
  std::string line, out;
  for (int i = 0; i < last && std::getline(in, line); ++i)
    if (i >= first) out += line + "\n";
  return out;
}

inline Tensor random_tensor(DType dtype, Shape shape, std::mt19937_64& rng, float std = 1.0f) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  std::normal_distribution<float> nd(0.0f, std);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = nd(rng);
    switch (dtype) {
      case DType::F32: t.data<float>()[i] = v; break;
      case DType::BF16: t.data<uint16_t>()[i] = f32_to_bf16(v); break;
      case DType::F16: t.data<uint16_t>()[i] = f32_to_f16(v); break;
      default: ADD_FAILURE() << "random_tensor: unsupported dtype";
    }
  }
  return t;
}

// ||a - b|| / ||b|| over all elements (both read as f32).
inline double rel_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i) {
    double x = load_as_f32(a.data(), a.dtype(), size_t(i)), y = load_as_f32(b.data(), b.dtype(), size_t(i));
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct CmdResult {
  int status;
  std::string output;  // stdout and stderr together
};

// Runs the diffulex binary with `args` (a shell-quoted string), capturing stdout+stderr.
inline CmdResult run_cli(const std::string& args) {
  std::string cmd = std::string(DIFFULEX_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CmdResult r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

}  // namespace dlx::test
