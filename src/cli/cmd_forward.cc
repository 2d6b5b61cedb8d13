// diffulex forward: raw logits of a batch of token ids (the golden-test entry point).
//   IDS.safetensors: input_ids I64 [B, L], optional attention_mask (I64/U8/I32 [B, L], 1 = real token)
//   OUT.safetensors: logits F32 [B, L, V] (raw model logits; no Dream shift)
#include <fmt/format.h>

#include <chrono>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace dlx::cli {

namespace {

Tensor read_key_mask(const TensorStore& in, const std::string& path, const Tensor& ids) {
  if (!in.has("attention_mask")) return {};
  Tensor m = in.get("attention_mask");
  check(m.shape() == ids.shape(), "{}: attention_mask has shape {}, expected {} like input_ids", path,
        shape_str(m.shape()), shape_str(ids.shape()));
  check(!is_float(m.dtype()), "{}: attention_mask must be an integer tensor, got {}", path, dtype_name(m.dtype()));
  Tensor out = Tensor::zeros(DType::U8, ids.shape());
  for (int64_t i = 0; i < m.numel(); ++i) {
    int64_t v = 0;
    switch (m.dtype()) {
      case DType::I64: v = m.data<int64_t>()[i]; break;
      case DType::I32: v = m.data<int32_t>()[i]; break;
      case DType::I8: v = m.data<int8_t>()[i]; break;
      default: v = m.data<uint8_t>()[i]; break;
    }
    check(v == 0 || v == 1, "{}: attention_mask values must be 0 or 1, found {}", path, v);
    out.data<uint8_t>()[i] = uint8_t(v);
  }
  return out;
}

}  // namespace

void add_forward_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("forward", "Run the model on token ids and write the raw logits");
  struct Args {
    std::string model, ids, output;
    int threads = 0;
    LoadOptions lo;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model,--model-path", a->model, "Checkpoint directory")->required();
  cmd->add_option("--input-ids", a->ids, "safetensors file with input_ids I64 [B, L] (optional attention_mask)")
      ->required();
  cmd->add_option("--output", a->output, "Output safetensors file (logits F32 [B, L, V])")->required();
  cmd->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  add_load_options(*cmd, a->lo);
  cmd->callback([a] {
    if (a->threads > 0) set_num_threads(a->threads);
    auto in = TensorStore::open_file(a->ids);
    check(in->has("input_ids"), "{}: no tensor named 'input_ids'", a->ids);
    Tensor ids = in->get("input_ids");
    check(ids.dtype() == DType::I64 && ids.rank() == 2, "{}: input_ids must be I64 [batch, length], got {} {}", a->ids,
          dtype_name(ids.dtype()), shape_str(ids.shape()));
    check(ids.numel() > 0, "{}: input_ids is empty ({})", a->ids, shape_str(ids.shape()));
    Tensor mask = read_key_mask(*in, a->ids, ids);
    auto t0 = std::chrono::steady_clock::now();
    auto model = Model::load(a->model, a->lo);
    auto t1 = std::chrono::steady_clock::now();
    Tensor logits = model->forward(ids, mask);
    auto t2 = std::chrono::steady_clock::now();
    write_safetensors(a->output, {{"logits", logits}});
    log_info("loaded in {:.3f}s, forward [{}x{}] in {:.3f}s on {}", std::chrono::duration<double>(t1 - t0).count(),
             ids.dim(0), ids.dim(1), std::chrono::duration<double>(t2 - t1).count(), model->backend().name());
  });
}

}  // namespace dlx::cli
