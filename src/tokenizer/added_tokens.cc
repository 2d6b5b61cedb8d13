#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace dlx {

namespace {

// The character that ends just before byte offset `end` of valid UTF-8 text, and where it starts.
char32_t char_before(std::string_view s, size_t end, size_t* start) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  char32_t c = 0;
  utf8::decode(s, b, &c);
  *start = b;
  return c;
}

char32_t char_at(std::string_view s, size_t pos, size_t* len) {
  char32_t c = 0;
  *len = utf8::decode(s, pos, &c);
  if (*len == 0) *len = 1;
  return c;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns)
    : tokens_(std::move(tokens)) {
  nodes_.emplace_back();
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& p = patterns[t];
    if (p.empty()) continue;
    first_byte_[static_cast<unsigned char>(p[0])] = true;
    int32_t node = 0;
    for (unsigned char c : p) {
      auto& next = nodes_[node].next;
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, int32_t{-1}));
      if (it != next.end() && it->first == c) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(nodes_.size());
        next.insert(it, {c, child});
        nodes_.emplace_back();  // invalidates `next`; not used again below
        node = child;
      }
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);
  }
}

std::pair<int32_t, size_t> AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto& next = nodes_[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, int32_t{-1}));
    if (it == next.end() || it->first != c) break;
    node = it->second;
    if (nodes_[node].token >= 0) best = {nodes_[node].token, i + 1 - pos};
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSegment>& out) const {
  size_t done = 0;  // end of the text already assigned to segments
  size_t pos = 0;   // where the search for the next match starts
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [t, len] = longest_at(text, pos);
    if (t < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop;  // matches never overlap, even when one is skipped below
    const AddedToken& tok = tokens_[t];
    if (tok.single_word) {
      size_t at = 0, n = 0;
      const bool word_before = start > 0 && utf8::is_word_char(char_before(text, start, &at));
      const bool word_after = stop < text.size() && utf8::is_word_char(char_at(text, stop, &n));
      if (word_before || word_after) continue;
    }
    if (tok.lstrip) {
      size_t s = start, at = 0;
      while (s > 0 && utf8::is_whitespace(char_before(text, s, &at))) s = at;
      start = s;
    }
    if (tok.rstrip) {
      size_t n = 0;
      while (stop < text.size() && utf8::is_whitespace(char_at(text, stop, &n))) stop += n;
    }
    // Whitespace an earlier token already swallowed (rstrip) stays with that token.
    start = std::max(start, done);
    if (stop <= start) continue;
    if (done < start) out.push_back({done, start, -1});
    out.push_back({start, stop, tok.id});
    done = stop;
  }
  if (done < text.size()) out.push_back({done, text.size(), -1});
}

}  // namespace dlx
