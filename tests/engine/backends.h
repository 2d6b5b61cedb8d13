// The backends a shared test runs over: the CPU always, CUDA when built with DIFFULEX_CUDA (the test is skipped
// where no device is usable, as tests/cuda/ do). A test written once as TEST_P on BackendTest runs on each.
#pragma once
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/model.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx::test {

inline std::vector<std::string> backend_names() {
#ifdef DIFFULEX_HAVE_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
#ifdef DIFFULEX_HAVE_CUDA
    std::string why;
    if (GetParam() == "cuda" && !cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
#endif
    be_ = make_backend(GetParam());
  }
  bool on_cpu() const { return GetParam() == "cpu"; }
  // Model::load's options for this backend.
  LoadOptions load_options() const {
    LoadOptions lo;
    lo.device = GetParam();
    return lo;
  }
  // The bound for logits against an f32 reference: the CPU computes in f32, CUDA with bf16 activations.
  double logits_tol() const { return on_cpu() ? 1e-4 : 2e-2; }

  std::unique_ptr<Backend> be_;
};

// "Cpu", "Cuda": the instance's name, so that the CUDA stage's filter '*Cuda*' (tools/gpu_test.sh) takes the
// CUDA instances.
inline std::string backend_test_name(const ::testing::TestParamInfo<std::string>& info) {
  return info.param == "cuda" ? "Cuda" : "Cpu";
}

// Instantiates every TEST_P of `suite` (a BackendTest) once per backend: Backends/<suite>.<test>/{Cpu,Cuda}.
#define DLX_INSTANTIATE_OVER_BACKENDS(suite)                                                    \
  INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(::dlx::test::backend_names()), \
                           ::dlx::test::backend_test_name)

}  // namespace dlx::test
