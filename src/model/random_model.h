// Random-weight checkpoints at any size (presets at the real Dream-7B / LLaDA-8B shapes), written as a normal
// HF directory. Speed and memory can be measured without downloading weights; tests build tiny ones.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace dlx {

// config.json contents for a preset: "dream-7b", "llada-8b", "dream-tiny", "llada-tiny".
nlohmann::json random_preset_config(const std::string& preset);

// Writes config.json + model.safetensors (BF16, normal(0, std) linears, norms ~1) into `dir` (created).
// `num_layers` > 0 overrides the preset's layer count.
void write_random_checkpoint(const std::string& dir, nlohmann::json config, uint64_t seed, int64_t num_layers = 0);

}  // namespace dlx
