// The W4A16 tensor-core paths (src/kernels/cuda/w4a16_mma.cu, w4a16_wgmma.cu, dequantize + cuBLASLt, and the
// backend's timed choice among them) against a plain reference: dequantize the canonical
// PackedWeight in double (W = s*q - zs), gather the activation columns through perm, multiply in double, add the
// bias. Fresh random inputs every run (the seed is printed on failure); outputs are poisoned with NaN first.
//
// Error bound: the inputs are bf16 already, so the GPU adds (a) bf16 rounding of each scale (relative 2^-9, one
// per group and row), (b) one bf16 rounding of each dequantized weight s*(q-z) (2^-9), (c) fp32 accumulation
// (orders of magnitude below), (d) the bf16 rounding of y (2^-9). The sum of K independent products with relative
// errors of at most 2^-8 has a relative norm error of about 2^-8/sqrt(3) ~ 2e-3, plus 2^-9/sqrt(3) for (d): measured
// values are 2e-3..3e-3. The bound is 1e-2 (bf16 keeps 8 significant bits); an indexing or layout mistake gives
// errors of order 1 (a single wrong group scale in 1/G of the outputs still gives > 1e-2 for the G used here).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/tuner_key.h"
#include "kernels/packed_weight.h"
#include "test_util.h"
#include "cuda_test_util.h"

#ifdef DIFFULEX_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/launch.h"
#endif

namespace dlx {

// The CUDA tuners keep one timed choice per weight and M key (src/kernels/cuda/tuner_key.h; plain C++, so this runs
// in every build): every M of a key must give each kernel the same token tiles, or a choice timed at one M is applied
// where the tiles differ (a power-of-two key took the 256-token tile timed at 512 rows for a 264-row decode window,
// half empty: docs/PERFORMANCE.md, session 15).
TEST(CudaTunerKey, EveryMOfAKeyHasTheSameTokenTiles) {
  auto tiles = [](int64_t M, int64_t nt) { return (M + nt - 1) / nt; };
  // The token tile the wgmma planner takes for M <= 64 (w4a16_wgmma_plan: 8, 16, 32, 64 rows).
  auto small_tile = [](int64_t M) { return M <= 8 ? 8 : M <= 16 ? 16 : M <= 32 ? 32 : 64; };
  std::map<int64_t, int64_t> first;  // key -> its first M
  for (int64_t M = 1; M <= 4096; ++M) {
    const int64_t key = cuda::tuner_m_bucket(M);
    ASSERT_GE(key, M);
    const int64_t m0 = first.emplace(key, M).first->second;
    if (M <= 64) {
      EXPECT_EQ(small_tile(M), small_tile(m0)) << "M " << M << " key " << key;
      continue;
    }
    EXPECT_EQ(tiles(M, 256), tiles(m0, 256)) << "M " << M;
    if (M > 256) {  // the fit variant's tile is the key's, and its count within one (two of 15 or more past 2048)
      EXPECT_EQ(cuda::fit_token_tile(M), cuda::fit_token_tile(m0)) << "M " << M;
      EXPECT_LE(tiles(M, cuda::fit_token_tile(M)) - tiles(m0, cuda::fit_token_tile(M)), M <= 2048 ? 1 : 2) << "M " << M;
    }
    if (M <= 2048) {
      for (int64_t nt : {64, 128}) EXPECT_EQ(tiles(M, nt), tiles(m0, nt)) << "M " << M << " tile " << nt;
    } else {  // past 2048 a key spans 256 rows: the smaller tiles' counts differ by under 10%
      EXPECT_LE(tiles(M, 128) - tiles(m0, 128), 1) << "M " << M;
      EXPECT_LE(tiles(M, 64) - tiles(m0, 64), 3) << "M " << M;
    }
  }
  EXPECT_EQ(cuda::tuner_m_bucket(264), 288);
  // The fitted tiles of the decode windows and the B = 1 forward (fit_token_tile): nearly full tiles.
  EXPECT_EQ(cuda::fit_token_tile(264), 144);
  EXPECT_EQ(cuda::fit_token_tile(288), 144);
  EXPECT_EQ(cuda::fit_token_tile(528), 136);
  EXPECT_EQ(cuda::fit_token_tile(1056), 176);
  EXPECT_EQ(cuda::fit_token_tile(2112), 144);
  EXPECT_EQ(first.size(), 7u + 3u + 56u + 8u);  // 1..64, 128..256 by 64, 288..2048 by 32, 2304..4096 by 256
}

#ifdef DIFFULEX_HAVE_CUDA

namespace {

constexpr double kTol = 1e-2;

bool small_only() {
  const char* v = std::getenv("DIFFULEX_TEST_SMALL");
  return v && *v && std::string(v) != "0";
}

class W4A16 : public test::CudaTest {
 protected:
  void TearDown() override {
    if (gpu_) cuda_set_w4a16_path(*gpu_, "auto");
  }

