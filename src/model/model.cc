#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/quant/packed_linear.h"
#include "kernels/quant/quant_config.h"

namespace dlx {

namespace {

Tensor load_vector(const TensorStore& store, const std::string& name, int64_t n) {
  Tensor t = store.get(name);
  check(is_float(t.dtype()) && t.dtype() != DType::F8_E4M3, "{}: tensor '{}' has dtype {}, expected BF16, F16 or F32",
        store.file_of(name), name, dtype_name(t.dtype()));
  check(t.shape() == Shape{n}, "{}: tensor '{}' has shape {}, expected [{}] from config.json", store.file_of(name), name,
        shape_str(t.shape()), n);
  return t;
}

Tensor load_matrix(const TensorStore& store, const std::string& name, int64_t rows, int64_t cols) {
  Tensor t = store.get(name);
  check(t.dtype() == DType::BF16 || t.dtype() == DType::F16 || t.dtype() == DType::F32,
        "{}: tensor '{}' has dtype {}, expected BF16, F16 or F32", store.file_of(name), name, dtype_name(t.dtype()));
  check(t.shape() == Shape{rows, cols}, "{}: tensor '{}' has shape {}, expected [{}, {}] from config.json",
        store.file_of(name), name, shape_str(t.shape()), rows, cols);
  return t;
}

// Whether `spec` loads as a dense bf16 layer (the kind load_linear would pick is the dense one and the weight is
// stored as BF16 [out, in]); a bias must be absent, unless `bias_ok`, and then present exactly when the
// architecture has one there, with `out` entries.
bool fusable_dense(const LoadContext& ctx, const LinearSpec& spec, const std::string& family, bool bias_ok = false) {
  if (!family.empty() && family != "bf16") return false;
  for (const LinearKind& k : linear_kinds()) {
    if (!k.matches(ctx, spec)) continue;
    if (k.name != "bf16") return false;
    const bool has_bias = ctx.store.has(spec.prefix + ".bias");
    if (has_bias && (!bias_ok || ctx.store.get(spec.prefix + ".bias").shape() != Shape{spec.out_features})) return false;
    if (!has_bias && spec.bias) return false;  // load_linear reports the missing bias
    const Tensor w = ctx.store.get(spec.prefix + ".weight");
    return w.dtype() == DType::BF16 && w.shape() == Shape{spec.out_features, spec.in_features};
  }
  return false;
}

void check_family(const std::string& f, const char* flag) {
  check(f.empty() || f == "bf16" || f == "gptq" || f == "awq", "{} must be bf16, gptq or awq (got '{}')", flag, f);
}

}  // namespace

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opts) {
  check_family(opts.attn_weight_family, "linear_attn_weight_dtype");
  check_family(opts.mlp_weight_family, "linear_mlp_weight_dtype");
  std::unique_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->cfg_ = load_model_config(dir);
  m->quant_ = load_quant_config(dir);
  m->store_ = TensorStore::open_dir(dir);
  m->backend_ = make_backend(opts.device);
  const ModelConfig& c = m->cfg_;
  const ArchNames& names = arch_names(c.arch);
  const TensorStore& store = *m->store_;
  Backend& be = *m->backend_;

  m->embed_ = be.upload(load_matrix(store, names.embed, c.vocab_size, c.hidden_size));
  m->final_norm_ = be.upload(load_vector(store, names.final_norm, c.hidden_size));

  check(opts.awq_order == "autoawq" || opts.awq_order == "plain",
        "awq order '{}' is not one of autoawq, plain", opts.awq_order);
  LoadContext ctx{store, m->quant_.get(), be, opts.dequant_cache, opts.awq_order == "plain"};
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  auto spec = [&](const std::string& prefix, LinearRole role) {
    LinearSpec s;
    s.prefix = prefix;
    switch (role) {
      case LinearRole::Q: s.in_features = H, s.out_features = c.num_heads * D, s.bias = c.qkv_bias; break;
      case LinearRole::K:
      case LinearRole::V: s.in_features = H, s.out_features = c.num_kv_heads * D, s.bias = c.qkv_bias; break;
      case LinearRole::O: s.in_features = c.num_heads * D, s.out_features = H; break;
      case LinearRole::Gate:
      case LinearRole::Up: s.in_features = H, s.out_features = I; break;
      case LinearRole::Down: s.in_features = I, s.out_features = H; break;
    }
    return s;
  };
  // On the GPU the dense bf16 gate and up weights of a layer become one weight (one GEMM of twice the width fills
  // the SMs better at diffusion's M of a few hundred tokens); DIFFULEX_FUSE_GATE_UP=0 keeps them apart.
  const char* fuse_env = std::getenv("DIFFULEX_FUSE_GATE_UP");
  const bool fuse_gate_up = be.device() == Device::CUDA && !(fuse_env && std::strcmp(fuse_env, "0") == 0);
  // Likewise q, k and v (one GEMM of width Nq + 2 Nkv), only with DIFFULEX_FUSE_QKV=1: on the H100 the GEMM gets
  // faster (Dream-7B B=1: 1.27 -> 0.71 ms) but the split into q, k, v costs it back (docs/PERFORMANCE.md).
  const char* fuse_qkv_env = std::getenv("DIFFULEX_FUSE_QKV");
  const bool fuse_qkv = be.device() == Device::CUDA && fuse_qkv_env && std::strcmp(fuse_qkv_env, "1") == 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeights lw;
    std::string p = fmt::format(fmt::runtime(names.layer_prefix), i);
    lw.attn_norm = be.upload(load_vector(store, p + names.attn_norm, H));
    lw.ffn_norm = be.upload(load_vector(store, p + names.ffn_norm, H));
    const bool fuse = fuse_gate_up && fusable_dense(ctx, spec(p + names.linear[int(LinearRole::Gate)], LinearRole::Gate),
                                                    opts.mlp_weight_family) &&
                      fusable_dense(ctx, spec(p + names.linear[int(LinearRole::Up)], LinearRole::Up),
                                    opts.mlp_weight_family);
    const LinearRole qkv_roles[3] = {LinearRole::Q, LinearRole::K, LinearRole::V};
    bool fuse3 = fuse_qkv;
    for (LinearRole r : qkv_roles)
      fuse3 = fuse3 && fusable_dense(ctx, spec(p + names.linear[int(r)], r), opts.attn_weight_family, true);
    if (fuse3) {  // all three with a bias of one dtype, or none
      const bool b0 = store.has(p + names.linear[0] + ".bias");
      for (LinearRole r : qkv_roles) {
        const std::string bn = p + names.linear[int(r)] + ".bias";
        fuse3 = fuse3 && store.has(bn) == b0 &&
                (!b0 || store.get(bn).dtype() == store.get(p + names.linear[0] + ".bias").dtype());
      }
    }
    for (LinearRole r : kLinearRoles) {
      if (fuse3 && is_attention_role(r) && r != LinearRole::O) continue;  // below
      if (fuse && (r == LinearRole::Gate || r == LinearRole::Up)) continue;  // below
      const std::string& fam = is_attention_role(r) ? opts.attn_weight_family : opts.mlp_weight_family;
      lw.linear[int(r)] = load_linear(ctx, spec(p + names.linear[int(r)], r), fam);
    }
    if (fuse3) {
      std::vector<Tensor> ws, bs;
      for (LinearRole r : qkv_roles) {
        const std::string pre = p + names.linear[int(r)];
        ws.push_back(store.get(pre + ".weight"));
        if (store.has(pre + ".bias")) bs.push_back(store.get(pre + ".bias"));
      }
      lw.qkv = be.upload(Tensor::stack_rows(ws));
      if (!bs.empty()) lw.qkv_bias = be.upload(Tensor::stack_rows(bs));
      int64_t row = 0;
      for (int i = 0; i < 3; ++i) {
        const LinearSpec sp = spec(p + names.linear[int(qkv_roles[i])], qkv_roles[i]);
        const int64_t n = sp.out_features;
        lw.linear[int(qkv_roles[i])] =
            make_dense_linear_view(sp, ws[size_t(i)], lw.qkv.slice_rows(row, row + n),
                                   bs.empty() ? Tensor() : bs[size_t(i)],
                                   bs.empty() ? Tensor() : lw.qkv_bias.slice_rows(row, row + n));
        row += n;
      }
    }
    if (fuse) {
      const LinearSpec gs = spec(p + names.linear[int(LinearRole::Gate)], LinearRole::Gate);
      const LinearSpec us = spec(p + names.linear[int(LinearRole::Up)], LinearRole::Up);
      const Tensor g = store.get(gs.prefix + ".weight"), u = store.get(us.prefix + ".weight");
      lw.gate_up = be.upload(Tensor::stack_rows({g, u}));
      lw.linear[int(LinearRole::Gate)] = make_dense_linear_view(gs, g, lw.gate_up.slice_rows(0, I));
      lw.linear[int(LinearRole::Up)] = make_dense_linear_view(us, u, lw.gate_up.slice_rows(I, 2 * I));
    }
    m->fuse_packed(lw);
    m->layers_.push_back(std::move(lw));
  }
  // The LM head loads as the checkpoint holds it: dense, or quantized (GPTQModel's `lm_head: true`) through the
  // same kinds table; a tied model without its own head reuses the embedding table.
  auto prefix_of = [](const std::string& weight) { return weight.substr(0, weight.size() - std::string(".weight").size()); };
  const bool head_stored = store.has(names.lm_head) || store.has(prefix_of(names.lm_head) + ".qweight");
  LinearSpec hs;
  hs.prefix = prefix_of(c.tie_word_embeddings && !head_stored ? names.embed : names.lm_head);
  hs.in_features = H;
  hs.out_features = c.vocab_size;
  m->lm_head_ = load_linear(ctx, hs);
  return m;
}

