#include "tokenizer/bpe.h"

#include <fmt/format.h>

#include <mutex>
#include <queue>
#include <shared_mutex>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace dlx {

using json = nlohmann::json;

// Word -> ids. Like HF's, it stops growing at a fixed number of words instead of evicting.
struct BpeModel::Cache {
  static constexpr size_t kCapacity = 10000;
  static constexpr size_t kMaxWordBytes = 256;
  mutable std::shared_mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string string_or_empty(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return "";
  if (!j[key].is_string()) fail("{}: field 'model.{}' must be a string", where, key);
  return j[key].get<std::string>();
}

bool bool_or(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) fail("{}: field 'model.{}' must be true or false", where, key);
  return j[key].get<bool>();
}

}  // namespace

BpeModel BpeModel::parse(const json& j, const BpeEntries& lifted, const std::string& where) {
  if (!j.is_object()) fail("{}: field 'model' must be an object", where);
  const std::string type = j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
  if (type != "BPE" && !(type.empty() && j.contains("merges")))
    fail("{}: unsupported model type '{}' in field 'model.type' (only BPE is supported)", where, type);
  if (!string_or_empty(j, "continuing_subword_prefix", where).empty() ||
      !string_or_empty(j, "end_of_word_suffix", where).empty())
    fail("{}: model.continuing_subword_prefix / end_of_word_suffix are not supported", where);
  if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0.0)
    fail("{}: model.dropout is not supported (inference needs deterministic BPE)", where);
  if (!j.contains("vocab") || !j["vocab"].is_object()) fail("{}: field 'model.vocab' must be an object", where);
  if (!j.contains("merges") || !j["merges"].is_array()) fail("{}: field 'model.merges' must be an array", where);

  BpeModel m;
  const json& vocab = j["vocab"];
  m.vocab_.reserve(vocab.size() + lifted.vocab.size());
  int64_t max_id = -1;
  auto add_token = [&](const std::string& tok, const json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      fail("{}: model.vocab['{}'] must be a non-negative integer id", where, tok);
    const auto id = v.get<int64_t>();
    m.vocab_.emplace(tok, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  };
  for (auto it = vocab.begin(); it != vocab.end(); ++it) add_token(it.key(), it.value());
  for (const auto& [tok, v] : lifted.vocab) add_token(tok, v);
  // The id table has max_id + 1 slots: a file may leave some ids unused, not ask for gigabytes of them.
  const int64_t entries = static_cast<int64_t>(m.vocab_.size()), id_bound = entries + (int64_t{1} << 16);
  if (max_id >= id_bound)
    fail("{}: model.vocab has an id {} far beyond its {} entries (ids must be below {})", where, max_id, entries,
         id_bound);
  m.id_to_token_.resize(static_cast<size_t>(max_id + 1));
  m.has_id_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [tok, id] : m.vocab_) {
    if (m.has_id_[id]) continue;
    m.id_to_token_[id] = tok;
    m.has_id_[id] = true;
  }

  const json& merges = j["merges"];
  m.merges_.reserve(merges.size() + lifted.merges.size());
  auto add_merge = [&](const json& e, size_t rank) {
    std::string a, b;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail("{}: model.merges[{}] must be two tokens separated by one space, got '{}'", where, rank, s);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      fail("{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"]", where, rank);
    }
    const int32_t ia = m.token_to_id(a), ib = m.token_to_id(b), im = m.token_to_id(a + b);
    if (ia < 0 || ib < 0 || im < 0)
      fail("{}: model.merges[{}] uses a token missing from model.vocab: '{}'", where, rank,
           ia < 0   ? a
           : ib < 0 ? b
                    : a + b);
    // A repeated pair takes its last rank, as in HF (its merge map is built by inserting in order).
    m.merges_.insert_or_assign(pair_key(ia, ib), std::make_pair(static_cast<int32_t>(rank), im));
  };
  size_t rank = 0;
  for (const json& e : merges) add_merge(e, rank++);
  for (const json& e : lifted.merges) add_merge(e, rank++);

  const std::string unk = string_or_empty(j, "unk_token", where);
  if (!unk.empty()) {
    m.unk_id_ = m.token_to_id(unk);
    if (m.unk_id_ < 0) fail("{}: model.unk_token '{}' is not in model.vocab", where, unk);
  }
  m.fuse_unk_ = bool_or(j, "fuse_unk", false, where);
  m.byte_fallback_ = bool_or(j, "byte_fallback", false, where);
  m.ignore_merges_ = bool_or(j, "ignore_merges", false, where);
  return m;
}

int32_t BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = token_to_id(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= Cache::kMaxWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_->mu);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::unique_lock lock(cache_->mu);
    if (cache_->words.size() < Cache::kCapacity)
      cache_->words.emplace(std::string(word), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // A doubly linked list of symbols; a merged-away symbol gets len 0.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id, size_t len) {
    const auto n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, -1, static_cast<uint32_t>(len)});
    if (n > 0) sym[n - 1].next = n;
  };

  // Characters -> initial symbols (unknown characters: byte fallback, unk, or dropped).
  int32_t pending_unk_len = 0;  // bytes of the unk symbol not yet added (fuse_unk keeps growing it)
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    char32_t c = 0;
    size_t n = utf8::decode(word, i, &c);
    if (n == 0) n = 1;
    const std::string_view ch = word.substr(i, n);
    i += n;
    if (const int32_t id = token_to_id(ch); id >= 0) {
      if (pending_unk_len) add(unk_id_, pending_unk_len), pending_unk_len = 0;
      add(id, n);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      for (unsigned char b : ch) {
        const int32_t id = token_to_id(fmt::format("<0x{:02X}>", b));
        if (id < 0) break;
        bytes.push_back(id);
      }
      if (bytes.size() == n) {
        if (pending_unk_len) add(unk_id_, pending_unk_len), pending_unk_len = 0;
        for (int32_t id : bytes) add(id, 1);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk_len && !fuse_unk_) add(unk_id_, pending_unk_len), pending_unk_len = 0;
      pending_unk_len += static_cast<int32_t>(n);
    }
  }
  if (pending_unk_len) add(unk_id_, pending_unk_len);

  // Lowest rank first, then leftmost; stale entries are recognised and skipped when popped.
  struct Merge {
    int32_t rank, pos, new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Merge, std::vector<Merge>, std::greater<>> queue;
  auto push_pair = [&](int32_t pos) {
    const int32_t nx = sym[pos].next;
    auto it = merges_.find(pair_key(sym[pos].id, sym[nx].id));
    if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int32_t p = 0; p + 1 < static_cast<int32_t>(sym.size()); ++p) push_pair(p);
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    const int32_t nx = cur.next;
    auto it = merges_.find(pair_key(cur.id, sym[nx].id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;
    cur.id = top.new_id;
    cur.len += sym[nx].len;
    cur.next = sym[nx].next;
    sym[nx].len = 0;
    if (cur.next >= 0) sym[cur.next].prev = top.pos;
    if (cur.prev >= 0) push_pair(cur.prev);
    if (cur.next >= 0) push_pair(top.pos);
  }
  for (const Symbol& s : sym)
    if (s.len) out.push_back(s.id);
}

}  // namespace dlx
