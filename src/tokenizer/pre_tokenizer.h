// The "pre_tokenizer" section of tokenizer.json: cuts normalized text into the words BPE works on.
// Supported steps, alone or in a Sequence (applied in order, each to every piece the previous one made):
//   Split     {pattern: {Regex|String}, behavior: "Isolated", invert: false}: every match and every gap
//             between matches becomes a piece (Qwen2/2.5/3, LLaDA, Llama-3 use this with their own regex);
//   ByteLevel {add_prefix_space, use_regex}: optionally prepends ' ' to a piece that lacks one, optionally
//             splits with the GPT-2 regex, then maps every byte to the byte-level alphabet (byte_level.h).
// Empty pieces are dropped, as in HF.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace dlx {

class PreTokenizer {
 public:
  static PreTokenizer parse(const nlohmann::json& j, const std::string& where);

  // Appends the pieces of `text` (valid UTF-8) to `pieces`.
  void split(std::string_view text, std::vector<std::string>& pieces) const;

 private:
  struct Step {
    enum Kind { Split, ByteLevel } kind;
    std::optional<Regex> regex;  // Split: its pattern; ByteLevel: the GPT-2 regex when use_regex
    bool add_prefix_space = false;
  };
  static void parse_step(const nlohmann::json& j, const std::string& where, std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace dlx