size_t Model::weight_bytes() const {
  size_t n = embed_.nbytes() + final_norm_.nbytes() + lm_head_->info().bytes;
  if (cfg_.tie_word_embeddings && lm_head_->spec().prefix + ".weight" == arch_names(cfg_.arch).embed) n -= embed_.nbytes();
  for (const auto& l : layers_) {
    n += l.attn_norm.nbytes() + l.ffn_norm.nbytes();
    for (const auto& lin : l.linear) n += lin->info().bytes;
  }
  return n;
}

Tensor Model::forward(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& logit_rows,
                      const Tensor& positions) {
  ForwardState st = begin_forward(ids, key_mask, positions);
  for (int64_t i = 0; i < cfg_.num_layers; ++i) run_layer(i, st);
  return finish_forward(st, logit_rows);
}

ForwardState Model::begin_forward(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache* cache,
                                  int64_t begin, int64_t end) {
  check(ids.dtype() == DType::I64 && ids.rank() == 2, "input_ids must be I64 [batch, length], got {} {}",
        dtype_name(ids.dtype()), shape_str(ids.shape()));
  const int64_t B = ids.dim(0), L = ids.dim(1);
  check(B > 0 && L > 0, "input_ids is empty ({})", shape_str(ids.shape()));
  check(!key_mask.defined() || (key_mask.dtype() == DType::U8 && key_mask.shape() == ids.shape()),
        "key mask must be U8 {}", shape_str(ids.shape()));
  if (end < 0) end = L;
  check(0 <= begin && begin < end && end <= L, "window [{}, {}) is outside the sequence length {}", begin, end, L);
  check(cache || (begin == 0 && end == L), "a window smaller than the sequence needs a KV cache");
  const int64_t W = end - begin;
  ForwardState st;
  st.B = B;
  st.L = L;
  st.begin = begin;
  st.end = end;
  st.key_mask = key_mask;
  st.cache = cache;
  // The window's ids and positions (host).
  Tensor wids = Tensor::zeros(DType::I64, {B, W});
  st.positions = Tensor::zeros(DType::I64, {B, W});
  check(!positions.defined() || (positions.dtype() == DType::I64 && positions.numel() == B * L),
        "positions must be I64 {}", shape_str(ids.shape()));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = begin; l < end; ++l) {
      int64_t id = ids.data<int64_t>()[b * L + l];
      check(id >= 0 && id < cfg_.vocab_size, "input_ids[{}][{}] = {} is outside the vocabulary [0, {})", b, l, id,
            cfg_.vocab_size);
      wids.data<int64_t>()[b * W + l - begin] = id;
      st.positions.data<int64_t>()[b * W + l - begin] = positions.defined() ? positions.data<int64_t>()[b * L + l] : l;
    }
  if (cache && (cache->B != B || cache->L != L || cache->empty())) {
    check(begin == 0 && end == L, "the KV cache is empty or sized for another batch: refresh it with the whole sequence");
    alloc_cache(*cache, B, L);
  }
  st.h = backend_->empty(backend_->act_dtype(), {B * W, cfg_.hidden_size});
  backend_->embedding(wids.reshape({B * W}), embed_, st.h);
  return st;
}

