#include "server/stream.h"

#include <algorithm>

#include "core/log.h"

namespace dlx::server {

using nlohmann::json;

namespace {

// U+FFFD in UTF-8: the decoder's replacement for bytes that are not (yet) a whole character.
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// `text` without its trailing replacement characters: they may be the first bytes of a character whose last
// bytes come with the next token.
size_t complete_prefix(const std::string& text) {
  size_t n = text.size();
  while (n >= kReplacement.size() && std::string_view(text).substr(n - kReplacement.size()) == kReplacement)
    n -= kReplacement.size();
  return n;
}

}  // namespace

ChoiceStream::ChoiceStream(const ApiRequest& req, const Tokenizer& tok, std::vector<int64_t> stop_ids, int64_t mask_id)
    : req_(req), tok_(tok), stop_ids_(std::move(stop_ids)), mask_id_(mask_id) {}

// The finished choice: make_choice's text (the non-streamed answer) less what was sent.
StreamUpdate ChoiceStream::complete(const GenerationResult& r) {
  const Choice c = make_choice(r, req_, tok_);
  StreamUpdate u;
  u.finished = finished_ = true;
  u.finish_reason = c.finish_reason;
  u.completion_tokens = c.completion_tokens;
  if (c.text.compare(0, sent_.size(), sent_) != 0) {  // update() only sends text that is final: never happens
    log_warn("stream: the final text does not continue the text sent; sending the rest after it");
    u.text = c.text.size() > sent_.size() ? c.text.substr(sent_.size()) : "";
  } else {
    u.text = c.text.substr(sent_.size());
  }
  sent_ += u.text;
  return u;
}

StreamUpdate ChoiceStream::update(const std::vector<int64_t>& generated) {
  if (finished_) return {};
  // The final tokens: revealed ones from the start, up to the first stop token.
  size_t k = 0;
  while (k < generated.size() && generated[k] != mask_id_) ++k;
  size_t end = k;
  for (size_t i = 0; i < k; ++i)
    if (std::find(stop_ids_.begin(), stop_ids_.end(), generated[i]) != stop_ids_.end()) {
      end = i;
      break;
    }
  GenerationResult r;
  r.new_ids.assign(generated.begin(), generated.begin() + int64_t(end));
  r.text = tok_.decode(std::vector<int32_t>(r.new_ids.begin(), r.new_ids.end()), true);
  if (end < k || k == generated.size()) return complete(r);  // a stop token, or every token, is final

  // Not complete yet: send what no later token can change, and stop at a stop string that nothing can precede.
  const std::string_view text = std::string_view(r.text).substr(0, complete_prefix(r.text));
  size_t match = std::string::npos, partial = text.size();
  for (const std::string& s : req_.stop) {
    match = std::min(match, text.find(s));
    // The earliest start of a suffix of `text` that is a proper prefix of `s`: a match the next tokens may complete.
    for (size_t at = text.size() >= s.size() ? text.size() - s.size() + 1 : 0; at < text.size(); ++at)
      if (s.compare(0, text.size() - at, text.substr(at)) == 0) {
        partial = std::min(partial, at);
        break;
      }
  }
  if (match != std::string::npos && match <= partial) return complete(r);  // make_choice cuts at `match`
  const size_t send = std::min(match, partial);
  StreamUpdate u;
  if (send > sent_.size() && text.substr(0, sent_.size()) == sent_) u.text = std::string(text.substr(sent_.size(), send - sent_.size()));
  sent_ += u.text;
  return u;
}

StreamUpdate ChoiceStream::finish(const GenerationResult& result) {
  if (finished_) return {};
  return complete(result);
}

std::vector<RevealedToken> ChoiceStream::revealed(const std::vector<int64_t>& generated) {
  std::vector<RevealedToken> out;
  for (size_t i = 0; i < generated.size(); ++i)
    if (generated[i] != mask_id_ && (i >= previous_.size() || previous_[i] == mask_id_))
      out.push_back({int64_t(i), generated[i], tok_.decode({int32_t(generated[i])}, false)});
  previous_ = generated;
  return out;
}

std::string sse_event(const json& data) {
  return "data: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

json Chunks::chunk(json choice) const {
  json out = {{"id", id},
              {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", choice.is_null() ? json::array() : json::array({std::move(choice)})}};
  if (req.include_usage) out["usage"] = nullptr;
  return out;
}

json Chunks::role(size_t index) const {
  return chunk({{"index", index},
                {"delta", {{"role", "assistant"}, {"content", ""}}},
                {"logprobs", nullptr},
                {"finish_reason", nullptr}});
}

json Chunks::text(size_t index, const std::string& text) const {
  if (req.chat)
    return chunk({{"index", index}, {"delta", {{"content", text}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
  return chunk({{"index", index}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
}

json Chunks::finish(size_t index, const std::string& reason) const {
  if (req.chat)
    return chunk({{"index", index}, {"delta", json::object()}, {"logprobs", nullptr}, {"finish_reason", reason}});
  return chunk({{"index", index}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", reason}});
}

json Chunks::usage(int64_t prompt_tokens, int64_t completion_tokens) const {
  json out = chunk(nullptr);
  out["usage"] = {{"prompt_tokens", prompt_tokens},
                  {"completion_tokens", completion_tokens},
                  {"total_tokens", prompt_tokens + completion_tokens}};
  return out;
}

json Chunks::canvas(size_t index, int step, int steps, const std::vector<RevealedToken>& revealed,
                    int64_t masked) const {
  json out = text(index, "");
  json list = json::array();
  for (const RevealedToken& t : revealed) list.push_back({{"position", t.position}, {"token", t.token}, {"text", t.text}});
  out["canvas"] = {{"step", step}, {"steps", steps}, {"revealed", std::move(list)}, {"masked", masked}};
  return out;
}

}  // namespace dlx::server
