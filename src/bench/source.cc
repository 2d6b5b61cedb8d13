#include "bench/source.h"

#include "model/random_model.h"

namespace dlx {

std::unique_ptr<Model> bench_model(const BenchSource& s, uint64_t seed) {
  if (!s.model.empty()) {
    LoadOptions lo;
    lo.device = s.device;
    lo.embed_on_host = s.embed_on_host;
    return Model::load(s.model, lo);
  }
  nlohmann::json cj = random_preset_config(s.preset);
  if (s.layers > 0) cj[cj.contains("n_layers") ? "n_layers" : "num_hidden_layers"] = s.layers;
  RandomModelOptions o;
  o.device = s.device;
  o.seed = seed;
  o.quant = s.quant;
  o.group_size = s.group_size;
  o.quant_head = s.quant_head;
  o.embed_on_host = s.embed_on_host;
  return Model::random(parse_model_config(cj, "random preset " + s.preset), o);
}

nlohmann::json weight_bytes_json(const WeightBytes& w) {
  return {{"packed_linears", w.packed_linears}, {"dense", w.dense}, {"embedding", w.embedding}, {"head", w.head},
          {"total", w.total()}, {"host_embedding", w.host_embedding}};
}

}  // namespace dlx
