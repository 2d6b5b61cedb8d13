// Model::random: a model with random weights made in the backend's memory (no checkpoint on disk), for the
// benchmarks (bench, bench decode) at real model sizes. The generator: on the CPU four 16-bit uniforms from a
// splitmix64 hash of (seed, index), on CUDA the same kind of hash on the device.
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "formats/packed_linear.h"
#include "formats/quant_codes.h"
#include "formats/quant_config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/random_init.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx {

Tensor random_weight(Backend& be, Shape shape, uint64_t seed, float mean, float std) {
#ifdef DIFFULEX_HAVE_CUDA
  if (be.device() == Device::CUDA) return cuda_random_tensor(be, DType::BF16, std::move(shape), seed, mean, std);
#endif
  return be.upload(random_host_weight(std::move(shape), seed, mean, std));
}

Tensor random_host_weight(Shape shape, uint64_t seed, float mean, float std) {
  Tensor t = Tensor::zeros(DType::BF16, std::move(shape));
  uint16_t* p = t.data<uint16_t>();
  parallel_for(t.numel(), 1 << 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) {
      const uint64_t r = splitmix64(seed * 0x2545f4914f6cdd1dull + uint64_t(i));
      const float u = float(r & 0xffff) + float((r >> 16) & 0xffff) + float((r >> 32) & 0xffff) + float(r >> 48);
      p[i] = f32_to_bf16(mean + std * (u / 65536.0f - 2.0f) * 1.7320508f);
    }
  });
  return t;
}

PackedWeight random_packed_weight(int64_t N, int64_t K, const RandomPackedOptions& o, uint64_t seed) {
  const int64_t gs = resolve_group_size(o.group_size, K);
  check(o.bits == 2 || o.bits == 4 || o.bits == 8, "random packed weight: bits must be 2, 4 or 8 (got {})", o.bits);
  check(N > 0 && gs > 0 && K % gs == 0 && K % (32 / o.bits) == 0,
        "random packed weight: group size {} does not divide K = {} (or K is not a whole number of {}-bit words)", gs,
        K, o.bits);
  PackedWeight w;
  w.bits = o.bits, w.n = N, w.k = K, w.group_size = gs;
  w.qweight = Tensor::zeros(DType::I32, {N, w.words_per_row()});
  uint32_t* q = static_cast<uint32_t*>(w.qweight.data());
  parallel_for(w.qweight.numel(), 1 << 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) q[i] = uint32_t(splitmix64(seed * 0x2545f4914f6cdd1dull + uint64_t(i)));
  });
  const int64_t G = w.groups();
  const uint32_t levels = 1u << o.bits;
  w.scales = Tensor::zeros(DType::F32, {N, G});
  w.zeros = Tensor::zeros(DType::F32, {N, G});
  for (int64_t i = 0; i < N * G; ++i) {
    const uint64_t r = splitmix64(~seed + uint64_t(i));
    const float sc = o.scale_lo + (o.scale_hi - o.scale_lo) * float(r & 0xffff) / 65536.0f;
    const uint32_t zero = o.sym ? levels / 2 : uint32_t(r >> 32) % levels;
    w.scales.data<float>()[i] = sc;
    w.zeros.data<float>()[i] = float(zero) * sc;
  }
  if (o.act_order) {
    std::vector<int32_t> perm(static_cast<size_t>(K));
    std::iota(perm.begin(), perm.end(), 0);
    Rng rng(seed ^ 0x5851f42d4c957f2dull);  // the permutation's own stream
    for (int64_t i = K - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.next_u64() % uint64_t(i + 1))]);
    w.perm = Tensor::zeros(DType::I32, {K});
    std::copy(perm.begin(), perm.end(), w.perm.data<int32_t>());
  }
  return w;
}