  // gs <= 0 means one group (K). sym: zero point 8 everywhere; otherwise a random integer zero point per group.
  PackedWeight random_w4(int64_t N, int64_t K, int64_t gs, bool sym, bool act_order) {
    return test::random_packed(rng_, 4, N, K, gs, act_order, sym, 0.002f, 0.03f);
  }

  // y = x[:, perm] · W^T + b in double, W dequantized from the canonical tensors.
  static Tensor reference(const Tensor& x, const PackedWeight& w, const Tensor* bias) {
    const int64_t M = x.dim(0), K = w.k, N = w.n, G = w.groups(), words = w.words_per_row();
    std::vector<double> W(static_cast<size_t>(N * K));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const uint32_t q = (uint32_t(w.qweight.data<int32_t>()[n * words + k / 8]) >> (4 * (k % 8))) & 0xfu;
        const int64_t g = k / w.group_size;
        W[size_t(n * K + k)] = double(w.scales.data<float>()[n * G + g]) * q - double(w.zeros.data<float>()[n * G + g]);
      }
    std::vector<double> xr(static_cast<size_t>(K));
    Tensor y = Tensor::zeros(DType::F32, {M, N});
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; ++k)
        xr[size_t(k)] = x.data<float>()[m * K + (w.perm.defined() ? w.perm.data<int32_t>()[k] : k)];
      for (int64_t n = 0; n < N; ++n) {
        const double* wr = &W[size_t(n * K)];
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += xr[size_t(k)] * wr[k];
        if (bias) acc += load_as_f32(bias->data(), bias->dtype(), size_t(n));
        y.data<float>()[m * N + n] = float(acc);
      }
    }
    return y;
  }

  Tensor poisoned(Shape s) {
    Tensor h = Tensor::zeros(DType::F32, s);
    std::fill_n(h.data<float>(), h.numel(), std::numeric_limits<float>::quiet_NaN());
    return gpu_->from_host_f32(h);
  }


};

struct Case {
  int64_t M, N, K, gs;
  bool sym, act_order, bias;
};

// Outputs of two runs that are not bit for bit equal (a NaN, i.e. an unwritten output, counts).
int64_t unequal(const Tensor& a, const Tensor& b) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) n += !(a.data<float>()[i] == b.data<float>()[i]);
  return n;
}

std::string describe(const Case& c, const char* path) {
  return fmt::format("{} path: M {} N {} K {} group {} {}{}{}", path, c.M, c.N, c.K, c.gs, c.sym ? "sym" : "asym",
                     c.act_order ? " act-order" : "", c.bias ? " bias" : "");
}

