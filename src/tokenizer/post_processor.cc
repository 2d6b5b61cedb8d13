#include "tokenizer/post_processor.h"

#include <sstream>

#include "core/error.h"

namespace dlx {

using json = nlohmann::json;

namespace {

// The ids of special token `name` from TemplateProcessing's "special_tokens" map.
std::vector<int32_t> special_ids(const json& specials, const std::string& name, const std::string& where) {
  if (!specials.is_object() || !specials.contains(name))
    fail("{}: post_processor template uses '{}' that is not in its special_tokens", where, name);
  const json& s = specials[name];
  if (!s.contains("ids") || !s["ids"].is_array())
    fail("{}: post_processor special_tokens['{}'] needs an 'ids' array", where, name);
  std::vector<int32_t> ids;
  for (const json& v : s["ids"]) {
    if (!v.is_number_integer()) fail("{}: post_processor special_tokens['{}'].ids must be integers", where, name);
    ids.push_back(v.get<int32_t>());
  }
  return ids;
}

// "$A", "$B", "$", "$0", "$A:1" are the sequence; anything else ("<s>", "<s>:1") a special token.
bool is_sequence_word(const std::string& w) { return !w.empty() && w[0] == '$'; }

}  // namespace

void PostProcessor::parse_into(const json& j, const std::string& where, std::vector<std::vector<Item>>& out) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail("{}: post_processor must be null or an object with a 'type'", where);
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      fail("{}: post_processor Sequence needs a 'processors' array", where);
    for (const json& p : j["processors"]) parse_into(p, where, out);
    return;
  }
  if (type != "TemplateProcessing")
    fail("{}: unsupported post_processor type '{}' (supported: null, ByteLevel, TemplateProcessing, Sequence)", where,
         type);
  const json specials = j.value("special_tokens", json::object());
  if (!j.contains("single")) fail("{}: TemplateProcessing needs a 'single' template", where);
  const json& single = j["single"];
  std::vector<Item> items;
  if (single.is_string()) {
    std::istringstream words(single.get<std::string>());
    for (std::string w; words >> w;) {
      if (is_sequence_word(w)) {
        items.push_back({true, {}});
      } else {
        items.push_back({false, special_ids(specials, w.substr(0, w.find(':')), where)});
      }
    }
  } else if (single.is_array()) {
    for (const json& piece : single) {
      if (piece.contains("Sequence")) {
        items.push_back({true, {}});
      } else if (piece.contains("SpecialToken") && piece["SpecialToken"].contains("id") &&
                 piece["SpecialToken"]["id"].is_string()) {
        items.push_back({false, special_ids(specials, piece["SpecialToken"]["id"].get<std::string>(), where)});
      } else {
        fail("{}: TemplateProcessing 'single' items must be Sequence or SpecialToken", where);
      }
    }
  } else {
    fail("{}: TemplateProcessing 'single' must be a string or an array", where);
  }
  out.push_back(std::move(items));
}

PostProcessor PostProcessor::parse(const json& j, const std::string& where) {
  PostProcessor p;
  parse_into(j, where, p.templates_);
  return p;
}

std::vector<int32_t> PostProcessor::apply(std::vector<int32_t> ids) const {
  for (const auto& items : templates_) {
    std::vector<int32_t> out;
    for (const Item& it : items) {
      if (it.is_sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    ids = std::move(out);
  }
  return ids;
}

}  // namespace dlx