size_t kv_cache_bytes(const ModelConfig& c, DType act_dtype, int64_t rows, int64_t len, bool fp8) {
  const size_t per_layer = size_t(rows * len * c.num_kv_heads) * (fp8 ? size_t(c.head_dim) + 4 : size_t(c.head_dim) * dtype_size(act_dtype));
  return 2 * per_layer * size_t(c.num_layers);
}

size_t KvCache::bytes() const {
  size_t n = 0;
  for (const auto* list : {&k, &v, &k_scale, &v_scale})
    for (const Tensor& t : *list) n += t.nbytes();
  return n;
}

void Model::alloc_cache(KvCache& cache, int64_t B, int64_t L) {
  const DType at = cache.fp8 ? DType::F8_E4M3 : backend_->act_dtype();
  const int64_t Hkv = cfg_.num_kv_heads, D = cfg_.head_dim;
  cache.B = B;
  cache.L = L;
  cache.k.clear();
  cache.v.clear();
  cache.k_scale.clear();
  cache.v_scale.clear();
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    cache.k.push_back(backend_->empty(at, {B, L, Hkv, D}));
    cache.v.push_back(backend_->empty(at, {B, L, Hkv, D}));
    if (cache.fp8) {
      cache.k_scale.push_back(backend_->empty(DType::F32, {B, L, Hkv}));
      cache.v_scale.push_back(backend_->empty(DType::F32, {B, L, Hkv}));
    }
  }
}

