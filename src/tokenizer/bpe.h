// The BPE model of tokenizer.json ("model": {"type": "BPE", "vocab": {token: id}, "merges": [...]}).
// A word (one pre-tokenized piece) starts as its characters; the adjacent pair with the lowest merge rank is
// merged first (leftmost on ties), again and again until no pair has a merge: HF's priority-queue algorithm,
// which gives the same result as re-scanning for the best pair each round but in O(n log n).
// Merges may be written "a b" (older files) or ["a", "b"] (newer ones). ignore_merges returns a word that is
// itself in the vocabulary as one token. A character missing from the vocabulary becomes its <0xXX> byte
// tokens (byte_fallback), else unk_token (fused when fuse_unk), else is dropped, as in HF.
// Results are cached per word (bounded; thread-safe).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dlx {

// Hash that lets unordered_map<std::string, ...> be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Entries of model.vocab and model.merges that the loader lifted out of the JSON document while parsing it
// (building them into the DOM first would double the load time of a 150k-token vocabulary).
struct BpeEntries {
  std::vector<std::pair<std::string, nlohmann::json>> vocab;  // token, id
  std::vector<nlohmann::json> merges;                         // "a b" or ["a", "b"]
};

class BpeModel {
 public:
  // j is the "model" object; the vocabulary is its "vocab" entries followed by lifted.vocab, the merges its
  // "merges" followed by lifted.merges. `where` names the file in errors.
  static BpeModel parse(const nlohmann::json& j, const BpeEntries& lifted, const std::string& where);
  static BpeModel parse(const nlohmann::json& j, const std::string& where) { return parse(j, {}, where); }
  BpeModel();  // empty: no vocabulary
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of one word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  int32_t token_to_id(std::string_view token) const;                              // -1 when absent
  const std::string* id_to_token(int32_t id) const;                               // nullptr when absent
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }  // max id + 1
  int32_t token_count() const { return static_cast<int32_t>(vocab_.size()); }     // vocabulary entries

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  StringIdMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  struct Cache;
  std::unique_ptr<Cache> cache_;
};

}  // namespace dlx
