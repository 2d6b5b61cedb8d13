// Writes a complete Hugging Face checkpoint directory atomically: everything goes into a hidden temporary
// directory beside the output (".<name>.tmp-<pid>-<n>") that is renamed to the output path only when complete,
// and removed on any error or cancellation, so a failed or interrupted run never leaves a half checkpoint.
//   config.json (given), quantize_config.json (optional), the metadata file (optional), model.safetensors or
//   shards model-0000i-of-0000N.safetensors + model.safetensors.index.json when the tensors exceed
//   max_shard_bytes, and every other top-level file of the source directory (tokenizer, generation config,
//   custom model code, ...) copied, except weights and the files written here.
//   With `quantized_file` set (the Diffulex layout, docs/QUANTIZER.md): the quantized tensors go into that one
//   file, the others into shards model-0000i-of-0000N.safetensors (one or more; never model.safetensors, which
//   Hugging Face loaders read in preference to an index), and model.safetensors.index.json maps all of them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace dlx {

struct CheckpointFiles {
  std::string source_dir;
  std::string output_dir;
  bool overwrite = false;
  int64_t max_shard_bytes = 5'000'000'000;
  nlohmann::json config;                 // config.json
  nlohmann::json quantize_config;        // quantize_config.json when not null
  std::string metadata_name;             // e.g. quantization_metadata_gptq.json ("" = none)
  nlohmann::json metadata;
  std::vector<std::pair<std::string, Tensor>> tensors;  // CPU tensors, in file order
  std::string quantized_file;            // e.g. model_quantized_gptq.safetensors ("" = everything in `tensors`)
  std::vector<std::pair<std::string, Tensor>> quantized_tensors;  // what goes into quantized_file
  std::function<bool()> cancelled;       // polled between files; true aborts with an Error
};

// Refuses an output that is the source, or an existing non-empty directory (or a file) unless overwrite.
// Called before the (long) quantization so that the user hears about it at once, and again by the writer.
void check_output_dir(const std::string& output_dir, const std::string& source_dir, bool overwrite);

void write_checkpoint(const CheckpointFiles& files);

}  // namespace dlx