Tensor Model::forward_window(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin, int64_t end,
                             const std::vector<int64_t>& logit_rows, const Tensor& positions) {
  Tensor out = backend_->to_host_f32(forward_window_device(ids, key_mask, cache, begin, end, logit_rows, positions));
  return logit_rows.empty() ? out.reshape({ids.dim(0), out.dim(0) / ids.dim(0), cfg_.vocab_size}) : out;
}

Tensor Model::forward_window_device(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin,
                                    int64_t end, const std::vector<int64_t>& logit_rows, const Tensor& positions) {
  ForwardState st = begin_forward(ids, key_mask, positions, &cache, begin, end);
  for (int64_t i = 0; i < cfg_.num_layers; ++i) run_layer(i, st);
  std::vector<int64_t> rows;
  for (int64_t r : logit_rows) {
    int64_t b = r / st.L, l = r % st.L;
    check(r >= 0 && b < st.B && l >= begin && l < end, "logit row {} is outside the window [{}, {})", r, begin, end);
    rows.push_back(b * st.width() + l - begin);
  }
  return finish_forward_device(st, rows);
}

Tensor Model::forward_device(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& logit_rows,
                             const Tensor& positions) {
  ForwardState st = begin_forward(ids, key_mask, positions);
  for (int64_t i = 0; i < cfg_.num_layers; ++i) run_layer(i, st);
  return finish_forward_device(st, logit_rows);
}

