// What `diffulex bench` and `bench decode` run on: a checkpoint directory, or random weights at a preset's shape
// (optionally with random packed 4-bit linears), on a device.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "model/model.h"

namespace dlx {

struct BenchSource {
  std::string device = "cpu", model, preset, quant = "none";
  int64_t layers = 0, group_size = 128;
  bool quant_head = false;
  bool embed_on_host = false;
};

// The model: Model::load of `model`, or Model::random at the preset's config (`layers` applied) with the quant,
// group_size and quant_head choices; `seed` seeds the random weights.
std::unique_ptr<Model> bench_model(const BenchSource& s, uint64_t seed);

// Model::held_weight_bytes as JSON: packed_linears, dense, embedding, head, total.
nlohmann::json weight_bytes_json(const WeightBytes& w);

}  // namespace dlx
