// The user-settable GenerationOptions fields in one table: `diffulex generate` and `diffulex serve` register
// their command-line flags from it and the HTTP API (server/api.h) reads the same fields from a request, so an
// option is named once. Defaults stay where they are: GenerationOptions and the checkpoint's
// generation_config.json (generation_defaults).
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "engine/generate.h"

namespace dlx {

struct GenerationField {
  using Member = std::variant<int64_t GenerationOptions::*, int GenerationOptions::*, float GenerationOptions::*,
                              uint64_t GenerationOptions::*, std::string GenerationOptions::*>;
  const char* flags;  // CLI11 option names, e.g. "--max-new-tokens,--gen-length"; the first is the canonical one
  const char* json;   // the request field, e.g. "max_tokens" (OpenAI's name where the API has one)
  Member member;
  const char* help;
};

const std::vector<GenerationField>& generation_fields();

// Copies field `f` from `src` to `dst`.
void copy_field(const GenerationField& f, const GenerationOptions& src, GenerationOptions& dst);

}  // namespace dlx
