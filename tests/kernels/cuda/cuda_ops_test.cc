// Every CUDA op against the CPU backend on fresh random inputs (a new seed each run, printed on failure).
// Inputs are rounded to bf16 first, so both backends see the same values and the error measured is the GPU's own:
// bf16 outputs and bf16 intermediates (attention's P, the residual) give ||gpu - cpu|| / ||cpu|| of a few 1e-3;
// the bound is 1e-2 (bf16 keeps 8 significant bits). Outputs are poisoned with NaN before each op, so an element
// the kernel fails to write makes the error infinite. Without a usable GPU every test here is skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/packed_weight.h"
#include "test_util.h"
#include "cuda_test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

constexpr double kBf16Tol = 1e-2;

TEST(CudaAvailability, MakeBackendAgreesWithAvailability) {
  std::string why;
  if (cuda_available(&why)) {
    auto be = make_backend("cuda");
    EXPECT_EQ(be->device(), Device::CUDA);
    EXPECT_EQ(be->act_dtype(), DType::BF16);
    EXPECT_NE(be->name().find("cuda"), std::string::npos);
  } else {
    try {
      make_backend("cuda");
      ADD_FAILURE() << "make_backend(\"cuda\") succeeded without a device";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  }
}

class CudaOps : public test::CudaTest {
 protected:

  Tensor rand_typed(DType dt, Shape s, float std = 1.0f) { return test::random_tensor(dt, std::move(s), rng_, std); }
  // A GPU activation filled with NaN.
  Tensor poisoned(Shape s) {
    Tensor h = Tensor::zeros(DType::F32, s);
    std::fill_n(h.data<float>(), h.numel(), std::numeric_limits<float>::quiet_NaN());
    return gpu_->from_host_f32(h);
  }
  Tensor host(const Tensor& t) { return gpu_->to_host_f32(t); }
};

TEST_F(CudaOps, ConversionsRoundTrip) {
  SCOPED_TRACE(trace());
  Tensor x = rand_bf16_f32({7, 33});
  Tensor back = host(gpu_->from_host_f32(x));
  EXPECT_EQ(test::rel_error(back, x), 0.0);  // the values are bf16 already
  // fp16 weights are stored as bf16 on the GPU: the nearest bf16 of each value.
  Tensor w16 = rand_typed(DType::F16, {5, 9});
  Tensor up = gpu_->upload(w16);
  EXPECT_EQ(up.dtype(), DType::BF16);
  Tensor got = host(up);
  for (int64_t i = 0; i < w16.numel(); ++i)
    EXPECT_EQ(got.data<float>()[i], bf16_to_f32(f32_to_bf16(f16_to_f32(w16.data<uint16_t>()[i]))));
  // bf16 and f32 weights keep their dtype and bits.
  Tensor w32 = rand_typed(DType::F32, {3, 4});
  EXPECT_EQ(test::rel_error(host(gpu_->upload(w32)), w32), 0.0);
  Tensor wb = rand_typed(DType::BF16, {3, 4});
  EXPECT_EQ(test::rel_error(host(gpu_->upload(wb)), wb), 0.0);
}

TEST_F(CudaOps, EmbeddingGathersRows) {
  SCOPED_TRACE(trace());
  for (DType dt : {DType::BF16, DType::F32}) {
    const int64_t V = 50, H = 72, T = 23;
    Tensor table = rand_typed(dt, {V, H});
    Tensor ids = Tensor::zeros(DType::I64, {T});
    for (int64_t t = 0; t < T; ++t) ids.data<int64_t>()[t] = int64_t(rng_() % V);
    Tensor want = Tensor::zeros(DType::F32, {T, H});
    cpu_.embedding(ids, table, want);
    Tensor out = poisoned({T, H});
    gpu_->embedding(ids, gpu_->upload(table), out);
    // bf16 tables are copied exactly; f32 tables are rounded once.
    EXPECT_LT(test::rel_error(host(out), want), dt == DType::BF16 ? 1e-30 : 4e-3) << dtype_name(dt);
  }
  Tensor bad = Tensor::zeros(DType::I64, {2});
  bad.data<int64_t>()[1] = 50;
  Tensor out = poisoned({2, 72});
  EXPECT_THROW(gpu_->embedding(bad, gpu_->upload(rand_typed(DType::BF16, {50, 72})), out), Error);
}

TEST_F(CudaOps, RmsNormMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int64_t T, H; DType wt; bool in_place; };
  for (const Case& c : {Case{37, 3584, DType::BF16, false}, Case{5, 100, DType::F32, false},
                        Case{16, 64, DType::BF16, true}, Case{3, 4096, DType::F16, true}}) {
    Tensor x = rand_bf16_f32({c.T, c.H}, 3.0f);
    Tensor w = rand_typed(c.wt, {c.H});
    Tensor want = Tensor::zeros(DType::F32, {c.T, c.H});
    cpu_.rmsnorm(x, w, 1e-6f, want);
    Tensor gx = gpu_->from_host_f32(x);
    Tensor out = c.in_place ? gx : poisoned({c.T, c.H});
    gpu_->rmsnorm(gx, gpu_->upload(w), 1e-6f, out);
    EXPECT_LT(test::rel_error(host(out), want), kBf16Tol) << c.T << "x" << c.H;
  }
}

