// The generation and continuous-batching flags shared by `generate` and `serve`.
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "model/model.h"
#include "server/generation_fields.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx::cli {

void GenerationFlags::add(CLI::App& cmd) {
  for (const GenerationField& f : generation_fields())
    std::visit([&](auto m) { given_.push_back(cmd.add_option(f.flags, parsed_.*m, f.help)); }, f.member);
}

GenerationOptions GenerationFlags::resolve(const std::string& model_dir) const {
  GenerationOptions o = generation_defaults(model_dir);
  const auto& fields = generation_fields();
  for (size_t i = 0; i < fields.size(); ++i)
    if (given_[i]->count() > 0) copy_field(fields[i], parsed_, o);
  return o;
}

}  // namespace dlx::cli
