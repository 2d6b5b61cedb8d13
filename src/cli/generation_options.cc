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

}  // namespace dlx::cli
