#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_config.h"
#include "tokenizer/utf8.h"

namespace dlx {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct Tokenizer::Impl {
  std::string path;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  PostProcessor post_processor;
  bool byte_level_decoder = false;  // else HF's default: tokens joined with spaces

  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index into `added`
  StringIdMap added_by_content;
  AddedTokenMatcher raw_matcher;         // normalized=false tokens, on the raw text
  AddedTokenMatcher normalized_matcher;  // normalized=true tokens, on normalized text

  SpecialTokens special;
  std::string chat_template;
  int32_t vocab_size = 0;

  // Registers the file's added tokens and builds the two matchers.
  void add_tokens(std::vector<AddedToken> tokens, const std::string& fname);

  const AddedToken* added_token(int32_t id) const {
    auto it = added_by_id.find(id);
    return it == added_by_id.end() ? nullptr : &added[it->second];
  }
};

namespace {

bool flag(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) fail("{}: field '{}' must be true or false", where, key);
  return j[key].get<bool>();
}

std::vector<AddedToken> parse_added_tokens(const json& root, const std::string& file) {
  std::vector<AddedToken> out;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return out;
  const json& arr = root["added_tokens"];
  if (!arr.is_array()) fail("{}: field 'added_tokens' must be an array", file);
  for (size_t i = 0; i < arr.size(); ++i) {
    const json& t = arr[i];
    const std::string where = fmt::format("{}: added_tokens[{}]", file, i);
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || t["id"].get<int64_t>() < 0 ||
        t["id"].get<int64_t>() > INT32_MAX)
      fail("{}: needs a non-negative integer 'id'", where);
    if (!t.contains("content") || !t["content"].is_string()) fail("{}: needs a string 'content'", where);
    AddedToken a;
    a.id = t["id"].get<int32_t>();
    a.content = t["content"].get<std::string>();
    if (a.content.empty()) continue;  // HF ignores empty added tokens
    a.special = flag(t, "special", false, where);
    a.lstrip = flag(t, "lstrip", false, where);
    a.rstrip = flag(t, "rstrip", false, where);
    a.single_word = flag(t, "single_word", false, where);
    a.normalized = flag(t, "normalized", !a.special, where);
    out.push_back(std::move(a));
  }
  return out;
}

bool parse_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return false;
  const std::string type =
      j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
  if (type == "ByteLevel") return true;
  if (type == "Sequence" && j.contains("decoders") && j["decoders"].is_array() && j["decoders"].size() == 1)
    return parse_decoder(j["decoders"][0], where);
  fail("{}: unsupported decoder type '{}' (supported: null, ByteLevel)", where, type);
}

// A special token string from tokenizer_config.json resolved to its id (-1, with a warning, when unknown).
int32_t resolve(const Tokenizer& t, const std::string& token, const char* field, const std::string& dir) {
  if (token.empty()) return -1;
  const int32_t id = t.token_to_id(token);
  if (id < 0)
    log_warn("{}: {} '{}' is not in the vocabulary", (fs::path(dir) / "tokenizer_config.json").string(), field, token);
  return id;
}

// Parses tokenizer.json with model.vocab and model.merges moved straight into `lifted` instead of the
// document (their entries are most of the file).
json read_lifting_bpe(const std::string& file, BpeEntries& lifted) {
  std::string key1, key2, vocab_key;  // the current keys at depths 1 and 2, and in model.vocab
  return read_json_file(file, [&](int depth, json::parse_event_t ev, json& parsed) {
    const bool in_model = depth == 3 && key1 == "model";
    if (ev == json::parse_event_t::key) {
      std::string& k = depth == 1 ? key1 : depth == 2 ? key2 : vocab_key;
      if (depth <= 3) k = std::move(parsed.get_ref<std::string&>());
      return !(in_model && key2 == "vocab");  // a kept key would leave a "discarded" entry behind
    }
    if (!in_model) return true;
    if (key2 == "vocab" && ev == json::parse_event_t::value) {
      lifted.vocab.emplace_back(std::move(vocab_key), std::move(parsed));
      return false;
    }
    if (key2 == "merges" && (ev == json::parse_event_t::value || ev == json::parse_event_t::array_end)) {
      lifted.merges.push_back(std::move(parsed));
      return false;
    }
    return true;
  });
}

}  // namespace

// Ids of added tokens are assigned the way HF's AddedVocabulary does when it reads the file: a token in the
// model vocabulary keeps that id, any other gets the next free id after the model vocabulary (its number
// of entries) or after the largest added id. For a consistent file this is the id written in it.
// A normalized token's content is stored normalized (HF decodes it so).
void Tokenizer::Impl::add_tokens(std::vector<AddedToken> tokens, const std::string& fname) {
  int32_t max_added = -1;
  int moved = 0;  // tokens whose id differs from the file's (warned about once)
  const int32_t model_count = model.token_count();
  for (AddedToken& a : tokens) {
    if (added_by_content.count(a.content)) continue;
    const std::string file_content = a.content;
    const int32_t file_id = a.id;
    if (a.normalized) a.content = normalizer.apply(a.content);
    int32_t id = model.token_to_id(file_content);
    if (id < 0)
      id = max_added < 0 ? model_count : (max_added >= model_count || model_count == 0) ? max_added + 1 : model_count;
    if (id != file_id && moved++ == 0)
      log_warn("{}: added token '{}' has id {} in the file but gets id {}, as HF tokenizers assigns it", fname,
               file_content, file_id, id);
    a.id = id;
    max_added = std::max(max_added, id);
    added_by_content.emplace(file_content, id);
    added_by_content.emplace(a.content, id);
    added_by_id.emplace(id, added.size());
    added.push_back(a);
  }
  if (moved > 1) log_warn("{}: {} added tokens in all get ids other than the file's", fname, moved);
  // Matchers: special tokens first, then the others, each in file order (the order HF builds them in).
  std::vector<AddedToken> raw, norm;
  std::vector<std::string> raw_pat, norm_pat;
  for (int pass = 0; pass < 2; ++pass) {
    for (const AddedToken& a : added) {
      if (a.special != (pass == 0)) continue;
      (a.normalized ? norm : raw).push_back(a);
      (a.normalized ? norm_pat : raw_pat).push_back(a.content);
    }
  }
  raw_matcher = AddedTokenMatcher(std::move(raw), raw_pat);
  normalized_matcher = AddedTokenMatcher(std::move(norm), norm_pat);
  vocab_size = model.id_limit();
  for (const AddedToken& a : added) vocab_size = std::max(vocab_size, a.id + 1);
}

