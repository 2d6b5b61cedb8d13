// `diffulex bench` on the CPU with a tiny random preset (what CI can run): valid JSON with a positive time for every
// batch size, the per-op table reported by Model::forward itself (one embedding, the norms with the residual adds
// fused into them, the fused gate/up and q/k/v GEMMs on the GPU), and the weight bytes the backend holds.
// On a machine with a GPU the same is checked with --device cuda.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kernels/cuda/cuda_backend.h"
#include "test_util.h"

namespace dlx {

namespace {

void check_bench_json(const std::string& device) {
  auto r = test::run_cli("bench --device " + device +
                         " --random-config dream-tiny --batch 1,3 --length 16 --block 4 --warmup 1 --iters 3 --ragged");
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["device"], device);
  EXPECT_GT(j["ceilings"]["copy_GBps"].get<double>(), 0.0);
  ASSERT_EQ(j["runs"].size(), 2u);
  for (const auto& run : j["runs"]) {
    EXPECT_GT(run["forward_ms_median"].get<double>(), 0.0);
    EXPECT_GT(run["TFLOPs"].get<double>(), 0.0);
    const auto& ops = run["ops"];
    EXPECT_EQ(ops["embedding"]["calls"], 1);
    EXPECT_EQ(ops["rmsnorm"]["calls"], 2);  // dream-tiny has 2 layers: 3 norms fused with the residual add
    EXPECT_EQ(ops["add_rmsnorm"]["calls"], 3);
    // On the GPU gate/up and q/k/v are one fused GEMM each (Model::load does the same).
    const int fused = device == "cuda" ? 1 : 0;
    EXPECT_EQ(ops["matmul_qkv"]["calls"], (fused ? 1 : 3) * 2);
    EXPECT_EQ(ops["matmul_gate_up"]["calls"], (fused ? 1 : 2) * 2);
    EXPECT_EQ(ops["attention"]["calls"], 2);
    EXPECT_EQ(ops["lm_head"]["calls"], 1);
    EXPECT_GT(ops["lm_head"]["ms_median"].get<double>(), 0.0);
    // --ragged: the cached window pass as B slots and as B rows.
    EXPECT_GT(run["ragged_window_ms_median"].get<double>(), 0.0);
    EXPECT_GT(run["uniform_window_ms_median"].get<double>(), 0.0);
  }
}

TEST(BenchCli, CpuTinyPresetPrintsJson) { check_bench_json("cpu"); }

// --quant w4a16: the same forward on random packed 4-bit linears; fewer weight bytes than the bf16 run; with
// --quant-head a packed LM head too.
void check_bench_w4a16(const std::string& device) {
  const std::string common = "bench --device " + device +
                             " --random-config dream-tiny --batch 2 --length 16 --block 4 --warmup 1 --iters 2"
                             " --no-ceilings";
  auto q = test::run_cli(common + " --quant w4a16 --group-size 32");
  ASSERT_EQ(q.status, 0) << q.output;
  auto d = test::run_cli(common);
  ASSERT_EQ(d.status, 0) << d.output;
  nlohmann::json jq = nlohmann::json::parse(q.output), jd = nlohmann::json::parse(d.output);
  EXPECT_EQ(jq["quant"], "w4a16");
  EXPECT_EQ(jq["group_size"], 32);
  ASSERT_EQ(jq["runs"].size(), 1u);
  const auto& run = jq["runs"][0];
  EXPECT_GT(run["forward_ms_median"].get<double>(), 0.0);
  // On the GPU the packed gate and up run as one fused linear (Model::fuse_packed, as for a loaded checkpoint).
  EXPECT_EQ(run["ops"]["matmul_gate_up"]["calls"], (device == "cuda" ? 1 : 2) * 2);
  EXPECT_LT(run["memory"]["weight_bytes"].get<double>(), jd["runs"][0]["memory"]["weight_bytes"].get<double>());
  // What the backend holds, by kind: the packed linears instead of dense ones; the same embedding and head.
  const auto& hq = run["memory"]["held_weight_bytes"];
  const auto& hd = jd["runs"][0]["memory"]["held_weight_bytes"];
  EXPECT_GT(hq["packed_linears"].get<int64_t>(), 0);
  EXPECT_EQ(hd["packed_linears"].get<int64_t>(), 0);
  EXPECT_LT(hq["dense"].get<int64_t>(), hd["dense"].get<int64_t>());
  EXPECT_EQ(hq["embedding"], hd["embedding"]);
  EXPECT_EQ(hq["head"], hd["head"]);
  EXPECT_EQ(hq["total"], run["memory"]["weight_bytes"]);
  // --quant-head: the LM head a packed 4-bit linear too; the backend holds fewer head bytes, the rest is the same.
  auto h = test::run_cli(common + " --quant w4a16 --group-size 32 --quant-head");
  ASSERT_EQ(h.status, 0) << h.output;
  nlohmann::json jh = nlohmann::json::parse(h.output);
  EXPECT_EQ(jh["quant_head"], true);
  EXPECT_EQ(jq["quant_head"], false);
  const auto& hh = jh["runs"][0]["memory"]["held_weight_bytes"];
  EXPECT_LT(hh["head"].get<int64_t>() * 2, hq["head"].get<int64_t>());
  EXPECT_EQ(hh["packed_linears"], hq["packed_linears"]);
  EXPECT_EQ(hh["embedding"], hq["embedding"]);
  EXPECT_EQ(jh["runs"][0]["ops"]["lm_head"]["calls"], 1);
}

TEST(BenchCli, CpuTinyPresetW4A16) { check_bench_w4a16("cpu"); }

TEST(BenchCli, QuantHeadNeedsW4A16) {
  auto r = test::run_cli("bench --device cpu --random-config dream-tiny --quant-head --no-ceilings --iters 1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--quant-head needs --quant w4a16"), std::string::npos) << r.output;
}