void Model::run_layer(int64_t layer, ForwardState& st, const LinearObserver& observer) {
  Backend& be = *backend_;
  const ModelConfig& c = cfg_;
  const DType at = be.act_dtype();
  const int64_t B = st.B, L = st.width(), T = B * L;  // L: tokens per row in this pass (the window)
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
  const float eps = float(c.rms_norm_eps);
  const LayerWeights& lw = layers_[size_t(layer)];
  Tensor& h = st.h;
  Tensor x = be.empty(at, {T, H}), tmp = be.empty(at, {T, H});
  Tensor q = be.empty(at, {B, L, Hq, D}), k = be.empty(at, {B, L, Hkv, D}), v = be.empty(at, {B, L, Hkv, D});
  Tensor att = be.empty(at, {B, L, Hq, D});
  Tensor gate = be.empty(at, {T, I});
  const Tensor* mask = st.key_mask.defined() ? &st.key_mask : nullptr;
  auto lin = [&](LinearRole r, const Tensor& in, Tensor& out) {
    if (observer) observer(layer, r, in);
    Tensor o2 = out.reshape({in.dim(0), out.numel() / in.dim(0)});
    lw.linear[int(r)]->forward(be, in, o2);
  };
  be.rmsnorm(h, lw.attn_norm, eps, x);
  if (lw.qkv.defined()) {
    // q, k and v as one GEMM over the fused weight, its output split into the three contiguous tensors.
    if (observer)
      for (LinearRole r : {LinearRole::Q, LinearRole::K, LinearRole::V}) observer(layer, r, x);
    Tensor qkv = be.empty(at, {T, (Hq + 2 * Hkv) * D});
    be.matmul(x, lw.qkv, lw.qkv_bias.defined() ? &lw.qkv_bias : nullptr, qkv);
    be.split_columns(qkv, {&q, &k, &v});
  } else if (lw.qkv_packed) {
    if (observer)
      for (LinearRole r : {LinearRole::Q, LinearRole::K, LinearRole::V}) observer(layer, r, x);
    Tensor qkv = be.empty(at, {T, (Hq + 2 * Hkv) * D});
    lw.qkv_packed->forward(be, x, qkv);
    be.split_columns(qkv, {&q, &k, &v});
  } else {
    lin(LinearRole::Q, x, q);
    lin(LinearRole::K, x, k);
    lin(LinearRole::V, x, v);
  }
  be.rope(q, st.positions, c.rope_theta);
  be.rope(k, st.positions, c.rope_theta);
  if (st.cache) {
    // Write the window's keys/values into the cache, then attend to every cached position.
    Tensor& ck = st.cache->k[size_t(layer)];
    Tensor& cv = st.cache->v[size_t(layer)];
    const int64_t full = st.L, row = Hkv * D;
    const bool fp8 = st.cache->fp8;
    for (int64_t b = 0; b < B; ++b) {
      Tensor dk = ck.reshape({B * full, row}).slice_rows(b * full + st.begin, b * full + st.end);
      Tensor dv = cv.reshape({B * full, row}).slice_rows(b * full + st.begin, b * full + st.end);
      Tensor sk = k.reshape({T, row}).slice_rows(b * L, (b + 1) * L), sv = v.reshape({T, row}).slice_rows(b * L, (b + 1) * L);
      if (fp8) {
        // fp8 cache: quantize the window's keys/values with per-(position, head) scales.
        auto srows = [&](Tensor& s) { return s.reshape({B * full, Hkv}).slice_rows(b * full + st.begin, b * full + st.end); };
        Tensor ks = srows(st.cache->k_scale[size_t(layer)]), vs = srows(st.cache->v_scale[size_t(layer)]);
        be.kv_quantize_fp8(sk, Hkv, dk, ks);
        be.kv_quantize_fp8(sv, Hkv, dv, vs);
      } else {
        be.copy(sk, dk);
        be.copy(sv, dv);
      }
    }
    if (fp8) {
      // Attention reads the dequantized cache (the window's own entries included, as later steps see them).
      Tensor kd = be.empty(at, {B, full, Hkv, D}), vd = be.empty(at, {B, full, Hkv, D});
      be.kv_dequantize_fp8(ck.reshape({B * full, row}), st.cache->k_scale[size_t(layer)], Hkv, kd);
      be.kv_dequantize_fp8(cv.reshape({B * full, row}), st.cache->v_scale[size_t(layer)], Hkv, vd);
      be.attention(q, kd, vd, mask, att);
    } else {
      be.attention(q, ck, cv, mask, att);
    }
  } else {
    be.attention(q, k, v, mask, att);
  }
  lin(LinearRole::O, att.reshape({T, Hq * D}), tmp);
  be.add(h, tmp);
  be.rmsnorm(h, lw.ffn_norm, eps, x);
  if (lw.gate_up.defined()) {
    // Gate and up as one GEMM over the fused weight, then SwiGLU on the two halves of each output row.
    if (observer) observer(layer, LinearRole::Gate, x), observer(layer, LinearRole::Up, x);
    Tensor gu = be.empty(at, {T, 2 * I});
    be.matmul(x, lw.gate_up, nullptr, gu);
    be.silu_mul_fused(gu, gate);
  } else if (lw.gate_up_packed) {
    if (observer) observer(layer, LinearRole::Gate, x), observer(layer, LinearRole::Up, x);
    Tensor gu = be.empty(at, {T, 2 * I});
    lw.gate_up_packed->forward(be, x, gu);
    be.silu_mul_fused(gu, gate);
  } else {
    Tensor up = be.empty(at, {T, I});
    lin(LinearRole::Gate, x, gate);
    lin(LinearRole::Up, x, up);
    be.silu_mul(gate, up, gate);
  }
  lin(LinearRole::Down, gate, tmp);
  be.add(h, tmp);
}

