#include "server/api.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.h"
#include "core/json.h"
#include "engine/generation_options.h"

namespace dlx::server {

using nlohmann::json;

namespace {
constexpr size_t kMaxBytesPerToken = 1024;  // the longest tokens of real vocabularies are a few hundred bytes
constexpr size_t kMaxChoices = 128;         // completions one request may ask for (prompts x n)
}  // namespace

json error_body(int status, const std::string& message, const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", status >= 500 ? "server_error" : "invalid_request_error"},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}}}};
}

json parse_body(std::string_view body) {
  try {
    return parse_json(body, "the request body");
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
}

std::string options_error(Model& model, const GenerationOptions& o) {
  struct Refused {};  // the first model call: every check has passed
  ForwardHooks hooks;
  hooks.forward = [](auto&&...) -> Tensor { throw Refused{}; };
  hooks.forward_window = [](auto&&...) -> Tensor { throw Refused{}; };
  try {
    generate_canvas(model, {{0}}, o, {}, &hooks);
  } catch (const Refused&) {
    return "";
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

// A JSON value into a GenerationOptions field of the matching type (integers range-checked).
void read_field(const GenerationField& f, const std::string& key, const json& v, GenerationOptions& o) {
  std::visit(
      [&](auto m) {
        using T = std::remove_cvref_t<decltype(o.*m)>;
        if constexpr (is_mode_enum_v<T>) {
          if (!v.is_string()) bad(key, fmt::format("{} must be a string", key));
          try {
            o.*m = parse_mode<T>(v.get<std::string>(), key);
          } catch (const Error& e) {
            bad(key, e.what());
          }
        } else if constexpr (std::is_floating_point_v<T>) {
          if (!v.is_number() || !std::isfinite(T(v.get<double>()))) bad(key, fmt::format("{} must be a number", key));
          o.*m = T(v.get<double>());
        } else {
          const bool ok = v.is_number_unsigned()  ? std::in_range<T>(v.get<uint64_t>())
                          : v.is_number_integer() ? std::in_range<T>(v.get<int64_t>())
                                                  : false;
          if (!ok)
            bad(key, fmt::format("{} must be an integer in [{}, {}]", key, std::numeric_limits<T>::min(),
                                 std::numeric_limits<T>::max()));
          o.*m = v.is_number_unsigned() ? T(v.get<uint64_t>()) : T(v.get<int64_t>());
        }
      },
      f.member);
}

// Fields of the OpenAI API this server does not implement are accepted only at their neutral value
// (null, false, 0, "", [] or {}), so that nothing a client asks for is silently ignored.
bool neutral(const json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_number() && v.get<double>() == 0) ||
         ((v.is_string() || v.is_array() || v.is_object()) && v.empty());
}

std::vector<int64_t> token_ids(const json& a, const std::string& param, const std::string& what) {
  std::vector<int64_t> ids;
  for (const json& x : a) {
    if (!x.is_number_integer()) bad(param, what);
    ids.push_back(x.get<int64_t>());
  }
  return ids;
}

// OpenAI's prompt forms: a string, a list of strings, a list of token ids, or a list of lists of token ids.
// Bytes of all strings in a prompt or message list (request bodies nest at most kMaxJsonDepth levels).
size_t text_bytes(const json& v) {
  if (v.is_string()) return v.get_ref<const std::string&>().size();
  size_t n = 0;
  if (v.is_array() || v.is_object())
    for (const json& e : v) n += text_bytes(e);
  return n;
}

std::vector<std::vector<int64_t>> completion_prompts(const json& p, const Tokenizer& tok) {
  const std::string what =
      "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids";
  if (p.is_string()) return {format_prompt(tok, p.get<std::string>(), false)};
  if (!p.is_array() || p.empty()) bad("prompt", what);
  if (p[0].is_number()) return {token_ids(p, "prompt", what)};
  std::vector<std::vector<int64_t>> out;
  for (const json& e : p) {
    if (e.is_string()) out.push_back(format_prompt(tok, e.get<std::string>(), false));
    else if (e.is_array()) out.push_back(token_ids(e, "prompt", what));
    else bad("prompt", what);
  }
  return out;
}

std::vector<ChatMessage> chat_messages(const json& m) {
  if (!m.is_array() || m.empty()) bad("messages", "messages must be a non-empty list of {role, content} objects");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < m.size(); ++i) {
    const json& e = m[i];
    if (!e.is_object() || !e.contains("role") || !e["role"].is_string())
      bad("messages", fmt::format("messages[{}] must be an object with a string role", i));
    ChatMessage msg{e["role"].get<std::string>(), ""};
    static const json no_content;
    const auto found = e.find("content");  // a reference: a copy of an untrusted tree would recurse
    const json& content = found == e.end() ? no_content : *found;
    const std::string what = fmt::format("messages[{}].content must be a string or a list of text parts", i);
    if (content.is_string()) {
      msg.content = content.get<std::string>();
    } else if (content.is_array()) {
      for (const json& part : content) {
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
          bad("messages", what);
        msg.content += part["text"].get<std::string>();
      }
    } else {
      bad("messages", what);
    }
    out.push_back(std::move(msg));
  }
  return out;
}

std::vector<std::string> stop_strings(const json& v) {
  const std::string what = "stop must be a string or a list of non-empty strings";
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (v.is_string()) out.push_back(v.get<std::string>());
  else if (v.is_array())
    for (const json& s : v) {
      if (!s.is_string()) bad("stop", what);
      out.push_back(s.get<std::string>());
    }
  else bad("stop", what);
  for (const std::string& s : out)
    if (s.empty()) bad("stop", what);
  return out;
}

// stream_options: {"include_usage": bool, "canvas": bool} (canvas: diffulex's extension), or null.
void read_stream_options(const json& v, ApiRequest& r) {
  if (v.is_null()) return;
  if (!v.is_object()) bad("stream_options", "stream_options must be an object");
  for (const auto& [key, x] : v.items()) {
    const std::string name = "stream_options." + key;
    if (key != "include_usage" && key != "canvas") {
      if (!neutral(x)) bad(name, fmt::format("{} is not supported by this server (include_usage, canvas)", name));
      continue;
    }
    if (!x.is_null() && !x.is_boolean()) bad(name, fmt::format("{} must be a boolean", name));
    (key == "include_usage" ? r.include_usage : r.canvas) = x.is_boolean() && x.get<bool>();
  }
}

// The given generation fields over the defaults, checked by generate's own rules. When they fail, the field
// named is the first without which the rest pass (the error is about it), else (several are wrong) the first
// that is invalid over the defaults alone.
void check_options(Model& model, const GenerationOptions& defaults, const ApiRequest& r,
                   const std::vector<std::pair<const GenerationField*, std::string>>& given) {
  const int64_t ctx = model.config().max_position_embeddings;
  for (const auto& [f, key] : given)  // before a canvas of max_tokens is made
    if (f->json == std::string("max_tokens") && ctx > 0 && r.opts.max_new_tokens >= ctx)
      bad(key, fmt::format("{} = {} leaves no room for a prompt in the model's context of {} tokens", key,
                           r.opts.max_new_tokens, ctx));
  const std::string err = options_error(model, r.opts);
  if (err.empty()) return;
  for (const auto& [f, key] : given) {
    GenerationOptions rest = r.opts;
    copy_field(*f, defaults, rest);
    if (options_error(model, rest).empty()) bad(key, fmt::format("invalid {}: {}", key, err));
  }
  for (const auto& [f, key] : given) {
    GenerationOptions one = defaults;
    copy_field(*f, r.opts, one);
    const std::string e = options_error(model, one);
    if (!e.empty()) bad(key, fmt::format("invalid {}: {}", key, e));
  }
  throw ApiError(400, err);
}

}  // namespace

ApiRequest parse_request(const json& body, bool chat, Model& model, const Tokenizer& tok,
                         const GenerationOptions& defaults, const std::string& model_name) {
  if (!body.is_object()) bad("", "the request body must be a JSON object");
  ApiRequest r;
  r.chat = chat;
  r.opts = defaults;
  const char* prompt_key = r.prompt_param();
  if (!body.contains(prompt_key)) bad(prompt_key, fmt::format("{} is required", prompt_key));

  std::vector<std::pair<const GenerationField*, std::string>> given;
  for (const auto& [key, v] : body.items()) {
    if (key == prompt_key || key == "user") continue;  // user: an end-user id, informational
    if (key == "model") {
      if (!v.is_string() || v.get<std::string>() != model_name)
        bad(key, fmt::format("model must be \"{}\", the model this server runs (GET /v1/models)", model_name));
    } else if (key == "n") {
      if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 128)
        bad(key, "n must be an integer in [1, 128]");
      r.n = v.get<int64_t>();
    } else if (key == "stop") {
      r.stop = stop_strings(v);
    } else if (key == "stream") {
      if (!v.is_null() && !v.is_boolean()) bad(key, "stream must be a boolean");
      r.stream = v.is_boolean() && v.get<bool>();
    } else if (key == "stream_options") {
      read_stream_options(v, r);
    } else if (key == "echo" && !chat) {
      if (!v.is_null() && !v.is_boolean()) bad(key, "echo must be a boolean");
      if (v.is_boolean() && v.get<bool>()) bad(key, "echo is not supported");
    } else {
      const std::string name = chat && key == "max_completion_tokens" ? "max_tokens" : key;
      const auto& fields = generation_fields();
      auto f = std::find_if(fields.begin(), fields.end(), [&](const GenerationField& g) { return g.json == name; });
      if (f != fields.end()) {
        if (v.is_null()) continue;
        read_field(*f, key, v, r.opts);
        given.emplace_back(&*f, key);
      } else if (!neutral(v)) {
        bad(key, fmt::format("{} is not supported by this server", key));
      }
    }
  }
  if (!r.stream && (r.include_usage || r.canvas))
    bad("stream_options", "stream_options is only allowed with \"stream\": true");
  check_options(model, defaults, r, given);