// Every group size, sym/asym, act-order, M from 1 to 1024, N not a multiple of 16 or of the 128/256 column tile,
// K not a multiple of the 64 k-step (group 32 and one group) or of 16 (one group, K = 200); small N forces split-K,
// the wide cases run without it and with the 64x256 tile.
const Case kCases[] = {
    {1, 200, 352, 32, false, false, true},    {3, 200, 352, 32, true, true, false},
    {16, 96, 512, 64, false, true, true},     {33, 1000, 512, 64, true, false, false},
    {128, 136, 1024, 128, false, false, true}, {300, 264, 768, 128, false, true, true},
    {1, 130, 200, -1, false, false, true},    {17, 130, 200, -1, true, true, false},
    {64, 520, 384, -1, false, false, false},  {1024, 4400, 256, 128, false, false, true},
    {1, 33800, 256, 64, false, false, true},  {32, 4200, 512, 32, false, true, true},
    {300, 13600, 128, 128, true, false, false},
    // Group sizes that are multiples of 128 at M <= 32 take the fold (scales applied per group in fp32): 16- and
    // 32-row tiles, one group for all of K, and split-K ranges that start and end inside a group (256 = 4 k steps).
    {1, 4200, 1024, 128, false, false, true},  {32, 1000, 1024, 128, true, true, true},
    {20, 300, 640, -1, false, false, true},    {7, 520, 768, 256, false, true, false},
    // Group sizes 64 and 32 on the 16 x 256 tile, K not a multiple of 128.
    {5, 300, 320, 64, false, true, true},      {1, 700, 576, 32, true, false, false},
    // Every token tile of the wgmma kernel (8, 16, 32, 64, 128) with ragged M, two and more 128-token tiles, group
    // 16 (four groups a k step), N and K not multiples of the 256-feature block or the 64 k step.
    {9, 280, 448, 16, false, false, true},     {50, 520, 704, 64, true, true, false},
    {200, 1000, 384, 32, false, true, true},   {513, 264, 576, 64, false, false, true},
    {127, 4104, 1024, 128, true, false, false}, {2, 16, 64, -1, false, false, true},
    // The persistent wgmma grid walking more units than it has blocks: whole waves of unsplit tiles, then the last,
    // partial wave's tiles split along K (the reduction's per-tile counters are reused by every call after this one).
    {1, 33800, 2048, 128, false, false, true}, {12, 41000, 1536, 64, false, true, false},
    // The wgmma kernel's fold at 8- and 16-token tiles (scales applied to each group's fp32 sums): one group for all
    // of K (20 k steps) with split-K ranges inside it, and a group of 3 k steps (192), so that splits and groups
    // start and end at different steps.
    {10, 200, 1280, -1, true, false, true},    {4, 300, 1152, 192, false, true, false},
    // The fitted token tiles (tuner_key.h fit_token_tile): 2 x 144 at 264 rows (a B = 8 decode window), 2 x 144 at 288.
    {264, 1000, 512, 128, false, true, true},  {288, 520, 640, 64, true, false, false},
};

// Backend::set_reproducible (the quantizer's): "auto" times no path (no choice is recorded) and still computes the
// product.
TEST_F(W4A16, ReproducibleModeTimesNoPath) {
  gpu_->set_reproducible(true);
  const int64_t M = 40, N = 384, K = 512, gs = 128;
  PackedWeight hw = random_w4(N, K, gs, false, false);
  PackedWeight dw = gpu_->upload_packed(hw);
  Tensor x = rand_bf16_f32({M, K});
  Tensor y = poisoned({M, N});
  gpu_->matmul_packed(gpu_->from_host_f32(x), dw, nullptr, y);
  EXPECT_EQ(cuda_w4a16_choice(*gpu_, N, K, gs, M), "");
  EXPECT_LT(test::rel_error(gpu_->to_host_f32(y), reference(x, hw, nullptr)), kTol) << trace();
}

