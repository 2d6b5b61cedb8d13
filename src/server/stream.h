// Streaming responses (docs/SERVER.md, "Streaming"), apart from HTTP and threads: which text of a choice is final
// while its request still runs (ChoiceStream), and the server-sent events of OpenAI's chunk format (Chunks).
//
// A diffusion step may reveal any masked position of the current block, and a revealed position never changes
// again (engine/sampling.h, StepCallback). So the final text of a choice is the decoded run of revealed tokens
// from the first generated position up to its first [MASK] (or its first stop token): with block-wise decoding
// it grows block by block, and it never holds a token a later step could change.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/api.h"

namespace dlx::server {

struct StreamUpdate {
  std::string text;            // newly final text, after the text sent before
  bool finished = false;       // the choice's text is complete: finish_reason and completion_tokens are set
  std::string finish_reason;   // as Choice::finish_reason
  int64_t completion_tokens = 0;
};

// A position revealed since the previous canvas (the canvas extension): its index among the generated tokens,
// its token id and that token's text alone.
struct RevealedToken {
  int64_t position = 0;
  int64_t token = 0;
  std::string text;
};

// One choice of a streamed request. Its concatenated updates are exactly make_choice's text for the request's
// result: stop strings are honoured across updates (text that may be the start of a stop string is held back
// until it is known not to be), as is a multi-byte character split between tokens (held back until complete).
class ChoiceStream {
 public:
  // stop_ids: the ids that end the text (stop_token_ids); mask_id: the model's [MASK].
  ChoiceStream(const ApiRequest& req, const Tokenizer& tok, std::vector<int64_t> stop_ids, int64_t mask_id);

  // The generated part of the canvas after a step (max_tokens ids, mask_id where not revealed yet). Once an
  // update is finished (a stop token or stop string is final, or every token is), the request's remaining steps
  // cannot change the text: the caller may cancel it. Nothing after a finished update.
  StreamUpdate update(const std::vector<int64_t>& generated);
  // The request's result: the text not sent yet (everything when no step was streamed), finished.
  StreamUpdate finish(const GenerationResult& result);
  // The positions revealed in `generated` that were masked in the previous call's (all revealed ones at first).
  std::vector<RevealedToken> revealed(const std::vector<int64_t>& generated);

  bool finished() const { return finished_; }
  const std::string& sent() const { return sent_; }

 private:
  StreamUpdate complete(const GenerationResult& r);

  const ApiRequest& req_;
  const Tokenizer& tok_;
  std::vector<int64_t> stop_ids_;
  int64_t mask_id_;
  std::string sent_;
  bool finished_ = false;
  std::vector<int64_t> previous_;  // for revealed()
};

// "data: <json>\n\n": one server-sent event.
std::string sse_event(const nlohmann::json& data);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// The chunk objects of one streamed response ("text_completion" for /v1/completions, "chat.completion.chunk"
// for chat), each choice by its index. With stream_options.include_usage every chunk carries "usage": null and
// usage() is the last one (no choices).
struct Chunks {
  const ApiRequest& req;
  std::string id, model;
  int64_t created = 0;

  // Chat only: the first chunk of a choice, {"delta": {"role": "assistant", "content": ""}}.
  nlohmann::json role(size_t index) const;
  nlohmann::json text(size_t index, const std::string& text) const;
  nlohmann::json finish(size_t index, const std::string& reason) const;
  nlohmann::json usage(int64_t prompt_tokens, int64_t completion_tokens) const;
  // The canvas extension (stream_options.canvas): an empty text chunk carrying
  // "canvas": {"step", "steps", "revealed": [{"position", "token", "text"}], "masked"}.
  nlohmann::json canvas(size_t index, int step, int steps, const std::vector<RevealedToken>& revealed,
                        int64_t masked) const;

 private:
  nlohmann::json chunk(nlohmann::json choice) const;
};

}  // namespace dlx::server