  // Bounded before any tokenizing: the text (no token is anywhere near kMaxBytesPerToken bytes) and the number of
  // generations one request asks for.
  const int64_t ctx_tokens = model.config().max_position_embeddings;
  const json& prompt = body[prompt_key];
  const size_t bytes = text_bytes(prompt);
  if (ctx_tokens > 0 && bytes > size_t(ctx_tokens) * kMaxBytesPerToken)
    bad(prompt_key, fmt::format("{} holds {} bytes of text, more than the model's context of {} tokens can hold",
                                prompt_key, bytes, ctx_tokens));
  const size_t prompt_count = !chat && prompt.is_array() && !prompt.empty() && !prompt[0].is_number() ? prompt.size() : 1;
  if (prompt_count * size_t(r.n) > kMaxChoices)
    bad(prompt_count > 1 ? "prompt" : "n",
        fmt::format("{} prompts x n = {} asks for {} completions; one request may ask for at most {}", prompt_count,
                    r.n, prompt_count * size_t(r.n), kMaxChoices));

  r.prompts = chat ? std::vector<std::vector<int64_t>>{chat_prompt(tok, chat_messages(body[prompt_key]))}
                   : completion_prompts(body[prompt_key], tok);
  const int64_t V = model.config().vocab_size, ctx = model.config().max_position_embeddings;
  for (size_t i = 0; i < r.prompts.size(); ++i) {
    const auto& p = r.prompts[i];
    const std::string which = r.prompts.size() > 1 ? fmt::format("{}[{}]", prompt_key, i) : prompt_key;
    if (p.empty()) bad(prompt_key, fmt::format("{} is empty (no tokens to condition on)", which));
    for (int64_t id : p)
      if (id < 0 || id >= V) bad(prompt_key, fmt::format("{}: token id {} is outside the vocabulary [0, {})", which, id, V));
    const int64_t P = int64_t(p.size());
    if (ctx > 0 && P + r.opts.max_new_tokens > ctx)
      bad(P >= ctx ? prompt_key : "max_tokens",
          fmt::format("{} is {} tokens; with max_tokens = {} that exceeds the model's context of {} tokens", which, P,
                      r.opts.max_new_tokens, ctx));
  }
  return r;
}