// The tuner with split-K counts among its candidates (cuda_set_w4a16_tune_splits): the choice at M <= 64 is the
// planner's count (0) or a count a plan runs; "auto" gives the reference's product; the launch runs the chosen count
// (the planner's where 0), and a count forced by cuda_set_w4a16_splits still overrides it in "auto"; the output is
// bit for bit the chosen wgmma tile forced with the chosen count.
TEST_F(W4A16, TunedSplitCountsRunAsChosen) {
  if (!cuda_w4a16_wgmma_available()) GTEST_SKIP() << "no wgmma kernel on this GPU";
  struct Restore {
    bool saved = cuda_w4a16_tune_splits();
    ~Restore() { cuda_set_w4a16_tune_splits(saved); }
  } restore;
  cuda_set_w4a16_tune_splits(true);
  int tuned = 0;
  for (const Case& c : kCases) {
    if (c.M > 64 || (small_only() && c.M * c.N * c.K > 600000000)) continue;
    SCOPED_TRACE(trace() + ", " + describe(c, "auto"));
    PackedWeight hw = random_w4(c.N, c.K, c.gs, c.sym, c.act_order);
    PackedWeight dw = gpu_->upload_packed(hw);
    Tensor x = rand_bf16_f32({c.M, c.K});
    Tensor gx = gpu_->from_host_f32(x);
    Tensor b = c.bias ? test::random_tensor(DType::BF16, {c.N}, rng_, 0.1f) : Tensor();
    Tensor gb = c.bias ? gpu_->upload(b) : Tensor();
    cuda_set_w4a16_path(*gpu_, "auto");
    Tensor y = poisoned({c.M, c.N});
    gpu_->matmul_packed(gx, dw, c.bias ? &gb : nullptr, y);
    const Tensor got = gpu_->to_host_f32(y);
    EXPECT_LT(test::rel_error(got, reference(x, hw, c.bias ? &b : nullptr)), kTol);
    const std::string path = cuda_w4a16_choice(*gpu_, c.N, c.K, dw.group_size, c.M);
    const int splits = cuda_w4a16_choice_splits(*gpu_, c.N, c.K, dw.group_size, c.M);
    const int variant = cuda::w4a16_wgmma_variant_of(path.c_str());
    if (variant < 0) {
      EXPECT_EQ(splits, 0) << path;
      continue;
    }
    const int runs = cuda::w4a16_wgmma_plan(c.M, c.N, c.K, dw.group_size, splits, variant).splits;
    if (splits) {
      EXPECT_EQ(runs, splits) << "the recorded count is not one a plan runs";
    }
    EXPECT_EQ(cuda_w4a16_last_wgmma_splits(*gpu_), runs) << path;
    tuned += splits != 0;
    // A forced count overrides the tuned one in "auto".
    const int force = splits == 2 ? 3 : 2;
    cuda_set_w4a16_splits(*gpu_, force);
    Tensor y2 = poisoned({c.M, c.N});
    gpu_->matmul_packed(gx, dw, c.bias ? &gb : nullptr, y2);
    EXPECT_EQ(cuda_w4a16_last_wgmma_splits(*gpu_),
              cuda::w4a16_wgmma_plan(c.M, c.N, c.K, dw.group_size, force, variant).splits);
    // The chosen tile forced with the chosen count: the same bits.
    cuda_set_w4a16_path(*gpu_, path);
    cuda_set_w4a16_splits(*gpu_, runs);
    Tensor forced = poisoned({c.M, c.N});
    gpu_->matmul_packed(gx, dw, c.bias ? &gb : nullptr, forced);
    cuda_set_w4a16_splits(*gpu_, 0);
    EXPECT_EQ(unequal(got, gpu_->to_host_f32(forced)), 0) << path << " with " << runs << " splits";
  }
  std::printf("[ info ] %d of the cases took a split count other than the planner's\n", tuned);
}

