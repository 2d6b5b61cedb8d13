// The OpenAI API's request and response shapes (docs/SERVER.md), apart from HTTP and threads: a
// /v1/completions or /v1/chat/completions body becomes the prompts and generation options the scheduler runs,
// and their results become the response. Every invalid input is an ApiError naming the field.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/generate.h"
#include "tokenizer/chat_template.h"

namespace dlx::server {

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = "")
      : std::runtime_error(message), status(status), param(std::move(param)) {}
  int status;
  std::string param;  // the offending field; "" for none (null)
};

// The error body; type is invalid_request_error below 500, server_error from 500.
nlohmann::json error_body(int status, const std::string& message, const std::string& param);

// What a request asks for: every prompt, `n` choices each. Choice j of prompt i is generated with `opts` and seed
// opts.seed + j, and is choices[i * n + j] of the response.
struct ApiRequest {
  bool chat = false;
  std::vector<std::vector<int64_t>> prompts;
  int64_t n = 1;
  GenerationOptions opts;
  std::vector<std::string> stop;  // the text ends before the first of these
  // "stream": true: server-sent events (server/stream.h); stream_options.include_usage: a last chunk with usage;
  // stream_options.canvas (diffulex's extension): a chunk per step with the positions it revealed.
  bool stream = false, include_usage = false, canvas = false;
  const char* prompt_param() const { return chat ? "messages" : "prompt"; }
};

// The request body as JSON: ApiError 400 when it is not JSON or nests more than kMaxJsonDepth levels deep.
nlohmann::json parse_body(std::string_view body);

// Parses a request body for the served model. `defaults` are the options a request does not set (validated by
// the caller, see options_error); `model_name` is the id a "model" field must match.
ApiRequest parse_request(const nlohmann::json& body, bool chat, Model& model, const Tokenizer& tok,
                         const GenerationOptions& defaults, const std::string& model_name);

// "" when generate() would accept `o` for this model, else the first error it would raise. Runs generate's own
// checks by starting a decode whose first model call is refused: no model pass runs.
std::string options_error(Model& model, const GenerationOptions& o);

// Prompt ids of a conversation: the tokenizer's chat template with the generation prompt (as
// format_prompt(..., chat = true) for one user turn), else ChatML when the vocabulary has <|im_start|> and
// <|im_end|>; ApiError otherwise.
std::vector<int64_t> chat_prompt(const Tokenizer& tok, const std::vector<ChatMessage>& messages);

struct Choice {
  std::string text;
  int64_t completion_tokens = 0;
  std::string finish_reason;  // "stop": a stop token or stop string ended it; "length": max_tokens did
};
// The result cut before the first stop string; completion_tokens counts the tokens generated up to the end of
// that stop string (all kept tokens without one).
Choice make_choice(const GenerationResult& r, const ApiRequest& req, const Tokenizer& tok);

// The response object ("text_completion" or "chat.completion") with usage.
nlohmann::json response_body(const ApiRequest& req, const std::vector<Choice>& choices, const std::string& id,
                             const std::string& model_name, int64_t created);

}  // namespace dlx::server