TEST_F(CudaOps, MatmulMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int64_t M, N, K; DType wt; int bias; };  // bias: 0 none, 1 bf16 (epilogue), 2 f32 (separate add)
  for (const Case& c : {Case{1, 64, 64, DType::BF16, 0}, Case{37, 200, 136, DType::BF16, 1},
                        Case{288, 512, 3584, DType::BF16, 0}, Case{5, 13, 24, DType::BF16, 2},
                        Case{9, 96, 64, DType::F32, 1}, Case{4, 40, 48, DType::F16, 0},
                        Case{70, 320, 64, DType::BF16, 2}}) {
    Tensor x = rand_bf16_f32({c.M, c.K});
    Tensor w = rand_typed(c.wt, {c.N, c.K}, 0.05f);
    Tensor b = c.bias == 0 ? Tensor() : rand_typed(c.bias == 1 ? DType::BF16 : DType::F32, {c.N});
    Tensor want = Tensor::zeros(DType::F32, {c.M, c.N});
    cpu_.matmul(x, w, c.bias ? &b : nullptr, want);
    Tensor gb = c.bias ? gpu_->upload(b) : Tensor();
    Tensor y = poisoned({c.M, c.N});
    gpu_->matmul(gpu_->from_host_f32(x), gpu_->upload(w), c.bias ? &gb : nullptr, y);
    EXPECT_LT(test::rel_error(host(y), want), kBf16Tol) << c.M << "x" << c.N << "x" << c.K << " " << dtype_name(c.wt);
  }
}

// Decoding shrinks the LM head's row count step by step: the algorithm tuned for one M is reused for the other Ms
// of its power-of-two bucket (gemm.h). Every M of the walk, in both directions, still matches the CPU.
TEST_F(CudaOps, MatmulReusesTunedAlgorithmAcrossRowCounts) {
  SCOPED_TRACE(trace());
  Tensor w = rand_typed(DType::BF16, {520, 384}, 0.05f);
  Tensor gw = gpu_->upload(w);
  for (int64_t M : {32, 31, 17, 20, 9, 16, 1, 2, 64, 33}) {
    Tensor x = rand_bf16_f32({M, 384});
    Tensor want = Tensor::zeros(DType::F32, {M, 520});
    cpu_.matmul(x, w, nullptr, want);
    Tensor y = poisoned({M, 520});
    gpu_->matmul(gpu_->from_host_f32(x), gw, nullptr, y);
    EXPECT_LT(test::rel_error(host(y), want), kBf16Tol) << "M " << M;
  }
}

TEST_F(CudaOps, MatmulRejectsMismatchedShapes) {
  Tensor x = gpu_->from_host_f32(rand_bf16_f32({4, 8}));
  Tensor w = gpu_->upload(rand_typed(DType::BF16, {6, 9}));
  Tensor y = poisoned({4, 6});
  try {
    gpu_->matmul(x, w, nullptr, y);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda matmul"), std::string::npos) << e.what();
  }
}