TEST_F(W4A16, UploadPackedUsesTheTileLayout) {
  PackedWeight hw = random_w4(72, 256, 64, false, false);
  PackedWeight dw = gpu_->upload_packed(hw);
  EXPECT_EQ(dw.layout, kW4A16TileLayout);
  EXPECT_EQ(dw.qweight.device(), Device::CUDA);
  EXPECT_FALSE(dw.zeros.defined());
  // 4-bit tiles: N rounded to 16, K to 64 -> 80 x 256 codes in 4 bits; [G, 80] scale words. No bf16 copy.
  EXPECT_EQ(dw.qweight.nbytes(), size_t(80 * 256 / 2));
  EXPECT_EQ(dw.scales.nbytes(), size_t(4 * 80 * 4));
  // The CPU backend keeps the canonical layout.
  CpuBackend cpu;
  EXPECT_EQ(cpu.upload_packed(hw).layout, kCanonicalLayout);
}

// The paths this GPU runs: the wgmma kernel on compute capability 9.0 (sm_90a machine code) only.
std::vector<const char*> kernel_paths() {
  std::vector<const char*> p{"mma"};
  if (cuda_w4a16_wgmma_available())
    for (const char* v : {"wgmma", "wgmma_narrow", "wgmma_tall", "wgmma_deep", "wgmma_fit"}) p.push_back(v);
  return p;
}

// An H100/H200 must get the Hopper kernel: a build or load problem must not silently leave it out of every test.
TEST_F(W4A16, WgmmaRunsOnHopper) {
  int dev = 0, major = 0, minor = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), cudaSuccess);
  if (major != 9 || minor != 0) GTEST_SKIP() << "compute capability " << major << "." << minor;
  EXPECT_TRUE(cuda_w4a16_wgmma_available());
}

TEST_F(W4A16, MatchesDequantizedReference) {
  std::vector<const char*> paths = kernel_paths();
  paths.push_back("dequant");
  paths.push_back("auto");
  for (const char* path : paths) {
    cuda_set_w4a16_path(*gpu_, path);
    for (const Case& c : kCases) {
      const bool kernel = std::string(path) == "mma" || std::string(path).starts_with("wgmma");
      if (!kernel && c.M < 64 && c.N > 4000) continue;  // the wide small-M cases are for the kernels
      // Under compute-sanitizer (DIFFULEX_TEST_SMALL=1) the largest cases are left out: every code path is still run.
      if (small_only() && c.M * c.N * c.K > 600000000) continue;
      SCOPED_TRACE(trace() + ", " + describe(c, path));
      PackedWeight hw = random_w4(c.N, c.K, c.gs, c.sym, c.act_order);
      PackedWeight dw = gpu_->upload_packed(hw);
      ASSERT_EQ(dw.layout, kW4A16TileLayout);
      Tensor x = rand_bf16_f32({c.M, c.K});
      Tensor b = c.bias ? test::random_tensor(DType::BF16, {c.N}, rng_, 0.1f) : Tensor();
      Tensor gb = c.bias ? gpu_->upload(b) : Tensor();
      Tensor want = reference(x, hw, c.bias ? &b : nullptr);
      Tensor y = poisoned({c.M, c.N});
      gpu_->matmul_packed(gpu_->from_host_f32(x), dw, c.bias ? &gb : nullptr, y);
      const double err = test::rel_error(gpu_->to_host_f32(y), want);
      EXPECT_LT(err, kTol);
    }
  }
}

