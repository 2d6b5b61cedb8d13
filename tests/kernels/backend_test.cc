// The backend as the door to the device: the host backend reports no device memory (so `--kv-budget auto` means
// no limit there) and prefers no fused linears. Backend::attention_slots (a ragged pass's attention in one call)
// against one call per slot, and its argument checks; copy_row_blocks (a batch's windows into its caches).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/backend.h"
#include "test_util.h"

namespace dlx {
namespace {

TEST(Backend, HostHasNoDeviceMemoryAndNoFusion) {
  auto be = make_backend("cpu");
  const Backend::MemoryInfo m = be->device_memory();
  EXPECT_EQ(m.free_bytes, 0u);
  EXPECT_EQ(m.total_bytes, 0u);
  const Backend::Fusion f = be->fusion();
  EXPECT_FALSE(f.gate_up);
  EXPECT_FALSE(f.qkv);
  EXPECT_FALSE(f.packed);
}

Tensor copy_of(const Tensor& t) { return Tensor::from_data(t.dtype(), t.shape(), t.data()); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// The test's oracle for attention_slots, written out with the one-slot ops: for each slot, its window rows of k
// and v copied into its cache at rows [begin, begin + width), then attention_block_causal of its queries over the
// cache; without a cache, over its own window rows. Writes the slots' caches and their rows of out.
void attention_slots_one_by_one(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const std::vector<AttnSlotRef>& slots, int64_t block, Tensor& out) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = k.dim(1), qrow = Hq * D, kvrow = Hkv * D;
  for (const AttnSlotRef& s : slots) {
    const int64_t W = s.width;
    const Tensor qs = q.reshape({T, qrow}).slice_rows(s.row, s.row + W).reshape({1, W, Hq, D});
    Tensor os = out.reshape({T, qrow}).slice_rows(s.row, s.row + W).reshape({1, W, Hq, D});
    const Tensor ks = k.reshape({T, kvrow}).slice_rows(s.row, s.row + W);
    const Tensor vs = v.reshape({T, kvrow}).slice_rows(s.row, s.row + W);
    const Tensor* mask = s.key_mask.defined() ? &s.key_mask : nullptr;
    if (!s.k_cache.defined()) {
      be.attention_block_causal(qs, ks.reshape({1, W, Hkv, D}), vs.reshape({1, W, Hkv, D}), mask, block, 0, os);
      continue;
    }
    const int64_t L = s.k_cache.dim(1);
    Tensor dk = s.k_cache.reshape({L, kvrow}).slice_rows(s.begin, s.begin + W);
    Tensor dv = s.v_cache.reshape({L, kvrow}).slice_rows(s.begin, s.begin + W);
    be.copy(ks, dk);
    be.copy(vs, dv);
    be.attention_block_causal(qs, s.k_cache, s.v_cache, mask, block, s.begin, os);
  }
}

// Slots of different widths, cache lengths, windows and masks (one without a cache), their rows in the pass in
// another order than the list and two rows of the pass in no slot: one attention_slots call writes the same
// caches and outputs, bit for bit, as each slot run alone (its window copied into its cache, then
// attention_block_causal over the cache, or over its own window without one); rows in no slot stay as they were.
TEST(AttentionSlots, EqualsOneCallPerSlot) {
  auto be = make_backend("cpu");
  std::mt19937_64 rng(15);
  const int64_t Hq = 4, Hkv = 2, D = 16;
  struct Case {
    int64_t W, L, begin;
    bool cache, mask;
  };
  const std::vector<Case> cases = {{5, 20, 8, true, true}, {3, 12, 0, true, false}, {7, 7, 0, false, true},
                                   {4, 30, 26, true, true}, {1, 9, 4, true, false}};
  for (int64_t block : {0, 4}) {
    SCOPED_TRACE("block " + std::to_string(block));
    int64_t T = 2;  // rows 0 and 1 belong to no slot
    for (const Case& c : cases) T += c.W;
    const Tensor q = test::random_tensor(DType::F32, {T, Hq, D}, rng), k = test::random_tensor(DType::F32, {T, Hkv, D}, rng),
                 v = test::random_tensor(DType::F32, {T, Hkv, D}, rng);
    std::vector<AttnSlotRef> slots, ref;  // the same slots over the call's caches and over copies for the reference
    int64_t row = T;
    for (const Case& c : cases) {  // the last case takes the pass's first rows after the gap
      AttnSlotRef s;
      row -= c.W;
      s.row = row, s.width = c.W;
      const int64_t keys = c.cache ? c.L : c.W;
      if (c.cache) {
        s.begin = c.begin;
        s.k_cache = test::random_tensor(DType::F32, {1, c.L, Hkv, D}, rng);
        s.v_cache = test::random_tensor(DType::F32, {1, c.L, Hkv, D}, rng);
      }
      if (c.mask) {
        s.key_mask = Tensor::zeros(DType::U8, {1, keys});
        for (int64_t j = 0; j < keys; ++j) s.key_mask.data<uint8_t>()[j] = uint8_t(j == 0 || rng() % 3 != 0);
      }
      AttnSlotRef r = s;
      if (c.cache) r.k_cache = copy_of(s.k_cache), r.v_cache = copy_of(s.v_cache);
      slots.push_back(s);
      ref.push_back(r);
    }
    ASSERT_EQ(row, 2);
    Tensor out = Tensor::zeros(DType::F32, {T, Hq, D});
    for (int64_t i = 0; i < out.numel(); ++i) out.data<float>()[i] = 7.0f;
    Tensor want = copy_of(out);
    be->attention_slots(q, k, v, slots, block, out);
    attention_slots_one_by_one(*be, q, k, v, ref, block, want);
    for (size_t i = 0; i < slots.size(); ++i) {
      if (!slots[i].k_cache.defined()) continue;
      EXPECT_TRUE(same_bytes(slots[i].k_cache, ref[i].k_cache)) << "slot " << i << " k_cache";
      EXPECT_TRUE(same_bytes(slots[i].v_cache, ref[i].v_cache)) << "slot " << i << " v_cache";
    }
    EXPECT_TRUE(same_bytes(out, want));
    EXPECT_EQ(out.data<float>()[0], 7.0f);
  }
}

// Each malformed argument is refused with an error naming the slot and the field.
TEST(AttentionSlots, RejectsBadSlotsNamingTheField) {
  auto be = make_backend("cpu");
  std::mt19937_64 rng(3);
  const int64_t T = 8, Hq = 2, Hkv = 1, D = 8, L = 12;
  const Tensor q = test::random_tensor(DType::F32, {T, Hq, D}, rng), k = test::random_tensor(DType::F32, {T, Hkv, D}, rng);
  Tensor out = Tensor::zeros(DType::F32, {T, Hq, D});
  const Tensor cache_a = Tensor::zeros(DType::F32, {1, L, Hkv, D}), cache_b = Tensor::zeros(DType::F32, {1, L, Hkv, D}),
               cache_c = Tensor::zeros(DType::F32, {1, L, Hkv, D});
  auto slot = [&](int64_t row, int64_t width, int64_t begin, const Tensor& kc, const Tensor& vc) {
    AttnSlotRef s;
    s.row = row, s.width = width, s.begin = begin, s.k_cache = kc, s.v_cache = vc;
    return s;
  };
  auto expect_error = [&](const std::vector<AttnSlotRef>& slots, const std::string& want) {
    try {
      be->attention_slots(q, k, k, slots, 0, out);
      ADD_FAILURE() << "accepted; expected an error with '" << want << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  expect_error({slot(0, 3, 0, cache_a, cache_b), slot(4, 4, 0, cache_c, Tensor())},
               "slot 1: k_cache and v_cache must both be set");
  expect_error({slot(6, 4, 0, Tensor(), Tensor())}, "slot 0: rows [6, 10) (row 6, width 4) are outside the 8 rows");
  expect_error({slot(-1, 2, 0, Tensor(), Tensor())}, "slot 0: rows [-1, 1)");
  expect_error({slot(0, 0, 0, Tensor(), Tensor())}, "slot 0: width 0 must be positive");
  expect_error({slot(4, 3, 0, Tensor(), Tensor()), slot(0, 5, 0, Tensor(), Tensor())},
               "slots 1 and 0 overlap: rows [0, 5) and [4, 7)");
  expect_error({slot(0, 2, 0, cache_a, cache_b), slot(2, 2, 3, cache_c, cache_a)},
               "slot 0's k_cache and slot 1's v_cache share memory");
  expect_error({slot(0, 2, 0, cache_a, cache_a)}, "slot 0's k_cache and slot 0's v_cache share memory");
  expect_error({slot(0, 4, 10, cache_a, cache_b)}, "slot 0: window [10, 14) (begin 10, width 4) is outside its cache's 12");
  expect_error({slot(0, 4, 2, Tensor(), Tensor())}, "slot 0: begin 2 without a cache");
  AttnSlotRef masked = slot(0, 4, 0, cache_a, cache_b);
  masked.key_mask = Tensor::zeros(DType::U8, {1, 4});  // one byte per window row, not per cached key
  expect_error({masked}, "slot 0: key_mask must be U8 with 12 entries");
  AttnSlotRef narrow = slot(0, 4, 0, Tensor::zeros(DType::F32, {1, L, 2, D}), Tensor::zeros(DType::F32, {1, L, 2, D}));
  expect_error({narrow}, "slot 0: k_cache [1, 12, 2, 8] / v_cache [1, 12, 2, 8] are not [1, L, 1, 8]");
  AttnSlotRef fp8 = slot(0, 4, 0, Tensor::zeros(DType::F8_E4M3, {1, L, Hkv, D}), Tensor::zeros(DType::F8_E4M3, {1, L, Hkv, D}));
  expect_error({fp8}, "slot 0: an F8_E4M3 cache needs k_scale and v_scale F32 [1, 12, 1]");
  // Disjoint windows and caches pass (the gap rows 2 and 3 belong to no slot).
  EXPECT_NO_THROW(be->attention_slots(q, k, k, {slot(4, 4, 8, cache_a, cache_b), slot(0, 2, 0, Tensor(), Tensor())}, 0, out));
}

// copy_row_blocks: block b of src lands at rows b * stride + offset of dst, every other row of dst keeps its value;
// bad shapes are errors naming the op and the numbers.
TEST(CopyRowBlocks, PlacesEachBlockAtItsStrideAndLeavesTheRest) {
  auto be = make_backend("cpu");
  std::mt19937_64 rng(5);
  const int64_t blocks = 3, n = 4, C = 5, stride = 10, offset = 6;
  const Tensor src = test::random_tensor(DType::F32, {blocks * n, C}, rng);
  Tensor dst = test::random_tensor(DType::F32, {blocks * stride, C}, rng);
  const Tensor before = copy_of(dst);
  be->copy_row_blocks(src, blocks, dst, stride, offset);
  for (int64_t r = 0; r < dst.dim(0); ++r) {
    const int64_t b = r / stride, i = r % stride - offset;
    const bool written = i >= 0 && i < n;
    for (int64_t c = 0; c < C; ++c)
      EXPECT_EQ(dst.data<float>()[r * C + c], written ? src.data<float>()[(b * n + i) * C + c] : before.data<float>()[r * C + c])
          << "row " << r << " column " << c;
  }
  auto expect_error = [&](const Tensor& s, int64_t bl, Tensor& d, int64_t st, int64_t off, const std::string& want) {
    try {
      be->copy_row_blocks(s, bl, d, st, off);
      ADD_FAILURE() << "accepted; expected an error with '" << want << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  expect_error(src, 3, dst, stride, 7, "3 blocks of 4 rows at stride 10 from row 7 do not fit dst's 30 rows");
  expect_error(src, 5, dst, stride, 0, "12 rows of src do not split into 5 blocks");
  expect_error(src, 3, dst, 3, 0, "3 blocks of 4 rows at stride 3");
  Tensor wide = Tensor::zeros(DType::F32, {30, 6});
  expect_error(src, 3, wide, stride, 0, "copy_row_blocks: src F32 [12, 5] and dst F32 [30, 6]");
}

}  // namespace
}  // namespace dlx