TEST_F(CudaOps, PackedMatmulMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int bits; int64_t M, N, K, gs; bool act_order, bias; };
  for (const Case& c : {Case{4, 1, 96, 256, 64, false, false}, Case{4, 3, 96, 256, 32, true, true},
                        Case{4, 70, 130, 512, 128, false, true}, Case{4, 9, 64, 128, 128, false, false},
                        Case{8, 5, 96, 256, 64, false, true}, Case{8, 66, 72, 192, 64, true, false},
                        Case{2, 4, 48, 128, 32, false, false}}) {
    PackedWeight hw = test::random_packed(rng_, c.bits, c.N, c.K, c.gs, c.act_order);
    Tensor x = rand_bf16_f32({c.M, c.K});
    Tensor b = c.bias ? rand_typed(DType::BF16, {c.N}, 0.1f) : Tensor();
    Tensor want = Tensor::zeros(DType::F32, {c.M, c.N});
    cpu_.matmul_packed(x, hw, c.bias ? &b : nullptr, want);
    PackedWeight dw = hw;
    dw.qweight = gpu_->upload(hw.qweight);
    dw.scales = gpu_->upload(hw.scales);
    dw.zeros = gpu_->upload(hw.zeros);
    if (hw.perm.defined()) dw.perm = gpu_->upload(hw.perm);
    Tensor gb = c.bias ? gpu_->upload(b) : Tensor();
    Tensor y = poisoned({c.M, c.N});
    gpu_->matmul_packed(gpu_->from_host_f32(x), dw, c.bias ? &gb : nullptr, y);
    EXPECT_LT(test::rel_error(host(y), want), kBf16Tol)
        << c.bits << " bits, " << c.M << "x" << c.N << "x" << c.K << " group " << c.gs << (c.act_order ? " act-order" : "");
  }
}

TEST_F(CudaOps, RopeMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int64_t T, heads, D; double theta; int64_t max_pos; };
  for (const Case& c : {Case{18, 4, 16, 1e6, 9}, Case{40, 2, 32, 1e4, 5000}, Case{288, 28, 128, 1e6, 288},
                        Case{7, 3, 64, 5e5, 100000}, Case{5, 6, 256, 1e4, 300}}) {
    Tensor x = rand_bf16_f32({c.T, c.heads, c.D});
    Tensor pos = Tensor::zeros(DType::I64, {c.T});
    for (int64_t t = 0; t < c.T; ++t) pos.data<int64_t>()[t] = int64_t(rng_() % uint64_t(c.max_pos));
    Tensor want = Tensor::from_data(DType::F32, x.shape(), x.data());
    cpu_.rope(want, pos, c.theta);
    Tensor gx = gpu_->from_host_f32(x);
    gpu_->rope(gx, pos, c.theta);
    EXPECT_LT(test::rel_error(host(gx), want), kBf16Tol) << "D " << c.D << " theta " << c.theta;
    // Same positions again (the device copy is reused) and then different ones (it is refreshed).
    Tensor gx2 = gpu_->from_host_f32(x);
    gpu_->rope(gx2, pos, c.theta);
    EXPECT_EQ(test::rel_error(host(gx2), host(gx)), 0.0);
    for (int64_t t = 0; t < c.T; ++t) pos.data<int64_t>()[t] = (pos.data<int64_t>()[t] + 1) % c.max_pos;
    Tensor want3 = Tensor::from_data(DType::F32, x.shape(), x.data());
    cpu_.rope(want3, pos, c.theta);
    Tensor gx3 = gpu_->from_host_f32(x);
    gpu_->rope(gx3, pos, c.theta);
    EXPECT_LT(test::rel_error(host(gx3), want3), kBf16Tol);
  }
}

TEST_F(CudaOps, AttentionMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int64_t B, Lq, S, Hq, Hkv, D; bool mask; };
  for (const Case& c : {Case{3, 9, 9, 4, 2, 16, true}, Case{3, 70, 70, 4, 2, 32, true}, Case{2, 9, 130, 4, 4, 64, true},
                        Case{1, 288, 288, 28, 4, 128, false}, Case{2, 100, 77, 8, 2, 128, true},
                        Case{1, 20, 33, 2, 1, 256, true},
                        // Head dims between the instantiated widths (zero-padded columns): LLaDA-style 24, and
                        // 8, 40, 96, 136, 200.
                        Case{2, 33, 33, 4, 2, 24, true}, Case{1, 9, 70, 2, 2, 8, false}, Case{2, 17, 65, 4, 4, 40, true},
                        Case{1, 70, 70, 6, 2, 96, true}, Case{2, 20, 33, 2, 1, 136, true},
                        Case{1, 65, 40, 4, 2, 200, false}}) {
    Tensor q = rand_bf16_f32({c.B, c.Lq, c.Hq, c.D}), k = rand_bf16_f32({c.B, c.S, c.Hkv, c.D}), v = rand_bf16_f32({c.B, c.S, c.Hkv, c.D});
    Tensor mask;
    if (c.mask) {
      // Row 0 attends everywhere, row 1 (if any) to a random subset, row 2 (if any) to a prefix.
      mask = Tensor::zeros(DType::U8, {c.B, c.S});
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < c.S; ++j)
          mask.data<uint8_t>()[b * c.S + j] = b == 0 ? 1 : b == 1 ? uint8_t(rng_() % 3 != 0) : uint8_t(j < c.S * 2 / 3);
    }
    Tensor want = Tensor::zeros(DType::F32, q.shape());
    cpu_.attention(q, k, v, c.mask ? &mask : nullptr, want);
    Tensor out = poisoned(q.shape());
    gpu_->attention(gpu_->from_host_f32(q), gpu_->from_host_f32(k), gpu_->from_host_f32(v), c.mask ? &mask : nullptr,
                    out);
    EXPECT_LT(test::rel_error(host(out), want), kBf16Tol)
        << "B " << c.B << " Lq " << c.Lq << " S " << c.S << " heads " << c.Hq << "/" << c.Hkv << " D " << c.D;
  }
}