Tokenizer Tokenizer::load(const std::string& path) {
  fs::path file = path;
  if (fs::is_directory(file)) file /= "tokenizer.json";
  if (!fs::exists(file)) fail("{}: no such tokenizer file", file.string());
  const std::string fname = file.string();
  BpeEntries lifted;
  const json root = read_lifting_bpe(fname, lifted);
  if (!root.is_object()) fail("{}: must be a JSON object", fname);
  if (!root.contains("model")) fail("{}: missing field 'model'", fname);

  auto impl = std::make_shared<Impl>();
  Impl& m = *impl;
  m.path = fname;
  m.normalizer = Normalizer::parse(root.value("normalizer", json()), fname + ": normalizer");
  m.pre_tokenizer = PreTokenizer::parse(root.value("pre_tokenizer", json()), fname + ": pre_tokenizer");
  m.model = BpeModel::parse(root["model"], lifted, fname);
  m.post_processor = PostProcessor::parse(root.value("post_processor", json()), fname + ": post_processor");
  m.byte_level_decoder = parse_decoder(root.value("decoder", json()), fname + ": decoder");

  m.add_tokens(parse_added_tokens(root, fname), fname);

  const std::string dir = file.parent_path().string();
  const TokenizerConfig cfg = load_tokenizer_config(dir.empty() ? "." : dir);
  m.chat_template = cfg.chat_template;
  SpecialTokens& s = m.special;
  s.bos_token = cfg.bos_token;
  s.eos_token = cfg.eos_token;
  s.pad_token = cfg.pad_token;
  s.mask_token = cfg.mask_token;
  s.unk_token = cfg.unk_token;
  s.add_bos_token = cfg.add_bos_token;
  Tokenizer t(impl);
  s.bos = resolve(t, s.bos_token, "bos_token", dir);
  s.eos = resolve(t, s.eos_token, "eos_token", dir);
  s.pad = resolve(t, s.pad_token, "pad_token", dir);
  s.mask = resolve(t, s.mask_token, "mask_token", dir);
  s.unk = resolve(t, s.unk_token, "unk_token", dir);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  const Impl& m = *impl_;
  if (const size_t bad = utf8::find_invalid(text); bad != utf8::npos)
    fail("text to encode is not valid UTF-8 (byte offset {})", bad);
  std::vector<int32_t> ids;
  std::vector<TextSegment> raw_segs, norm_segs;
  std::vector<std::string> words;
  auto split = [](const AddedTokenMatcher& matcher, std::string_view s, std::vector<TextSegment>& out) {
    out.clear();
    if (matcher.empty()) {
      if (!s.empty()) out.push_back({0, s.size(), -1});
    } else {
      matcher.split(s, out);
    }
  };
  split(m.raw_matcher, text, raw_segs);
  for (const TextSegment& rs : raw_segs) {
    if (rs.token >= 0) {
      ids.push_back(rs.token);
      continue;
    }
    const std::string normalized = m.normalizer.apply(text.substr(rs.begin, rs.end - rs.begin));
    split(m.normalized_matcher, normalized, norm_segs);
    for (const TextSegment& ns : norm_segs) {
      if (ns.token >= 0) {
        ids.push_back(ns.token);
        continue;
      }
      words.clear();
      m.pre_tokenizer.split(std::string_view(normalized).substr(ns.begin, ns.end - ns.begin), words);
      for (const std::string& w : words) m.model.tokenize(w, ids);
    }
  }
  if (add_special) ids = m.post_processor.apply(std::move(ids));
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    const std::string* tok = nullptr;
    if (const AddedToken* a = m.added_token(id)) {
      if (skip_special && a->special) continue;
      tok = &a->content;
    } else {
      tok = m.model.id_to_token(id);
    }
    if (!tok) continue;
    if (m.byte_level_decoder) {
      byte_level::decode_token(*tok, out);
    } else {
      if (!first) out += ' ';
      out += *tok;
    }
    first = false;
  }
  return m.byte_level_decoder ? utf8::to_valid_lossy(out) : out;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model.token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* a = impl_->added_token(id)) return a->content;
  const std::string* t = impl_->model.id_to_token(id);
  return t ? *t : std::string();
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* a = impl_->added_token(id);
  return a && a->special;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
const SpecialTokens& Tokenizer::special() const { return impl_->special; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const std::string& Tokenizer::path() const { return impl_->path; }

}  // namespace dlx
