#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "core/error.h"

namespace dlx {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

struct MatchData {
  pcre2_match_data* p;
  explicit MatchData(const pcre2_code* code) : p(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (!p) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(p); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

}  // namespace

struct Regex::Code {
  pcre2_code* p = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(p); }
};

Regex::Regex(const std::string& pattern, const std::string& where) : where_(where) {
  auto code = std::make_shared<Code>();
  int err = 0;
  PCRE2_SIZE err_off = 0;
  code->p = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &err_off, nullptr);
  if (!code->p) fail("{}: bad regex at offset {}: {}", where, err_off, pcre2_message(err));
  code->jit = pcre2_jit_compile(code->p, PCRE2_JIT_COMPLETE) == 0;
  code_ = std::move(code);
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  MatchData md(code_->p);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos <= s.size()) {
    int rc = pcre2_match(code_->p, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md.p, nullptr);
    // The JIT's default stack is small; a pathological subject (very long runs under look-ahead) falls back
    // to the interpreter, whose memory lives on the heap.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(code_->p, subject, s.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.p, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) fail("{}: regex matching failed: {}", where_, pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.p);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {
      if (b >= s.size()) return;
      // Skip one whole UTF-8 character after an empty match.
      pos = b + 1;
      while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
}

}  // namespace dlx