// The wgmma kernel with its weight units and scale words loaded by tensor copies (cuda_set_w4a16_tma_weights)
// against the plain bulk copies: the same bytes in the same places, so the same output bit for bit, on every case and
// tile variant (units and words past the padded N arrive as zeros instead of not at all, and are dropped).
TEST_F(W4A16, TmaWeightCopiesGiveTheSameBits) {
  if (!cuda_w4a16_wgmma_available()) GTEST_SKIP() << "no wgmma kernel on this GPU";
  struct Restore {  // the process-wide flag goes back even when an assertion or a throw ends the test early
    bool saved = cuda_w4a16_tma_weights();
    ~Restore() { cuda_set_w4a16_tma_weights(saved); }
  } restore;
  for (const char* path : {"wgmma", "wgmma_narrow", "wgmma_tall", "wgmma_deep", "wgmma_fit"}) {
    cuda_set_w4a16_path(*gpu_, path);
    for (const Case& c : kCases) {
      if (small_only() && c.M * c.N * c.K > 600000000) continue;
      SCOPED_TRACE(trace() + ", " + describe(c, path));
      PackedWeight dw = gpu_->upload_packed(random_w4(c.N, c.K, c.gs, c.sym, c.act_order));
      Tensor x = gpu_->from_host_f32(rand_bf16_f32({c.M, c.K}));
      Tensor gb = c.bias ? gpu_->upload(test::random_tensor(DType::BF16, {c.N}, rng_, 0.1f)) : Tensor();
      Tensor got[2];
      for (int tma = 0; tma < 2; ++tma) {
        cuda_set_w4a16_tma_weights(tma == 1);
        Tensor y = poisoned({c.M, c.N});
        gpu_->matmul_packed(x, dw, c.bias ? &gb : nullptr, y);
        got[tma] = gpu_->to_host_f32(y);
      }
      EXPECT_EQ(unequal(got[0], got[1]), 0);
    }
  }
}

// One M = 4096 shape through the kernel and through the auto choice, and an f32 bias.
TEST_F(W4A16, LargeM) {
  if (small_only()) GTEST_SKIP() << "DIFFULEX_TEST_SMALL";
  PackedWeight hw = random_w4(520, 384, 128, false, true);
  PackedWeight dw = gpu_->upload_packed(hw);
  Tensor x = rand_bf16_f32({4096, 384});
  Tensor b = test::random_tensor(DType::F32, {520}, rng_, 0.1f);
  Tensor gb = gpu_->upload(b);
  Tensor want = reference(x, hw, &b);
  Tensor gx = gpu_->from_host_f32(x);
  std::vector<const char*> paths = kernel_paths();
  paths.push_back("auto");
  for (const char* path : paths) {
    SCOPED_TRACE(trace() + ", " + path);
    cuda_set_w4a16_path(*gpu_, path);
    Tensor y = poisoned({4096, 520});
    gpu_->matmul_packed(gx, dw, &gb, y);
    EXPECT_LT(test::rel_error(gpu_->to_host_f32(y), want), kTol);
  }
}

// A zero point that is not an integer cannot live in the tile layout: the weight stays canonical and the SIMT
// kernel computes it, still correctly.
TEST_F(W4A16, NonIntegerZeroFallsBack) {
  SCOPED_TRACE(trace());
  PackedWeight hw = random_w4(40, 128, 32, false, false);
  hw.zeros.data<float>()[5] += 0.37f * hw.scales.data<float>()[5];
  PackedWeight dw = gpu_->upload_packed(hw);
  EXPECT_EQ(dw.layout, kCanonicalLayout);
  Tensor x = rand_bf16_f32({5, 128});
  Tensor want = reference(x, hw, nullptr);
  Tensor y = poisoned({5, 40});
  gpu_->matmul_packed(gpu_->from_host_f32(x), dw, nullptr, y);
  EXPECT_LT(test::rel_error(gpu_->to_host_f32(y), want), kTol);
  // Group size 8 (not a multiple of 16) also stays canonical.
  EXPECT_EQ(gpu_->upload_packed(random_w4(16, 64, 8, true, false)).layout, kCanonicalLayout);
}

// SwiGLU over a fused [gate; up] weight (Backend::matmul_packed_swiglu): on every path the same bits as the plain
// product followed by silu_mul_fused (the wgmma paths run the kernel's SwiGLU epilogue, the others the two ops).
// I not a multiple of the 64/128-row half tile (a last tile cut at I), ragged M, one and several groups, act-order,
// M past one 256-token tile, and a weight of more tiles than the persistent grid (whole waves, then split-K).
struct SwigluCase {
  int64_t M, I, K, gs;
  bool act_order;
};
const SwigluCase kSwigluCases[] = {
    {1, 64, 256, 64, false},    {32, 1040, 512, 128, false}, {33, 208, 704, -1, false}, {264, 512, 384, 32, true},
    {300, 1040, 1024, 128, false}, {7, 4736, 768, 128, true}, {12, 20480, 1536, 64, false},
};