Tensor Model::finish_forward(ForwardState& st, const std::vector<int64_t>& logit_rows) {
  Tensor out = backend_->to_host_f32(finish_forward_device(st, logit_rows));
  return logit_rows.empty() ? out.reshape({st.B, st.width(), cfg_.vocab_size}) : out;
}

Tensor Model::finish_forward_device(ForwardState& st, const std::vector<int64_t>& logit_rows) {
  Backend& be = *backend_;
  const int64_t T = st.B * st.width(), H = cfg_.hidden_size;
  for (int64_t r : logit_rows) check(r >= 0 && r < T, "logit row {} is outside [0, {})", r, T);
  Tensor rows;
  if (!logit_rows.empty()) {
    // Only the rows that need logits go through the final norm and the LM head (the largest matmul at real
    // vocabulary sizes); they are picked on the backend. The norm is per row, so norm(h)[rows] = norm(h[rows]).
    Tensor sel = be.empty(be.act_dtype(), {int64_t(logit_rows.size()), H});
    be.gather_rows(st.h, logit_rows, sel);
    rows = be.empty(be.act_dtype(), {sel.dim(0), H});
    be.rmsnorm(sel, final_norm_, float(cfg_.rms_norm_eps), rows);
  } else {
    rows = be.empty(be.act_dtype(), {T, H});
    be.rmsnorm(st.h, final_norm_, float(cfg_.rms_norm_eps), rows);
  }
  Tensor logits = be.empty(be.act_dtype(), {rows.dim(0), cfg_.vocab_size});
  lm_head_->forward(be, rows, logits);
  return logits;
}