// The native block-causal kernels (one launch; each row sees the keys before its block's end) against the CPU
// backend's generic attention_block_causal (one bidirectional attention per query block over its key prefix).
TEST_F(CudaOps, AttentionBlockCausalMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int64_t B, Lq, S, Hq, Hkv, D, block, q_offset; bool mask; };
  for (const Case& c : {Case{2, 40, 40, 4, 2, 64, 4, 0, true},       // prefill, SDAR's block 4
                        Case{1, 32, 96, 8, 2, 128, 32, 64, false},   // a cached window at the end
                        Case{2, 4, 100, 4, 1, 128, 4, 96, true},     // one block of 4 after 96 cached keys
                        Case{1, 20, 60, 2, 2, 128, 8, 16, false},    // keys after the window exist, unseen (dual)
                        Case{2, 65, 130, 4, 2, 32, 16, 3, true},     // offset inside a block
                        Case{1, 130, 130, 4, 4, 16, 64, 0, true},    // tiles of 64 rows, block = tile
                        Case{1, 70, 70, 2, 1, 256, 32, 0, true},     // the D > 128 kernel
                        Case{1, 20, 60, 2, 2, 200, 8, 16, false}}) {
    Tensor q = rand_bf16_f32({c.B, c.Lq, c.Hq, c.D}), k = rand_bf16_f32({c.B, c.S, c.Hkv, c.D}),
           v = rand_bf16_f32({c.B, c.S, c.Hkv, c.D});
    Tensor mask;
    if (c.mask) {  // batch row 0 attends everywhere, row 1 to a random subset (a left-padded prompt: a prefix off)
      mask = Tensor::zeros(DType::U8, {c.B, c.S});
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < c.S; ++j)
          mask.data<uint8_t>()[b * c.S + j] = b == 0 ? 1 : uint8_t(j >= 3 && rng_() % 4 != 0);
    }
    Tensor want = Tensor::zeros(DType::F32, q.shape());
    cpu_.attention_block_causal(q, k, v, c.mask ? &mask : nullptr, c.block, c.q_offset, want);
    Tensor out = poisoned(q.shape());
    gpu_->attention_block_causal(gpu_->from_host_f32(q), gpu_->from_host_f32(k), gpu_->from_host_f32(v),
                                 c.mask ? &mask : nullptr, c.block, c.q_offset, out);
    EXPECT_LT(test::rel_error(host(out), want), kBf16Tol)
        << "B " << c.B << " Lq " << c.Lq << " S " << c.S << " D " << c.D << " block " << c.block << " offset "
        << c.q_offset;
  }
  Tensor q = gpu_->from_host_f32(rand_bf16_f32({1, 8, 2, 64})), out = poisoned({1, 8, 2, 64});
  EXPECT_THROW(gpu_->attention_block_causal(q, q, q, nullptr, 4, 1, out), Error);  // queries 1..9 of 8 keys
}

