// A compiled PCRE2 pattern with Unicode semantics (UTF + UCP: \s, \w, \p{L}, case folding over all of
// Unicode; look-ahead such as \s+(?!\S)), JIT-compiled when the library supports it. Compiled once and shared:
// matching is const and thread-safe (each call owns its match data).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dlx {

class Regex {
 public:
  // `where` names the file and field in the error thrown for a pattern PCRE2 rejects.
  Regex(const std::string& pattern, const std::string& where);

  // Appends the [begin, end) byte ranges of the successive non-overlapping, non-empty leftmost matches in s.
  // After an empty match the search resumes one character later (as Oniguruma's find_iter, which HF uses).
  // s must be valid UTF-8 (it is not checked again here).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string where_;
};

}  // namespace dlx