std::vector<Tensor> Model::forward_slots(std::vector<SlotPass>& slots) {
  Backend& be = *backend_;
  const ModelConfig& c = cfg_;
  const DType at = be.act_dtype();
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
  const float eps = float(c.rms_norm_eps);
  check(!slots.empty(), "forward_slots: no slots");
  struct Seg {
    int64_t L, begin, end, off;
  };
  std::vector<Seg> seg;
  int64_t T = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    SlotPass& p = slots[i];
    check(p.ids.dtype() == DType::I64 && p.ids.rank() == 2 && p.ids.dim(0) == 1 && p.ids.dim(1) > 0,
          "forward_slots: slot {} ids must be I64 [1, L], got {} {}", i, dtype_name(p.ids.dtype()), shape_str(p.ids.shape()));
    const int64_t L = p.ids.dim(1), end = p.end < 0 ? L : p.end;
    check(0 <= p.begin && p.begin < end && end <= L, "forward_slots: slot {} window [{}, {}) is outside its length {}", i,
          p.begin, end, L);
    check(p.cache || (p.begin == 0 && end == L), "forward_slots: slot {}: a window smaller than the sequence needs a KV cache", i);
    check(!p.key_mask.defined() || (p.key_mask.dtype() == DType::U8 && p.key_mask.numel() == L),
          "forward_slots: slot {} key mask must be U8 [1, {}]", i, L);
    check(!p.positions.defined() || (p.positions.dtype() == DType::I64 && p.positions.numel() == L),
          "forward_slots: slot {} positions must be I64 [1, {}]", i, L);
    if (p.cache && (p.cache->B != 1 || p.cache->L != L || p.cache->empty())) {
      check(p.begin == 0 && end == L, "forward_slots: slot {}: the KV cache is empty or sized for another sequence: refresh it with the whole sequence", i);
      alloc_cache(*p.cache, 1, L);
    }
    for (int64_t r : p.logit_rows)
      check(r >= p.begin && r < end, "forward_slots: slot {} logit row {} is outside the window [{}, {})", i, r, p.begin, end);
    seg.push_back({L, p.begin, end, T});
    T += end - p.begin;
  }
  // Every slot's window tokens, concatenated.
  Tensor ids = Tensor::zeros(DType::I64, {T}), pos = Tensor::zeros(DType::I64, {T});
  for (size_t i = 0; i < slots.size(); ++i) {
    const Seg& g = seg[i];
    for (int64_t l = g.begin; l < g.end; ++l) {
      const int64_t id = slots[i].ids.data<int64_t>()[l];
      check(id >= 0 && id < c.vocab_size, "forward_slots: slot {} input_ids[{}] = {} is outside the vocabulary [0, {})", i, l,
            id, c.vocab_size);
      ids.data<int64_t>()[g.off + l - g.begin] = id;
      pos.data<int64_t>()[g.off + l - g.begin] = slots[i].positions.defined() ? slots[i].positions.data<int64_t>()[l] : l;
    }
  }
  Tensor h = be.empty(at, {T, H});
  be.embedding(ids, embed_, h);
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& lw = layers_[size_t(layer)];
    Tensor x = be.empty(at, {T, H}), tmp = be.empty(at, {T, H});
    Tensor q = be.empty(at, {T, Hq * D}), k = be.empty(at, {T, Hkv * D}), v = be.empty(at, {T, Hkv * D});
    Tensor att = be.empty(at, {T, Hq * D});
    Tensor gate = be.empty(at, {T, I}), up = be.empty(at, {T, I});
    auto lin = [&](LinearRole r, const Tensor& in, Tensor& out) { lw.linear[int(r)]->forward(be, in, out); };
    be.rmsnorm(h, lw.attn_norm, eps, x);
    if (lw.qkv.defined() || lw.qkv_packed) {  // the fused weight of run_layer, split into q, k, v
      Tensor qkv = be.empty(at, {T, (Hq + 2 * Hkv) * D});
      if (lw.qkv_packed) lw.qkv_packed->forward(be, x, qkv);
      else be.matmul(x, lw.qkv, lw.qkv_bias.defined() ? &lw.qkv_bias : nullptr, qkv);
      be.split_columns(qkv, {&q, &k, &v});
    } else {
      lin(LinearRole::Q, x, q);
      lin(LinearRole::K, x, k);
      lin(LinearRole::V, x, v);
    }
    Tensor q3 = q.reshape({T, Hq, D}), k3 = k.reshape({T, Hkv, D});
    be.rope(q3, pos, c.rope_theta);
    be.rope(k3, pos, c.rope_theta);
    for (size_t i = 0; i < slots.size(); ++i) {
      const Seg& g = seg[i];
      const int64_t W = g.end - g.begin, row = Hkv * D;
      const Tensor* mask = slots[i].key_mask.defined() ? &slots[i].key_mask : nullptr;
      Tensor qs = q.slice_rows(g.off, g.off + W).reshape({1, W, Hq, D});
      Tensor as = att.slice_rows(g.off, g.off + W).reshape({1, W, Hq, D});
      Tensor ks = k.slice_rows(g.off, g.off + W), vs = v.slice_rows(g.off, g.off + W);
      KvCache* cache = slots[i].cache;
      if (!cache) {
        be.attention(qs, ks.reshape({1, W, Hkv, D}), vs.reshape({1, W, Hkv, D}), mask, as);
        continue;
      }
      // As run_layer with B = 1: write the window into the slot's cache, attend to all of it.
      Tensor& ck = cache->k[size_t(layer)];
      Tensor& cv = cache->v[size_t(layer)];
      Tensor dk = ck.reshape({g.L, row}).slice_rows(g.begin, g.end), dv = cv.reshape({g.L, row}).slice_rows(g.begin, g.end);
      if (cache->fp8) {
        Tensor& cks = cache->k_scale[size_t(layer)];
        Tensor& cvs = cache->v_scale[size_t(layer)];
        Tensor sk = cks.reshape({g.L, Hkv}).slice_rows(g.begin, g.end), sv = cvs.reshape({g.L, Hkv}).slice_rows(g.begin, g.end);
        be.kv_quantize_fp8(ks, Hkv, dk, sk);
        be.kv_quantize_fp8(vs, Hkv, dv, sv);
        Tensor kd = be.empty(at, {1, g.L, Hkv, D}), vd = be.empty(at, {1, g.L, Hkv, D});
        be.kv_dequantize_fp8(ck.reshape({g.L, row}), cks, Hkv, kd);
        be.kv_dequantize_fp8(cv.reshape({g.L, row}), cvs, Hkv, vd);
        be.attention(qs, kd, vd, mask, as);
      } else {
        be.copy(ks, dk);
        be.copy(vs, dv);
        be.attention(qs, ck, cv, mask, as);
      }
    }
    lin(LinearRole::O, att, tmp);
    be.add(h, tmp);
    be.rmsnorm(h, lw.ffn_norm, eps, x);
    if (lw.gate_up.defined() || lw.gate_up_packed) {
      Tensor gu = be.empty(at, {T, 2 * I});
      if (lw.gate_up_packed) lw.gate_up_packed->forward(be, x, gu);
      else be.matmul(x, lw.gate_up, nullptr, gu);
      be.silu_mul_fused(gu, gate);
    } else {
      lin(LinearRole::Gate, x, gate);
      lin(LinearRole::Up, x, up);
      be.silu_mul(gate, up, gate);
    }
    lin(LinearRole::Down, gate, tmp);
    be.add(h, tmp);
  }
  // Final norm, then the LM head on the rows asked for (each slot's whole window when it lists none).
  Tensor x = be.empty(at, {T, H});
  be.rmsnorm(h, final_norm_, eps, x);
  std::vector<int64_t> rows, counts;
  bool all = true;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Seg& g = seg[i];
    if (slots[i].logit_rows.empty()) {
      for (int64_t l = g.begin; l < g.end; ++l) rows.push_back(g.off + l - g.begin);
      counts.push_back(g.end - g.begin);
    } else {
      all = false;
      for (int64_t r : slots[i].logit_rows) rows.push_back(g.off + r - g.begin);
      counts.push_back(int64_t(slots[i].logit_rows.size()));
    }
  }
  Tensor sel = x;
  if (!all) {
    sel = be.empty(at, {int64_t(rows.size()), H});
    be.gather_rows(x, rows, sel);
  }
  Tensor logits = be.empty(at, {sel.dim(0), c.vocab_size});
  lm_head_->forward(be, sel, logits);
  // Each slot's rows, left in the backend's memory (views of the one logits tensor).
  std::vector<Tensor> out;
  int64_t r0 = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    out.push_back(logits.slice_rows(r0, r0 + counts[i]));
    r0 += counts[i];
  }
  return out;
}

