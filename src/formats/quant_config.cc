#include "formats/quant_config.h"

#include <filesystem>

#include "core/error.h"
#include "core/json.h"
#include "formats/quant_codes.h"

namespace dlx {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

QuantConfig parse(const json& q, const std::string& src) {
  if (!q.is_object()) fail("{}: quantization settings are not a JSON object", src);
  QuantConfig c;
  c.source = src;
  auto str = [&](const char* k, const std::string& def) {
    if (!q.contains(k) || q[k].is_null()) return def;
    if (!q[k].is_string()) fail("{}: field '{}' must be a string", src, k);
    return q[k].get<std::string>();
  };
  auto integer = [&](const char* k, int64_t def) {
    if (!q.contains(k) || q[k].is_null()) return def;
    if (!q[k].is_number_integer()) fail("{}: field '{}' must be an integer", src, k);
    return q[k].get<int64_t>();
  };
  auto boolean = [&](const char* k, bool def) {
    if (!q.contains(k) || q[k].is_null()) return def;
    if (!q[k].is_boolean()) fail("{}: field '{}' must be true or false", src, k);
    return q[k].get<bool>();
  };
  c.method = str("quant_method", q.contains("w_bit") ? "awq" : "gptq");
  c.bits = int(integer("bits", integer("w_bit", 4)));
  c.group_size = integer("group_size", integer("q_group_size", 128));
  if (c.group_size != kOneGroupPerRow && c.group_size <= 0)
    fail("{}: group_size {} is invalid (positive or -1)", src, c.group_size);
  if (c.method == "gptq") {
    c.sym = boolean("sym", true);
    c.desc_act = boolean("desc_act", false);
    c.checkpoint_format = str("checkpoint_format", "gptq");
    if (c.checkpoint_format != "gptq" && c.checkpoint_format != "gptq_v2")
      fail("{}: checkpoint_format '{}' is not supported (supported: gptq, gptq_v2)", src, c.checkpoint_format);
    if (c.bits != 4 && c.bits != 8) fail("{}: GPTQ with {} bits is not supported (supported: 4, 8)", src, c.bits);
  } else if (c.method == "awq") {
    c.zero_point = boolean("zero_point", true);
    c.version = str("version", "gemm");
    std::string v = c.version;
    for (auto& ch : v) ch = char(std::tolower(ch));
    if (v != "gemm")
      fail("{}: AWQ version '{}' is not supported (supported: gemm, the AutoAWQ default)", src, c.version);
    if (c.bits != 4) fail("{}: AWQ with {} bits is not supported (supported: 4)", src, c.bits);
  } else {
    fail("{}: quant_method '{}' is not supported (supported: gptq, awq)", src, c.method);
  }
  if (q.contains("modules_to_not_convert") && q["modules_to_not_convert"].is_array())
    for (const auto& m : q["modules_to_not_convert"])
      if (m.is_string()) c.modules_to_not_convert.push_back(m.get<std::string>());
  return c;
}

}  // namespace

std::unique_ptr<QuantConfig> load_quant_config(const std::string& model_dir) {
  fs::path cfg = fs::path(model_dir) / "config.json";
  if (fs::exists(cfg)) {
    json j = read_json_file(cfg.string());
    if (j.contains("quantization_config") && !j["quantization_config"].is_null())
      return std::make_unique<QuantConfig>(parse(j["quantization_config"], cfg.string() + " (quantization_config)"));
  }
  // AutoGPTQ writes quantize_config.json; older AutoAWQ releases wrote quant_config.json (w_bit, q_group_size).
  for (const char* name : {"quantize_config.json", "quant_config.json"}) {
    fs::path qc = fs::path(model_dir) / name;
    if (fs::exists(qc)) return std::make_unique<QuantConfig>(parse(read_json_file(qc.string()), qc.string()));
  }
  return nullptr;
}

}  // namespace dlx
