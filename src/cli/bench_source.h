// What `diffulex bench` and `bench decode` run on: a checkpoint directory, or random weights at a preset's shape
// (optionally with random packed 4-bit linears), on a device.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "model/model.h"

namespace dlx::cli {

struct BenchSource {
  std::string device = "cpu", model, preset, quant = "none";
  int64_t layers = 0, group_size = 128;
  bool quant_head = false;
  bool embed_on_host = false;
};

// --device, --model, --random-config, --layers, --quant, --group-size, --quant-head, --embed-on-host into `s` (which must outlive
// the app).
void add_bench_source_options(CLI::App& cmd, BenchSource& s);

// Checks that exactly one of --model and --random-config is given and the quant value; `what` names the command.
void check_bench_source(const BenchSource& s, const std::string& what);

// The model: Model::load of --model, or Model::random at the preset's config (--layers applied) with the
// --quant, --group-size and --quant-head choices; `seed` seeds the random weights.
std::unique_ptr<Model> bench_model(const BenchSource& s, uint64_t seed);

// Model::held_weight_bytes as JSON: packed_linears, dense, embedding, head, total.
nlohmann::json weight_bytes_json(const WeightBytes& w);

}  // namespace dlx::cli