std::vector<int64_t> chat_prompt(const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  std::string text;
  if (!tok.chat_template().empty()) {
    const SpecialTokens& sp = tok.special();
    try {
      text = render_chat_template(tok.chat_template(), messages, true,
                                  {{"bos_token", sp.bos_token}, {"eos_token", sp.eos_token}});
    } catch (const Error& e) {
      bad("messages", fmt::format("the model's chat template cannot render these messages: {}", e.what()));
    }
  } else if (tok.token_to_id("<|im_start|>") >= 0 && tok.token_to_id("<|im_end|>") >= 0) {
    for (const ChatMessage& m : messages) text += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    text += "<|im_start|>assistant\n";
  } else {
    bad("messages",
        "this model's tokenizer has no chat template and no ChatML tokens (<|im_start|>, <|im_end|>); use "
        "/v1/completions with a plain prompt");
  }
  const std::vector<int32_t> ids = tok.encode(text, false);
  return {ids.begin(), ids.end()};
}

Choice make_choice(const GenerationResult& r, const ApiRequest& req, const Tokenizer& tok) {
  Choice c{r.text, int64_t(r.new_ids.size()),
           int64_t(r.new_ids.size()) < req.opts.max_new_tokens ? "stop" : "length"};
  size_t cut = std::string::npos, end = 0;
  for (const std::string& s : req.stop) {
    const size_t at = r.text.find(s);
    if (at < cut) cut = at, end = at + s.size();
  }
  if (cut == std::string::npos) return c;
  c.text.resize(cut);
  c.finish_reason = "stop";
  // The fewest tokens whose text reaches the end of the stop string.
  std::vector<int32_t> prefix;
  while (prefix.size() < r.new_ids.size() && tok.decode(prefix, true).size() < end)
    prefix.push_back(int32_t(r.new_ids[prefix.size()]));
  c.completion_tokens = int64_t(prefix.size());
  return c;
}

json response_body(const ApiRequest& req, const std::vector<Choice>& choices, const std::string& id,
                   const std::string& model_name, int64_t created) {
  json out = json::array();
  int64_t prompt_tokens = 0, completion_tokens = 0;
  for (const auto& p : req.prompts) prompt_tokens += int64_t(p.size());
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}};
    if (req.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
      choice["logprobs"] = nullptr;
    }
    out.push_back(std::move(choice));
    completion_tokens += c.completion_tokens;
  }
  return {{"id", id},
          {"object", req.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model_name},
          {"choices", out},
          {"usage",
           {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}}}};
}

}  // namespace dlx::server
