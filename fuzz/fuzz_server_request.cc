// libFuzzer target: an HTTP request body for /v1/completions (first byte even) or /v1/chat/completions (odd),
// parsed for the repository's tiny KJV model (models/kjv-dream-tiny) as the server parses it; no generation runs.
#include "core/error.h"
#include "engine/generate.h"
#include "fuzz_common.h"
#include "model/model.h"
#include "server/api.h"
#include "tokenizer/tokenizer.h"

namespace {

struct Served {
  std::unique_ptr<dlx::Model> model;
  dlx::Tokenizer tok;
  dlx::GenerationOptions defaults;
};

const Served& served() {
  static const std::string dir = std::string(DIFFULEX_SOURCE_DIR) + "/models/kjv-dream-tiny";
  static Served s{dlx::Model::load(dir), dlx::Tokenizer::load(dir), dlx::generation_defaults(dir)};
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Served& s = served();
  const bool chat = data[0] & 1;
  try {
    const nlohmann::json body = dlx::server::parse_body(dlx::fuzz::as_text(data + 1, size - 1));
    (void)dlx::server::parse_request(body, chat, *s.model, s.tok, s.defaults, "kjv-dream-tiny");
  } catch (const dlx::server::ApiError&) {
  } catch (const dlx::Error&) {
  }
  return 0;
}
