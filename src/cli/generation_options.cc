// The generation and continuous-batching flags shared by `generate` and `serve`.
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "model/model.h"
#include "engine/generation_options.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx::cli {

void GenerationFlags::add(CLI::App& cmd) {
  const auto& fields = generation_fields();
  text_.resize(fields.size());
  for (size_t i = 0; i < fields.size(); ++i)
    std::visit(
        [&](auto m) {
          using T = std::remove_cvref_t<decltype(parsed_.*m)>;
          if constexpr (is_mode_enum_v<T>)  // spelled as text, parsed in resolve()
            given_.push_back(cmd.add_option(fields[i].flags, text_[i], fields[i].help));
          else
            given_.push_back(cmd.add_option(fields[i].flags, parsed_.*m, fields[i].help));
        },
        fields[i].member);
}

GenerationOptions GenerationFlags::resolve(const std::string& model_dir) const {
  GenerationOptions o = generation_defaults(model_dir);
  const auto& fields = generation_fields();
  for (size_t i = 0; i < fields.size(); ++i) {
    if (given_[i]->count() == 0) continue;
    std::visit(
        [&](auto m) {
          using T = std::remove_cvref_t<decltype(o.*m)>;
          if constexpr (is_mode_enum_v<T>)  // the error names the flag
            o.*m = parse_mode<T>(text_[i], given_[i]->get_name());
          else
            o.*m = parsed_.*m;
        },
        fields[i].member);
  }
  return o;
}

namespace {

// "1073741824", "512M", "4G", "4GiB", "auto" (or empty): bytes (0 for auto).
size_t parse_bytes(const std::string& text, const char* flag) {
  if (text.empty() || text == "auto") return 0;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    fail("{}: '{}' is not a size (e.g. 2G, 512M, 1000000, auto)", flag, text);
  }
  std::string unit = text.substr(used);
  double mul = 1;
  if (unit == "K" || unit == "KiB" || unit == "k") mul = 1024.0;
  else if (unit == "M" || unit == "MiB") mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mul = 1024.0 * 1024 * 1024;
  else check(unit.empty(), "{}: unknown unit in '{}' (K, M, G)", flag, text);
  check(v > 0, "{}: '{}' must be positive", flag, text);
  return size_t(v * mul);
}

}  // namespace

size_t kv_budget_bytes(Model& model, const std::string& text) {
  size_t bytes = parse_bytes(text, "--kv-budget");
#ifdef DIFFULEX_HAVE_CUDA
  if (bytes == 0 && model.backend().device() == Device::CUDA) {
    // auto: 70% of the device memory still free after loading the weights (the rest for activations).
    const CudaMemoryStats st = cuda_memory_stats(model.backend());
    bytes = size_t(double(st.device_total_bytes - st.device_used_bytes) * 0.7);
  }
#endif
  return bytes;
}

}  // namespace dlx::cli