void Model::fuse_packed(LayerWeights& lw) {
  const char* env = std::getenv("DIFFULEX_FUSE_PACKED");
  if (backend_->device() != Device::CUDA || (env && std::strcmp(env, "0") == 0)) return;
  auto& L = lw.linear;
  if (!lw.qkv.defined())
    lw.qkv_packed = fuse_packed_linears({&L[int(LinearRole::Q)], &L[int(LinearRole::K)], &L[int(LinearRole::V)]},
                                        *backend_);
  if (!lw.gate_up.defined())
    lw.gate_up_packed = fuse_packed_linears({&L[int(LinearRole::Gate)], &L[int(LinearRole::Up)]}, *backend_);
}

void Model::replace_linear(int64_t layer, LinearRole role, std::unique_ptr<Linear> linear) {
  check(layer >= 0 && layer < int64_t(layers_.size()), "replace_linear: layer {} out of range", layer);
  auto& slot = layers_[size_t(layer)].linear[int(role)];
  check(linear->in_features() == slot->in_features() && linear->out_features() == slot->out_features(),
        "replace_linear: shape mismatch for '{}'", slot->spec().prefix);
  slot = std::move(linear);
  LayerWeights& lw = layers_[size_t(layer)];
  if (role == LinearRole::Gate || role == LinearRole::Up) lw.gate_up = Tensor(), lw.gate_up_packed.reset();  // unfused now
  if (role == LinearRole::Q || role == LinearRole::K || role == LinearRole::V)
    lw.qkv = lw.qkv_bias = Tensor(), lw.qkv_packed.reset();
}

}  // namespace dlx