std::unique_ptr<Model> Model::random(const ModelConfig& c, const RandomModelOptions& o) {
  const std::string& quant = o.quant;
  check(quant == "none" || quant == "w4a16", "random model: quant '{}' is not one of none, w4a16", quant);
  check(!o.quant_head || quant == "w4a16", "random model: a quantized LM head needs quant w4a16 (got '{}')", quant);
  check(c.num_layers > 0 && c.hidden_size > 0 && c.vocab_size > 0, "random model: empty config");
  std::unique_ptr<Model> m(new Model());
  m->dir_ = "random";
  m->cfg_ = c;
  m->backend_ = make_backend(o.device);
  Backend& be = *m->backend_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  uint64_t s = o.seed * 1000003;
  auto make = [&](Shape shape, float mean, float std) { return random_weight(be, std::move(shape), ++s, mean, std); };
  TensorStore no_files;  // the packed layers are made here, not read from a checkpoint
  const LoadContext ctx{no_files, nullptr, be};
  // A random packed 4-bit layer: the Linear the GPTQ / AWQ kinds build from a checkpoint (make_packed_linear).
  auto packed = [&](const LinearSpec& spec, Tensor bias) {
    LinearInfo info;
    info.kind = "random_w4a16";
    info.bits = 4;
    info.group_size = resolve_group_size(o.group_size, spec.in_features);
    RandomPackedOptions ro;
    ro.group_size = info.group_size;
    PackedWeight w = random_packed_weight(spec.out_features, spec.in_features, ro, ++s);
    return make_packed_linear(ctx, spec, std::move(w), std::move(bias), std::move(info));
  };
  m->embed_ = o.embed_on_host ? random_host_weight({c.vocab_size, H}, ++s, 0, 0.02f)
                              : make({c.vocab_size, H}, 0, 0.02f);
  const int64_t outs[7] = {c.num_heads * D, c.num_kv_heads * D, c.num_kv_heads * D, H, I, I, H};
  const int64_t ins[7] = {H, H, H, c.num_heads * D, H, H, I};
  // Dense linears fuse as Model::load fuses them: each fused weight is made whole and its parts are views.
  const DenseFusion fusion = quant == "w4a16" ? DenseFusion{} : m->dense_fusion();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = make({H}, 1.0f, 0.05f);
    lw.ffn_norm = make({H}, 1.0f, 0.05f);
    if (c.qk_norm) lw.q_norm = make({D}, 1.0f, 0.05f), lw.k_norm = make({D}, 1.0f, 0.05f);
    auto spec_of = [&](int i) {
      LinearSpec spec;
      spec.prefix = "random.layers." + std::to_string(l) + "." + std::to_string(i);
      spec.in_features = ins[i];
      spec.out_features = outs[i];
      spec.bias = c.qkv_bias && i < 3;
      return spec;
    };
    // The parts [first, first + count) of a fused weight (and bias) as views, at their row offsets.
    auto fuse = [&](Tensor& w, Tensor* bias, int first, int count) {
      int64_t rows = 0;
      for (int i = first; i < first + count; ++i) rows += outs[i];
      w = make({rows, ins[first]}, 0, 0.02f);
      if (bias) *bias = make({rows}, 0, 0.02f);
      for (int i = first, at = 0; i < first + count; at += int(outs[i]), ++i) {
        const Tensor wi = w.slice_rows(at, at + outs[i]), bi = bias ? bias->slice_rows(at, at + outs[i]) : Tensor();
        lw.linear[i] = make_dense_linear_view(spec_of(i), wi, wi, bi, bi);
      }
    };
    if (fusion.qkv) fuse(lw.qkv, c.qkv_bias ? &lw.qkv_bias : nullptr, int(LinearRole::Q), 3);
    if (fusion.gate_up) fuse(lw.gate_up, nullptr, int(LinearRole::Gate), 2);
    for (LinearRole r : kLinearRoles) {
      const int i = int(r);
      if (lw.linear[i]) continue;  // a view into a fused weight
      const LinearSpec spec = spec_of(i);
      if (quant == "w4a16") {
        // The bias stays on the host as a checkpoint's does (the packed layer uploads it; fusion stacks it there).
        lw.linear[i] = packed(spec, spec.bias ? random_host_weight({outs[i]}, ++s, 0, 0.02f) : Tensor());
      } else {
        Tensor bias = spec.bias ? make({outs[i]}, 0, 0.02f) : Tensor();
        lw.linear[i] = make_dense_linear(spec, make({outs[i], ins[i]}, 0, 0.02f), bias, be);
      }
    }
    m->fuse_packed(lw);
    m->layers_.push_back(std::move(lw));
  }
  m->final_norm_ = make({H}, 1.0f, 0.05f);
  LinearSpec hs;
  hs.prefix = "random.lm_head";
  hs.in_features = H;
  hs.out_features = c.vocab_size;
  m->lm_head_ = o.quant_head ? packed(hs, Tensor()) : make_dense_linear(hs, make({c.vocab_size, H}, 0, 0.02f), Tensor(), be);
  return m;
}

}  // namespace dlx
