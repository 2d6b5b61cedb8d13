#include "tokenizer/tokenizer_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/json.h"

namespace dlx {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A special token entry: "..." / {"content": "..."} / null.
std::string token_string(const json& j, const char* key, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return "";
  const json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  fail("{}: field '{}' must be a string, {{\"content\": ...}} or null", file, key);
}

std::string chat_template_of(const json& j, const std::string& file) {
  if (!j.contains("chat_template") || j["chat_template"].is_null()) return "";
  const json& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    std::string first;
    for (const json& e : t) {
      if (!e.is_object() || !e.contains("template") || !e["template"].is_string())
        fail("{}: field 'chat_template' list items need a 'template' string", file);
      if (first.empty()) first = e["template"].get<std::string>();
      if (e.value("name", std::string()) == "default") return e["template"].get<std::string>();
    }
    return first;
  }
  fail("{}: field 'chat_template' must be a string or a list of {{name, template}}", file);
}

}  // namespace

TokenizerConfig load_tokenizer_config(const std::string& dir) {
  TokenizerConfig c;
  const std::string config_file = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string map_file = (fs::path(dir) / "special_tokens_map.json").string();
  struct Field {
    const char* key;
    std::string* value;
  };
  const Field fields[] = {{"bos_token", &c.bos_token},
                          {"eos_token", &c.eos_token},
                          {"pad_token", &c.pad_token},
                          {"mask_token", &c.mask_token},
                          {"unk_token", &c.unk_token}};
  if (fs::exists(config_file)) {
    const json j = read_json_file(config_file);
    if (!j.is_object()) fail("{}: must be a JSON object", config_file);
    for (const Field& f : fields) *f.value = token_string(j, f.key, config_file);
    c.chat_template = chat_template_of(j, config_file);
    if (j.contains("add_bos_token") && !j["add_bos_token"].is_null()) {
      if (!j["add_bos_token"].is_boolean()) fail("{}: field 'add_bos_token' must be true or false", config_file);
      c.add_bos_token = j["add_bos_token"].get<bool>();
    }
  }
  if (fs::exists(map_file)) {
    const json j = read_json_file(map_file);
    if (!j.is_object()) fail("{}: must be a JSON object", map_file);
    for (const Field& f : fields)
      if (f.value->empty()) *f.value = token_string(j, f.key, map_file);
  }
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  if (c.chat_template.empty() && fs::exists(jinja)) {
    std::ifstream in(jinja, std::ios::binary);
    if (!in) fail("{}: cannot open", jinja.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    c.chat_template = ss.str();
  }
  return c;
}

}  // namespace dlx
