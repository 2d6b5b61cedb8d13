// The "post_processor" section of tokenizer.json, applied when encoding with add_special=true: null and
// ByteLevel (offsets only) add nothing; TemplateProcessing's "single" template wraps the ids in its special
// tokens (e.g. "<|bos|> $A"); a Sequence applies its processors in order.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dlx {

class PostProcessor {
 public:
  static PostProcessor parse(const nlohmann::json& j, const std::string& where);
  std::vector<int32_t> apply(std::vector<int32_t> ids) const;

 private:
  // One template: items are either the sequence itself (ids empty, is_sequence) or fixed special ids.
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };
  static void parse_into(const nlohmann::json& j, const std::string& where, std::vector<std::vector<Item>>& out);
  std::vector<std::vector<Item>> templates_;
};

}  // namespace dlx