// Key/value rows that no query may see (past the last row's block end, or masked out) can hold anything, NaN
// included (a cache row nobody wrote yet): the kernels must not read them. K and V get NaN there on the GPU; the CPU
// reference sees zeros. Both kernels (D <= 128 and D > 128), bidirectional with a mask and block-causal.
TEST_F(CudaOps, AttentionNeverReadsUnseenOrMaskedKeyRows) {
  SCOPED_TRACE(trace());
  struct Case { int64_t Lq, S, D, block, q_offset; };
  for (const Case& c : {Case{9, 130, 64, 0, 0}, Case{32, 200, 128, 32, 64}, Case{20, 150, 24, 8, 16},
                        Case{33, 160, 256, 32, 32}, Case{4, 70, 136, 0, 0}}) {
    const int64_t B = 2, Hq = 4, Hkv = 2;
    Tensor q = rand_bf16_f32({B, c.Lq, Hq, c.D}), k = rand_bf16_f32({B, c.S, Hkv, c.D}),
           v = rand_bf16_f32({B, c.S, Hkv, c.D});
    Tensor mask = Tensor::zeros(DType::U8, {B, c.S});
    // Keys the last query row can see: all S bidirectionally, else up to its block's end.
    const int64_t seen = c.block > 0 ? std::min(c.S, ((c.q_offset + c.Lq - 1) / c.block + 1) * c.block) : c.S;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < c.S; ++j) mask.data<uint8_t>()[b * c.S + j] = uint8_t(j % 5 != 2);  // every 5th off
    Tensor kn = Tensor::from_data(DType::F32, k.shape(), k.data()), vn = Tensor::from_data(DType::F32, v.shape(), v.data());
    const int64_t row = Hkv * c.D;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < c.S; ++j) {
        if (j < seen && mask.data<uint8_t>()[b * c.S + j]) continue;
        for (int64_t i = 0; i < row; ++i) {
          const int64_t at = (b * c.S + j) * row + i;
          k.data<float>()[at] = v.data<float>()[at] = 0.0f;
          kn.data<float>()[at] = vn.data<float>()[at] = std::numeric_limits<float>::quiet_NaN();
        }
      }
    Tensor want = Tensor::zeros(DType::F32, q.shape()), out = poisoned(q.shape());
    if (c.block > 0) {
      cpu_.attention_block_causal(q, k, v, &mask, c.block, c.q_offset, want);
      gpu_->attention_block_causal(gpu_->from_host_f32(q), gpu_->from_host_f32(kn), gpu_->from_host_f32(vn), &mask,
                                   c.block, c.q_offset, out);
    } else {
      cpu_.attention(q, k, v, &mask, want);
      gpu_->attention(gpu_->from_host_f32(q), gpu_->from_host_f32(kn), gpu_->from_host_f32(vn), &mask, out);
    }
    EXPECT_LT(test::rel_error(host(out), want), kBf16Tol)
        << "Lq " << c.Lq << " S " << c.S << " D " << c.D << " block " << c.block << " offset " << c.q_offset;
  }
}

