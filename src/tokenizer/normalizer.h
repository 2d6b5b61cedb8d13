// The "normalizer" section of tokenizer.json: null, a Unicode normalization form (NFC, NFD, NFKC, NFKD) or a
// Sequence of those, applied in order with utf8proc. Byte-level BPE tokenizers (Qwen2/2.5/3) use NFC.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dlx {

class Normalizer {
 public:
  // `where` names the file and field in errors; unsupported types are rejected with the supported list.
  static Normalizer parse(const nlohmann::json& j, const std::string& where);

  bool identity() const { return forms_.empty(); }
  // s (valid UTF-8) normalized; a copy of s when there is nothing to do.
  std::string apply(std::string_view s) const;

 private:
  std::vector<int> forms_;  // utf8proc option flags, one per step
};

}  // namespace dlx
