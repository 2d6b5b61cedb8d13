// Added tokens (tokenizer.json "added_tokens": special tokens like <|im_start|> and extra ones like <think>)
// are cut out of the text before normalization and pre-tokenization, as HF's AddedVocabulary does:
//  - matching is leftmost-longest over all contents at once (a trie walked from each position);
//  - single_word: a match touching a word character (\w) on either side is skipped;
//  - lstrip / rstrip: the token also swallows the whitespace before / after it;
//  - tokens with normalized=false match the raw text; those with normalized=true match the normalized text
//    (their content normalized the same way), so a tokenizer needs two matchers.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dlx {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A piece of text: either a matched added token (token >= 0) or plain text to tokenize further.
struct TextSegment {
  size_t begin = 0, end = 0;
  int32_t token = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is what tokens[i] matches (its content, or its normalized content).
  AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns);

  bool empty() const { return tokens_.empty(); }
  // Cuts `text` into segments covering it in order; plain segments are never empty.
  void split(std::string_view text, std::vector<TextSegment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t token = -1;                                   // index into tokens_ when a pattern ends here
  };
  // Longest pattern starting at text[pos]: {token index, length}, or {-1, 0}.
  std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace dlx
