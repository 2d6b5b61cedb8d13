#include "tokenizer/pre_tokenizer.h"

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace dlx {

namespace {

// The GPT-2 pre-tokenization regex that HF's ByteLevel pre-tokenizer uses when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

bool bool_field(const nlohmann::json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) fail("{}: field '{}' must be true or false", where, key);
  return j[key].get<bool>();
}

// The pattern of a Split step: {"Regex": "..."} as is, {"String": "..."} as a literal.
std::string split_pattern(const nlohmann::json& j, const std::string& where) {
  if (!j.contains("pattern") || !j["pattern"].is_object()) fail("{}: Split needs a 'pattern' object", where);
  const auto& p = j["pattern"];
  if (p.contains("Regex") && p["Regex"].is_string()) return p["Regex"].get<std::string>();
  if (p.contains("String") && p["String"].is_string()) {
    // \Q...\E quotes everything but a literal "\E", which is spliced in escaped.
    std::string lit = p["String"].get<std::string>(), out = "\\Q";
    for (size_t i = 0; i < lit.size(); ++i) {
      if (lit.compare(i, 2, "\\E") == 0) {
        out += "\\E\\\\E\\Q";
        ++i;
      } else {
        out += lit[i];
      }
    }
    return out + "\\E";
  }
  fail("{}: Split 'pattern' must be {{\"Regex\": ...}} or {{\"String\": ...}}", where);
}

}  // namespace

void PreTokenizer::parse_step(const nlohmann::json& j, const std::string& where, std::vector<Step>& steps) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail("{}: pre_tokenizer must be null or an object with a 'type'", where);
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      fail("{}: pre_tokenizer Sequence needs a 'pretokenizers' array", where);
    for (const auto& s : j["pretokenizers"]) parse_step(s, where, steps);
  } else if (type == "Split") {
    const std::string behavior = j.value("behavior", std::string("Isolated"));
    if (behavior != "Isolated") fail("{}: Split behavior '{}' is not supported (only Isolated)", where, behavior);
    if (bool_field(j, "invert", false, where)) fail("{}: Split with invert=true is not supported", where);
    steps.push_back(Step{Step::Split, Regex(split_pattern(j, where), where + ": Split pattern"), false});
  } else if (type == "ByteLevel") {
    Step s{Step::ByteLevel, std::nullopt, bool_field(j, "add_prefix_space", true, where)};
    if (bool_field(j, "use_regex", true, where)) s.regex.emplace(kGpt2Pattern, where + ": ByteLevel regex");
    steps.push_back(std::move(s));
  } else {
    fail("{}: unsupported pre_tokenizer type '{}' (supported: null, Split, ByteLevel, Sequence)", where, type);
  }
}

PreTokenizer PreTokenizer::parse(const nlohmann::json& j, const std::string& where) {
  PreTokenizer p;
  parse_step(j, where, p.steps_);
  return p;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string>& pieces) const {
  std::vector<std::string> cur, next;
  if (!text.empty()) cur.emplace_back(text);
  std::vector<std::pair<size_t, size_t>> matches;
  // Cuts s into its matches and the gaps between them, appending the non-empty pieces to `next`.
  auto isolate = [&](const Regex& re, std::string_view s) {
    matches.clear();
    re.find_all(s, matches);
    size_t prev = 0;
    for (auto [b, e] : matches) {
      if (b > prev) next.emplace_back(s.substr(prev, b - prev));
      next.emplace_back(s.substr(b, e - b));
      prev = e;
    }
    if (prev < s.size()) next.emplace_back(s.substr(prev));
  };
  for (const Step& step : steps_) {
    next.clear();
    for (std::string& piece : cur) {
      if (step.kind == Step::Split) {
        isolate(*step.regex, piece);
        continue;
      }
      if (step.add_prefix_space && piece[0] != ' ') piece.insert(piece.begin(), ' ');
      const size_t first = next.size();
      if (step.regex)
        isolate(*step.regex, piece);
      else
        next.push_back(std::move(piece));
      for (size_t k = first; k < next.size(); ++k) {
        std::string mapped;
        byte_level::encode(next[k], mapped);
        next[k] = std::move(mapped);
      }
    }
    cur.swap(next);
  }
  for (std::string& p : cur) pieces.push_back(std::move(p));
}

}  // namespace dlx