// Split-KV (launch.h): each query tile's key tiles divided among blocks, their partial rows merged by a second
// launch. Forced split counts (2, 3, 5: tiles of one split, of several, splits that get no tile of an early query
// tile in block-causal mode) and the rule, against the CPU backend: bidirectional and block-causal, GQA, masks, a
// batch row whose keys are all masked (every split empty: zeros), head dims between the instantiated widths, and
// key/value rows nobody may see holding NaN.
TEST_F(CudaOps, AttentionSplitKvMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Restore {
    int mode = cuda_attention_split_kv_mode();
    ~Restore() { cuda_set_attention_split_kv(mode); }
  } restore;
  struct Case { int64_t B, Lq, S, Hq, Hkv, D, block, q_offset; bool mask; };
  const Case cases[] = {Case{1, 32, 288, 28, 4, 128, 0, 0, false},  // a Dream-7B decoding window
                        Case{3, 9, 200, 4, 2, 16, 0, 0, true},      Case{2, 20, 333, 2, 1, 24, 0, 0, true},
                        Case{2, 70, 150, 4, 2, 40, 0, 0, true},     Case{1, 32, 96, 8, 2, 128, 32, 64, false},
                        Case{2, 4, 100, 4, 1, 128, 4, 96, true},    Case{2, 65, 330, 4, 2, 32, 16, 3, true},
                        Case{1, 20, 260, 2, 2, 64, 8, 100, false},  // keys after the window, unseen
                        Case{1, 130, 330, 4, 2, 32, 64, 0, true}};  // early query tiles: fewer key tiles than splits
  for (int mode : {2, 3, 5, -1}) {
    cuda_set_attention_split_kv(mode);
    for (const Case& c : cases) {
      const std::string what = "mode " + std::to_string(mode) + " B " + std::to_string(c.B) + " Lq " +
                               std::to_string(c.Lq) + " S " + std::to_string(c.S) + " D " + std::to_string(c.D) +
                               " block " + std::to_string(c.block) + " offset " + std::to_string(c.q_offset);
      const int splits = cuda_attention_kv_splits(c.B, c.Lq, c.S, c.Hq, c.D, c.block, c.q_offset);
      if (mode > 0) {
        EXPECT_GT(splits, 1) << what;  // every case has two key tiles or more
      }
      Tensor q = rand_bf16_f32({c.B, c.Lq, c.Hq, c.D}), k = rand_bf16_f32({c.B, c.S, c.Hkv, c.D}),
             v = rand_bf16_f32({c.B, c.S, c.Hkv, c.D});
      Tensor mask = Tensor::zeros(DType::U8, {c.B, c.S});
      for (int64_t b = 0; b < c.B; ++b)  // row 0 every key, row 1 a random subset, row 2 none
        for (int64_t j = 0; j < c.S; ++j)
          mask.data<uint8_t>()[b * c.S + j] = b == 0 ? 1 : b == 1 ? uint8_t(rng_() % 3 != 0) : 0;
      // Rows no query sees (masked, or past the last row's block end) are zeros for the CPU and NaN on the GPU.
      const int64_t seen = c.block > 0 ? std::min(c.S, ((c.q_offset + c.Lq - 1) / c.block + 1) * c.block) : c.S;
      Tensor kn = Tensor::from_data(DType::F32, k.shape(), k.data()), vn = Tensor::from_data(DType::F32, v.shape(), v.data());
      const int64_t row = c.Hkv * c.D;
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < c.S; ++j) {
          if (j < seen && (!c.mask || mask.data<uint8_t>()[b * c.S + j])) continue;
          for (int64_t i = 0; i < row; ++i) {
            const int64_t at = (b * c.S + j) * row + i;
            k.data<float>()[at] = v.data<float>()[at] = 0.0f;
            kn.data<float>()[at] = vn.data<float>()[at] = std::numeric_limits<float>::quiet_NaN();
          }
        }
      const Tensor* m = c.mask ? &mask : nullptr;
      Tensor want = Tensor::zeros(DType::F32, q.shape()), out = poisoned(q.shape());
      const Tensor gq = gpu_->from_host_f32(q), gk = gpu_->from_host_f32(kn), gv = gpu_->from_host_f32(vn);
      cuda_reset_peak(*gpu_);
      const size_t before = cuda_memory_stats(*gpu_).activation_bytes;
      if (c.block > 0) {
        cpu_.attention_block_causal(q, k, v, m, c.block, c.q_offset, want);
        gpu_->attention_block_causal(gq, gk, gv, m, c.block, c.q_offset, out);
      } else {
        cpu_.attention(q, k, v, m, want);
        gpu_->attention(gq, gk, gv, m, out);
      }
      // The split path ran: its partial rows took an activation block of their size.
      if (splits > 1) {
        EXPECT_GE(cuda_memory_stats(*gpu_).activation_peak_bytes - before,
                  size_t(c.B * c.Lq * c.Hq * splits * (c.D + 2)) * sizeof(float))
            << what;
      }
      Tensor got = host(out);
      EXPECT_LT(test::rel_error(got, want), kBf16Tol) << what << " splits " << splits;
      if (c.mask && c.B > 2) {  // batch row 2 sees no key: zeros, as unsplit
        for (int64_t i = 2 * c.Lq * c.Hq * c.D; i < 3 * c.Lq * c.Hq * c.D; ++i)
          ASSERT_EQ(got.data<float>()[i], 0.0f) << what << " element " << i;
      }
    }
  }
  // The rule splits the decoding window (28 query blocks on a GPU with more SMs) and not a 288-token prefill.
  cuda_set_attention_split_kv(-1);
  EXPECT_GT(cuda_attention_kv_splits(1, 32, 288, 28, 128, 0, 0), 1);
  EXPECT_EQ(cuda_attention_kv_splits(8, 288, 288, 28, 128, 0, 0), 1);
  EXPECT_EQ(cuda_attention_kv_splits(1, 32, 288, 28, 256, 0, 0), 1);  // the D > 128 kernel has no split form
  cuda_set_attention_split_kv(0);
  EXPECT_EQ(cuda_attention_kv_splits(1, 32, 288, 28, 128, 0, 0), 1);
}

// copy_row_blocks on CUDA (the generic one copy per block) against the CPU backend's, bit for bit, bf16 rows of a
// KV cache's width; rows outside the blocks keep their bytes.
TEST_F(CudaOps, CopyRowBlocksMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case { int64_t blocks, n, C, stride, offset; };
  for (const Case& c : {Case{1, 32, 512, 288, 256}, Case{8, 32, 512, 320, 64}, Case{3, 5, 24, 7, 2}, Case{2, 4, 8, 4, 0},
                      Case{3, 3, 5, 6, 1}}) {  // the last: 10-byte rows, copied byte by byte
    const Tensor src = rand_bf16_f32({c.blocks * c.n, c.C});
    Tensor want = rand_bf16_f32({c.blocks * c.stride, c.C});
    Tensor got = gpu_->from_host_f32(want);
    gpu_->copy_row_blocks(gpu_->from_host_f32(src), c.blocks, got, c.stride, c.offset);
    cpu_.copy_row_blocks(src, c.blocks, want, c.stride, c.offset);
    EXPECT_EQ(test::rel_error(host(got), want), 0.0) << "blocks " << c.blocks << " n " << c.n << " stride " << c.stride;
  }
  Tensor src = gpu_->from_host_f32(rand_bf16_f32({8, 16})), dst = gpu_->from_host_f32(rand_bf16_f32({20, 16}));
  EXPECT_THROW(gpu_->copy_row_blocks(src, 2, dst, 10, 7), Error);  // the last block would end at row 21
}