// The fused SwiGLU against the product then silu_mul_fused. Bit for bit where the fused launch's split tiles are
// the plain launch's (no tile split, or all of them); otherwise (only the last wave's tiles split, which in the fused
// launch hold other rows) the same product to the fp32 summation order: every output written, at most 1 % of them
// different and those by at most a few bf16 steps (or 1e-3 of the outputs' RMS), and the whole within 1e-3. A wrong
// row, group or half gives errors of order 1.
void expect_swiglu_equal(const Tensor& want, const Tensor& got, bool exact) {
  double sq = 0;
  for (int64_t i = 0; i < want.numel(); ++i) sq += double(want.data<float>()[i]) * want.data<float>()[i];
  const float rms = float(std::sqrt(sq / double(std::max<int64_t>(1, want.numel()))));
  int64_t diff = 0, far = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float w = want.data<float>()[i], g = got.data<float>()[i];
    if (w == g) continue;
    ++diff;  // NaN (an unwritten output) counts
    // Relative to the value, and to the outputs' scale for a value near zero: a gate or up sum that cancels to a
    // small fraction of its terms carries the summation order's fp32 difference as a large relative one (seen on the
    // H100: one output of 245,760 at M 12, I 20480, tall tile, 2 and 5 splits).
    if (!(std::abs(g - w) <= 0.03f * std::abs(w) + 1e-3f * rms)) ++far;
  }
  if (exact) {
    EXPECT_EQ(diff, 0);
  } else {
    EXPECT_EQ(far, 0);
    EXPECT_LE(diff, want.numel() / 100) << "of " << want.numel();
    EXPECT_LT(test::rel_error(got, want), 1e-3);
  }
}

// Whether the fused launch splits the same rows as the plain one (see expect_swiglu_equal).
bool swiglu_same_splits(const cuda::W4A16Args& p) { return p.splits == 1 || p.dp_tiles == 0; }

TEST_F(W4A16, SwigluMatchesTheProductThenSiluMul) {
  struct Restore {  // the process-wide flag goes back even when an assertion or a throw ends the test early
    bool saved = cuda_w4a16_swiglu();
    ~Restore() { cuda_set_w4a16_swiglu(saved); }
  } restore;
  cuda_set_w4a16_swiglu(true);
  std::vector<const char*> paths = kernel_paths();
  paths.push_back("dequant");
  paths.push_back("auto");
  for (const char* path : paths) {
    cuda_set_w4a16_path(*gpu_, path);
    for (const SwigluCase& c : kSwigluCases) {
      if (small_only() && c.M * c.I * c.K > 100000000) continue;
      SCOPED_TRACE(fmt::format("{}, {} path: M {} I {} K {} group {}{}", trace(), path, c.M, c.I, c.K, c.gs,
                               c.act_order ? " act-order" : ""));
      PackedWeight dw = gpu_->upload_packed(random_w4(2 * c.I, c.K, c.gs, false, c.act_order));
      Tensor x = gpu_->from_host_f32(rand_bf16_f32({c.M, c.K}));
      Tensor y = poisoned({c.M, 2 * c.I}), want = poisoned({c.M, c.I}), got = poisoned({c.M, c.I});
      gpu_->matmul_packed(x, dw, nullptr, y);
      gpu_->silu_mul_fused(y, want);
      gpu_->matmul_packed_swiglu(x, dw, got);
      // The path that ran: the forced one, or the tuner's choice; the epilogue only on wgmma paths.
      const std::string ran = std::string(path) == "auto" ? cuda_w4a16_choice(*gpu_, 2 * c.I, c.K, dw.group_size, c.M)
                                                          : std::string(path);
      const int variant = cuda::w4a16_wgmma_variant_of(ran.c_str());
      const int splits = std::string(path) == "auto" ? cuda_w4a16_choice_splits(*gpu_, 2 * c.I, c.K, dw.group_size, c.M) : 0;
      const bool exact =
          variant < 0 || swiglu_same_splits(cuda::w4a16_wgmma_plan(c.M, 2 * c.I, c.K, dw.group_size, splits, variant));
      expect_swiglu_equal(gpu_->to_host_f32(want), gpu_->to_host_f32(got), exact);
    }
  }
}

