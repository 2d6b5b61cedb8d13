// dlx::Tokenizer: HF tokenizer.json byte-level BPE (Qwen2/2.5/3 = Dream, LLaDA, and any tokenizer trained with
// HF `tokenizers` and a ByteLevel pre-tokenizer), giving the same ids as HF `tokenizers`.
//
// encode(text):
//   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest; lstrip/rstrip/
//      single_word as HF) -> added_tokens.h
//   2. every other piece is normalized (NFC for Qwen) -> normalizer.h, then added tokens with normalized=true
//      are cut out of it
//   3. the rest is pre-tokenized into words (Split regex and/or ByteLevel, bytes -> byte-level alphabet)
//      -> pre_tokenizer.h
//   4. each word goes through BPE -> bpe.h
//   5. with add_special, the post-processor's template (e.g. a BOS) wraps the ids -> post_processor.h
// decode(ids): every token's string is mapped back to bytes through the byte-level alphabet and the bytes
// are read as UTF-8 with invalid sequences replaced by U+FFFD, as HF's ByteLevel decoder does.
//
// tokenizer_config.json (and special_tokens_map.json) beside tokenizer.json, when present, give the
// bos/eos/pad/mask/unk token strings, resolved to ids here, the chat template text and add_bos_token.
// A Tokenizer is cheap to copy (shared, immutable state) and safe to use from several threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"

namespace dlx {

struct SpecialTokens {
  // -1 where the token is not configured (or its string is not in the vocabulary).
  int32_t bos = -1, eos = -1, pad = -1, mask = -1, unk = -1;
  std::string bos_token, eos_token, pad_token, mask_token, unk_token;
  bool add_bos_token = false;  // tokenizer_config.json's flag; the caller decides whether to prepend bos
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a directory holding one. Errors name the file and field.
  static Tokenizer load(const std::string& path);

  // Token ids of `text` (valid UTF-8, else an Error). add_special applies the post-processor template.
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // Text of `ids`; ids outside the vocabulary are skipped (as HF does); skip_special drops special tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when none
  std::string id_to_token(int32_t id) const;          // "" when none
  bool is_special(int32_t id) const;                  // an added token marked "special": true
  // Largest id + 1 over the model vocabulary and the added tokens (151669 for Qwen3; the embedding table
  // may be larger).
  int32_t vocab_size() const;

  const SpecialTokens& special() const;
  const std::string& chat_template() const;  // "" when tokenizer_config.json has none
  const std::vector<AddedToken>& added_tokens() const;
  const std::string& path() const;  // the tokenizer.json it came from

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace dlx