TEST_F(CudaOps, AttentionFullyMaskedRowGivesZeros) {
  SCOPED_TRACE(trace());
  const int64_t B = 2, L = 5, H = 2, D = 32;
  Tensor q = rand_bf16_f32({B, L, H, D}), k = rand_bf16_f32({B, L, H, D}), v = rand_bf16_f32({B, L, H, D});
  Tensor mask = Tensor::zeros(DType::U8, {B, L});
  for (int64_t j = 0; j < L; ++j) mask.data<uint8_t>()[j] = 1;  // batch row 1: every key masked
  Tensor out = poisoned(q.shape());
  gpu_->attention(gpu_->from_host_f32(q), gpu_->from_host_f32(k), gpu_->from_host_f32(v), &mask, out);
  Tensor got = host(out);
  for (int64_t i = L * H * D; i < 2 * L * H * D; ++i) ASSERT_EQ(got.data<float>()[i], 0.0f) << i;
  Tensor want = Tensor::zeros(DType::F32, q.shape());
  cpu_.attention(q, k, v, &mask, want);
  EXPECT_LT(test::rel_error(got, want), kBf16Tol);
}

TEST_F(CudaOps, AttentionRejectsUnsupportedHeadDim) {
  for (int64_t D : {12, 264}) {  // not a multiple of 8; past 256
    Tensor q = gpu_->from_host_f32(rand_bf16_f32({1, 4, 2, D}));
    Tensor out = poisoned({1, 4, 2, D});
    EXPECT_THROW(gpu_->attention(q, q, q, nullptr, out), Error) << D;
  }
}