// The epilogue itself, by its launcher (the backend falls back to the two ops where it does not apply): every wgmma
// variant, split-K forced off, to 2 and to 5 splits (the last split of a tile runs the epilogue), against the plain
// kernel's product and silu_mul_fused; the I = 20480 case has more tiles than a 132-SM grid, so its last wave is
// split and the comparison is the tolerant one.
TEST_F(W4A16, SwigluEpilogueOfEveryVariantAndSplit) {
  if (!cuda_w4a16_wgmma_available()) GTEST_SKIP() << "no wgmma kernel on this GPU";
  for (const SwigluCase& c : kSwigluCases) {
    if (c.act_order || (small_only() && c.M * c.I * c.K > 100000000)) continue;  // x in kernel order: no perm here
    PackedWeight dw = gpu_->upload_packed(random_w4(2 * c.I, c.K, c.gs, false, false));
    Tensor x = gpu_->from_host_f32(rand_bf16_f32({c.M, c.K}));
    const int64_t N = 2 * c.I, gs = dw.group_size;
    for (int variant : {cuda::kW4A16Wide, cuda::kW4A16Narrow, cuda::kW4A16Tall, cuda::kW4A16Deep, cuda::kW4A16Fit})
      for (int splits : {1, 2, 5}) {
        SCOPED_TRACE(fmt::format("{}, M {} I {} K {} group {}, variant {}, splits {}", trace(), c.M, c.I, c.K, c.gs,
                                 variant, splits));
        const cuda::W4A16Args p = cuda::w4a16_wgmma_plan(c.M, N, c.K, gs, splits, variant);
        Tensor y = poisoned({c.M, N}), want = poisoned({c.M, c.I}), got = poisoned({c.M, c.I});
        ASSERT_TRUE(cuda::w4a16_wgmma_swiglu_supported(N, got.data()));
        Tensor partial = gpu_->empty(DType::F32, {std::max<int64_t>(1, int64_t(cuda::w4a16_partial_floats(p)))});
        const auto* tiles = static_cast<const uint32_t*>(dw.qweight.data());
        const auto* sz = static_cast<const uint32_t*>(dw.scales.data());
        gpu_->synchronize();
        cuda::launch_w4a16_wgmma(p, x.data<cuda::bf16_t>(), tiles, sz, gs, nullptr, cuda::Elt::BF16, y.data<cuda::bf16_t>(),
                                 partial.data<float>(), nullptr);
        cuda::launch_w4a16_wgmma_swiglu(p, x.data<cuda::bf16_t>(), tiles, sz, gs, got.data<cuda::bf16_t>(), partial.data<float>(),
                                        nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        gpu_->silu_mul_fused(y, want);
        expect_swiglu_equal(gpu_->to_host_f32(want), gpu_->to_host_f32(got), swiglu_same_splits(p));
      }
  }
}

TEST_F(W4A16, RejectsMismatchedInput) {
  PackedWeight dw = gpu_->upload_packed(random_w4(32, 128, 64, true, false));
  Tensor x = gpu_->empty(DType::BF16, {4, 64});
  Tensor y = gpu_->empty(DType::BF16, {4, 32});
  try {
    gpu_->matmul_packed(x, dw, nullptr, y);
    ADD_FAILURE() << "a [4, 64] input was accepted for K = 128";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("matmul_packed"), std::string::npos) << e.what();
  }
}

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
