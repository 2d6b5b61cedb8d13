// The one layer routine's reports (ForwardObserver) and the weight bytes a model holds (held_weight_bytes).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"

namespace dlx {

namespace {

ModelConfig tiny_config() { return parse_model_config(random_preset_config("dream-tiny"), "dream-tiny"); }

}  // namespace

// A ragged pass of three slots: every op is reported once per layer over all tokens, attention and the cache
// write included (one Backend::attention_slots call a layer for all slots, its report carrying every slot's work);
// the linear observer sees every role's input with all T tokens. A one-slot cached pass reports the same kinds.
TEST(ForwardObserver, ReportsOpsOncePerPassAttentionIncluded) {
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  auto model = Model::load(dir);
  Tensor ids = TensorStore::open_file(dir + "/reference.safetensors")->get("input_ids");
  const int64_t L = ids.dim(1), layers = model->config().num_layers;
  auto row = [&](int64_t len) {
    Tensor t = Tensor::zeros(DType::I64, {1, len});
    for (int64_t l = 0; l < len; ++l) t.data<int64_t>()[l] = ids.data<int64_t>()[l % L];
    return t;
  };
  std::map<std::string, int> calls;
  std::map<std::string, double> flops, bytes;
  std::map<int, int64_t> linear_rows;  // role -> rows seen
  ForwardObserver obs;
  obs.op = [&](const ForwardOp& op) {
    ++calls[op.name];
    flops[op.name] += op.flops;
    bytes[op.name] += op.bytes;
  };
  obs.linear = [&](int64_t, LinearRole r, const Tensor& x) { linear_rows[int(r)] += x.dim(0); };
  model->set_observer(obs);
  KvCache ca, cb;
  std::vector<SlotPass> slots(3);
  slots[0].ids = row(L), slots[0].cache = &ca;
  slots[1].ids = row(L - 2), slots[1].cache = &cb, slots[1].logit_rows = {1, 4};
  slots[2].ids = row(L + 3);
  model->forward_slots(slots);
  model->set_observer({});
  const int64_t T = L + (L - 2) + (L + 3);
  EXPECT_EQ(calls["embedding"], 1);
  EXPECT_EQ(calls["attention"], layers);
  EXPECT_EQ(calls["kv_write"], layers);  // the two cached slots' windows, in one report
  EXPECT_EQ(calls["matmul_o"], layers);
  EXPECT_EQ(calls["matmul_qkv"], 3 * layers);  // q, k, v apart on the CPU
  // The first layer's input norm and the final norm; every other norm adds the residual before it (add_rmsnorm:
  // the attention output in each layer, the previous layer's MLP output from the second layer on), and the last
  // layer's MLP output is added alone.
  EXPECT_EQ(calls["rmsnorm"], 2);
  EXPECT_EQ(calls["add_rmsnorm"], 2 * layers - 1);
  EXPECT_EQ(calls["add"], 1);
  EXPECT_EQ(calls["gather_rows"], 1);
  EXPECT_EQ(calls["lm_head"], 1);
  EXPECT_EQ(calls.count("logits_to_host"), 0u);  // the logits stay in the backend's memory
  const ModelConfig& c = model->config();
  EXPECT_DOUBLE_EQ(flops["matmul_o"], 2.0 * double(T) * c.hidden_size * c.num_heads * c.head_dim * layers);
  // Attention: each slot's queries against its own keys (the cache's L, or the window itself).
  const double per_key = 4.0 * c.num_heads * c.head_dim * layers;
  EXPECT_DOUBLE_EQ(flops["attention"], per_key * double(L * L + (L - 2) * (L - 2) + (L + 3) * (L + 3)));
  // The cache write: keys and values of both cached windows (L and L - 2 rows), read and written, F32 on the CPU.
  const double kv_row = double(c.num_kv_heads * c.head_dim);
  EXPECT_DOUBLE_EQ(bytes["kv_write"], 2.0 * 2.0 * 4.0 * kv_row * double(L + L - 2) * double(layers));
  for (LinearRole r : kLinearRoles) EXPECT_EQ(linear_rows[int(r)], T * layers) << int(r);
  // A one-slot pass through a cache (forward_window): attention and the cache write once per layer too.
  calls.clear();
  model->set_observer(obs);
  KvCache solo;
  model->forward_window(ids, Tensor(), solo, 0, L);
  model->set_observer({});
  EXPECT_EQ(calls["attention"], layers);
  EXPECT_EQ(calls["kv_write"], layers);
  // Nothing is reported once the observer is cleared.
  calls.clear();
  model->forward(ids);
  EXPECT_TRUE(calls.empty());
}

// Measured from the tensors the model holds: on the CPU the dense weights are the checkpoint's own tensors, so
// the total equals the checkpoint's bytes; a random W4A16 model holds its packed linears as packed bytes.
TEST(HeldWeightBytes, MeasuresTheTensorsHeld) {
  auto loaded = Model::load(test::source_path("testdata/fixtures/dream_tiny"));
  const WeightBytes w = loaded->held_weight_bytes();
  EXPECT_EQ(w.packed_linears, 0u);
  EXPECT_EQ(w.total(), loaded->weight_bytes());
  const ModelConfig& c = loaded->config();
  EXPECT_EQ(w.embedding, size_t(c.vocab_size * c.hidden_size) * 2);  // bf16

  const ModelConfig tc = tiny_config();
  RandomModelOptions o;
  auto dense = Model::random(tc, o);
  o.quant = "w4a16";
  o.group_size = 32;
  auto packed = Model::random(tc, o);
  const WeightBytes d = dense->held_weight_bytes(), p = packed->held_weight_bytes();
  EXPECT_EQ(d.packed_linears, 0u);
  EXPECT_GT(p.packed_linears, 0u);
  EXPECT_EQ(p.embedding, d.embedding);
  EXPECT_EQ(p.head, size_t(tc.vocab_size * tc.hidden_size) * 2);
  size_t linear_bytes = 0;
  for (const auto& l : packed->layers())
    for (const auto& lin : l.linear) linear_bytes += lin->info().bytes;
  // Packed weights stay as made on the CPU (no layout change); their q/k/v biases count with them.
  EXPECT_EQ(p.packed_linears, linear_bytes);
  EXPECT_LT(p.packed_linears, d.dense);
}

// --quant-head: the LM head is a packed 4-bit linear (as a GPTQModel checkpoint with lm_head: true loads): its
// held bytes are the packed codes plus a scale and zero per group, and the forward runs it.
TEST(RandomModel, QuantizedHead) {
  const ModelConfig tc = tiny_config();
  RandomModelOptions o;
  o.quant = "w4a16";
  o.group_size = 32;
  auto bf16_head = Model::random(tc, o);
  o.quant_head = true;
  auto q_head = Model::random(tc, o);
  const int64_t V = tc.vocab_size, H = tc.hidden_size;
  const WeightBytes w = q_head->held_weight_bytes();
  EXPECT_EQ(w.head, size_t(V * H / 2 + 2 * V * (H / 32) * 4));  // 4-bit codes, F32 scale and zero per group
  EXPECT_EQ(bf16_head->held_weight_bytes().head, size_t(V * H * 2));
  EXPECT_EQ(w.packed_linears, bf16_head->held_weight_bytes().packed_linears);
  EXPECT_EQ(q_head->lm_head().info().bits, 4);
  EXPECT_EQ(q_head->lm_head().info().group_size, 32);
  // The forward's LM head op reads the packed head (its bytes: the R x H input, R x V logits, the head's weight).
  double head_bytes = -1;
  ForwardObserver obs;
  obs.op = [&](const ForwardOp& op) {
    if (std::string(op.name) == "lm_head") head_bytes = op.bytes;
  };
  q_head->set_observer(obs);
  Tensor ids = Tensor::zeros(DType::I64, {1, 6});
  for (int64_t l = 0; l < 6; ++l) ids.data<int64_t>()[l] = 3 + 7 * l;
  Tensor logits = q_head->forward(ids, {}, {2, 5});
  ASSERT_EQ(logits.shape(), (Shape{2, V}));
  EXPECT_DOUBLE_EQ(head_bytes, 4.0 * (2 * H + 2 * V) + double(w.head));  // F32 activations on the CPU
  for (int64_t i = 0; i < logits.numel(); ++i) ASSERT_TRUE(std::isfinite(logits.data<float>()[i])) << i;
  // Not the bf16 head's logits (other weights), and refused without packed linears.
  EXPECT_GT(test::rel_error(logits, bf16_head->forward(ids, {}, {2, 5})), 0.0);
  o.quant = "none";
  EXPECT_THROW(Model::random(tc, o), Error);
}

}  // namespace dlx