// The native ragged attention (DIFFULEX_SLOT_ATTENTION=1: one descriptor copy, one launch writing every slot's
// window into its cache, one flash-attention launch for all slots) against one call per slot on the same GPU (the
// window copied into the cache, then attention_block_causal; without a cache attention over the window itself).
// Both run the same kernel code per (slot, head, query tile), so outputs and caches must agree bit for bit. Slots
// of different widths (one and two query tiles), cache lengths, windows and masks, one without a cache, their rows
// in the pass in reverse order with rows of no slot before them; cache rows that no query may see (past the last
// row's block end, or masked) hold NaN, which neither path may read.
TEST_F(CudaOps, AttentionSlotsEqualOneCallPerSlot) {
  SCOPED_TRACE(trace());
  const test::ScopedEnv flag("DIFFULEX_SLOT_ATTENTION", "1");  // the previous value back afterwards
  struct Case {
    int64_t W, L, begin;
    bool cache, mask;
  };
  const std::vector<Case> cases = {{70, 200, 64, true, true}, {5, 40, 8, true, false}, {33, 33, 0, false, true},
                                   {4, 100, 96, true, true},  {1, 9, 4, true, false},  {130, 160, 0, true, true}};
  const int64_t Hq = 4, Hkv = 2, gap = 3;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t D : {16, 64, 80, 128})
    for (int64_t block : {0, 4, 32}) {
      SCOPED_TRACE("D " + std::to_string(D) + " block " + std::to_string(block));
      int64_t T = gap;
      for (const Case& c : cases) T += c.W;
      const Tensor q = gpu_->from_host_f32(rand_bf16_f32({T, Hq, D}));
      const Tensor k = gpu_->from_host_f32(rand_bf16_f32({T, Hkv, D})), v = gpu_->from_host_f32(rand_bf16_f32({T, Hkv, D}));
      std::vector<AttnSlotRef> slots, ref;  // the same slots over the native path's caches and the reference's
      int64_t row = T;
      for (const Case& c : cases) {
        AttnSlotRef s;
        row -= c.W;
        s.row = row, s.width = c.W;
        const int64_t keys = c.cache ? c.L : c.W;
        if (c.mask) {
          s.key_mask = Tensor::zeros(DType::U8, {1, keys});
          for (int64_t j = 0; j < keys; ++j) s.key_mask.data<uint8_t>()[j] = uint8_t(j == 0 || rng_() % 3 != 0);
        }
        AttnSlotRef r = s;
        if (c.cache) {
          s.begin = r.begin = c.begin;
          // The keys the slot's last query row sees: its block's end (block-causal), else all L.
          const int64_t seen = block > 0 ? std::min(c.L, ((c.begin + c.W - 1) / block + 1) * block) : c.L;
          Tensor hk = rand_bf16_f32({1, c.L, Hkv, D}), hv = rand_bf16_f32({1, c.L, Hkv, D});
          for (int64_t j = 0; j < c.L; ++j) {
            if (j < seen && (!c.mask || s.key_mask.data<uint8_t>()[j])) continue;
            std::fill_n(hk.data<float>() + j * Hkv * D, Hkv * D, nan);
            std::fill_n(hv.data<float>() + j * Hkv * D, Hkv * D, nan);
          }
          s.k_cache = gpu_->from_host_f32(hk), s.v_cache = gpu_->from_host_f32(hv);
          r.k_cache = gpu_->from_host_f32(hk), r.v_cache = gpu_->from_host_f32(hv);
        }
        slots.push_back(s);
        ref.push_back(r);
      }
      ASSERT_EQ(row, gap);
      Tensor out = poisoned({T, Hq, D}), want = poisoned({T, Hq, D});
      gpu_->attention_slots(q, k, v, slots, block, out);
      gpu_->Backend::attention_slots(q, k, v, ref, block, want);  // the generic path: one slot after the other
      const int64_t qrow = Hq * D;
      const Tensor got = host(out), expect = host(want);
      EXPECT_EQ(std::memcmp(got.data(), expect.data(), got.nbytes()), 0) << "outputs differ; rel error "
                                                                          << test::rel_error(got, expect);
      for (int64_t i = gap * qrow; i < got.numel(); ++i)
        ASSERT_FALSE(std::isnan(got.data<float>()[i])) << "row " << i / qrow << " of a slot holds NaN";
      for (size_t i = 0; i < slots.size(); ++i) {
        if (!slots[i].k_cache.defined()) continue;
        const Tensor a = host(slots[i].k_cache), b = host(ref[i].k_cache), c = host(slots[i].v_cache),
                     d = host(ref[i].v_cache);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << "slot " << i << " k_cache";
        EXPECT_EQ(std::memcmp(c.data(), d.data(), c.nbytes()), 0) << "slot " << i << " v_cache";
      }
    }
}

TEST_F(CudaOps, SiluMulAndAddMatchCpu) {
  SCOPED_TRACE(trace());
  for (int64_t n : {1000, 4096, 3 * 18944}) {  // scalar tail path and 16-byte vector path
    Tensor g = rand_bf16_f32({n}, 2.0f), u = rand_bf16_f32({n});
    Tensor want = Tensor::zeros(DType::F32, {n});
    cpu_.silu_mul(g, u, want);
    Tensor gg = gpu_->from_host_f32(g);
    gpu_->silu_mul(gg, gpu_->from_host_f32(u), gg);  // in place, as the model calls it
    EXPECT_LT(test::rel_error(host(gg), want), kBf16Tol) << n;

    Tensor a = rand_bf16_f32({n}), b = rand_bf16_f32({n});
    Tensor sum = Tensor::from_data(DType::F32, a.shape(), a.data());
    cpu_.add(sum, b);
    Tensor ga = gpu_->from_host_f32(a);
    gpu_->add(ga, gpu_->from_host_f32(b));
    EXPECT_LT(test::rel_error(host(ga), sum), kBf16Tol) << n;
  }
}

TEST_F(CudaOps, ActivationBuffersAreReused) {
  const CudaMemoryStats before = cuda_memory_stats(*gpu_);
  { Tensor t = gpu_->empty(DType::BF16, {1024, 1024}); }
  const CudaMemoryStats freed = cuda_memory_stats(*gpu_);
  EXPECT_GE(freed.activation_cached_bytes, before.activation_cached_bytes + 2 * 1024 * 1024);
  Tensor again = gpu_->empty(DType::BF16, {1024, 1024});
  const CudaMemoryStats reused = cuda_memory_stats(*gpu_);
  EXPECT_EQ(reused.activation_cached_bytes + 2 * 1024 * 1024, freed.activation_cached_bytes);
}

}  // namespace

#else  // built without CUDA

TEST(CudaAvailability, BackendIsUnavailableWithoutCuda) {
  try {
    make_backend("cuda");
    ADD_FAILURE() << "make_backend(\"cuda\") succeeded in a build without CUDA";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
  }
}

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
