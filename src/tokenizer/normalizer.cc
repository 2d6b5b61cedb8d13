#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>

#include "core/error.h"

namespace dlx {

namespace {

void parse_into(const nlohmann::json& j, const std::string& where, std::vector<int>& forms) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail("{}: normalizer must be null or an object with a 'type'", where);
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      fail("{}: normalizer Sequence needs a 'normalizers' array", where);
    for (const auto& n : j["normalizers"]) parse_into(n, where, forms);
  } else if (type == "NFC") {
    forms.push_back(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  } else if (type == "NFD") {
    forms.push_back(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  } else if (type == "NFKC") {
    forms.push_back(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  } else if (type == "NFKD") {
    forms.push_back(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  } else {
    fail("{}: unsupported normalizer type '{}' (supported: null, NFC, NFD, NFKC, NFKD, Sequence)", where, type);
  }
}

}  // namespace

Normalizer Normalizer::parse(const nlohmann::json& j, const std::string& where) {
  Normalizer n;
  parse_into(j, where, n.forms_);
  return n;
}

std::string Normalizer::apply(std::string_view s) const {
  std::string cur(s);
  if (forms_.empty()) return cur;
  // All four forms leave ASCII unchanged.
  bool ascii = true;
  for (unsigned char c : s) ascii = ascii && c < 0x80;
  if (ascii) return cur;
  for (int form : forms_) {
    utf8proc_uint8_t* dst = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(cur.data()), static_cast<utf8proc_ssize_t>(cur.size()),
                     &dst, static_cast<utf8proc_option_t>(form));
    if (n < 0) fail("normalizing text: {}", utf8proc_errmsg(n));
    cur.assign(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
    std::free(dst);
  }
  return cur;
}

}  // namespace dlx