// The split-K sweep's counts are checked before any device is touched (so this runs without a GPU).
TEST(BenchCli, W4A16SplitsMustBePositive) {
  auto r = test::run_cli("bench --device cuda --w4a16-kernels --w4a16-splits 2,0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--w4a16-splits: split counts are 1 or more (got 0)"), std::string::npos) << r.output;
}

// --model: the same forward and per-op table on a checkpoint (the fixture's Dream layout, 2 layers).
TEST(BenchCli, CheckpointHasPerOpTable) {
  auto r = test::run_cli("bench --device cpu --model " + test::source_path("testdata/fixtures/dream_tiny") +
                         " --batch 1 --length 8 --block 2 --warmup 1 --iters 2 --no-ceilings");
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["runs"].size(), 1u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["ops"]["attention"]["calls"], 2);
  EXPECT_EQ(run["ops"]["lm_head"]["calls"], 1);
  EXPECT_GT(run["flops"].get<double>(), 0.0);
  EXPECT_EQ(run["memory"]["held_weight_bytes"]["packed_linears"], 0);
}

TEST(BenchCli, RejectsUnknownQuant) {
  auto r = test::run_cli("bench --device cpu --random-config dream-tiny --quant w3 --no-ceilings --iters 1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--quant must be"), std::string::npos) << r.output;
}

TEST(BenchCli, RejectsBothModelAndPreset) {
  auto r = test::run_cli("bench --device cpu --random-config dream-tiny --model /nonexistent");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("exactly one of --model"), std::string::npos) << r.output;
}

#ifdef DIFFULEX_HAVE_CUDA
TEST(CudaBenchCli, CudaTinyPresetPrintsJson) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  check_bench_json("cuda");
}

TEST(CudaBenchCli, CudaTinyPresetW4A16) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  check_bench_w4a16("cuda");
}
#endif

}  // namespace

}  // namespace dlx
