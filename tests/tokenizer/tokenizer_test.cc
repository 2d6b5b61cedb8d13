// dlx::Tokenizer against HF `tokenizers`: the committed fixtures (testdata/tokenizer/*_cases.json, made by
// tools/make_tokenizer_cases.py from the real Qwen3 tokenizer.json and three small tokenizers trained with HF),
// hand-built tokenizer.json files whose answers follow from the BPE / added-token rules, error messages, and
// the `diffulex tokenize` command.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "test_util.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace dlx {

using json = nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

const std::string kQwen3Dir = DIFFULEX_QWEN3_TOKENIZER_DIR;

// The tokenizer (once per process: the Qwen3 file takes a moment to parse).
const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::load(kQwen3Dir);
  return t;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- fixtures from HF ----------------------------------------------------------------------------------

struct FixtureParam {
  const char* name;       // <name>_cases.json
  std::string tokenizer;  // path to load
};

class TokenizerHF : public ::testing::TestWithParam<FixtureParam> {};

TEST_P(TokenizerHF, MatchesCommittedCases) {
  const FixtureParam& p = GetParam();
  const Tokenizer t = Tokenizer::load(p.tokenizer);
  const json doc = read_json(test::source_path(std::string("testdata/tokenizer/") + p.name + "_cases.json"));
  int total = 0, matched = 0;
  for (const json& c : doc["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const Ids want = c["ids"].get<Ids>();
    const Ids got = t.encode(text);
    bool ok = got == want;
    EXPECT_EQ(got, want) << "text: " << json(text).dump();
    ok &= t.encode(text, true) == c["ids_with_special"].get<Ids>();
    EXPECT_EQ(t.encode(text, true), c["ids_with_special"].get<Ids>()) << json(text).dump();
    const std::string decoded = c["decoded"].get<std::string>();
    ok &= t.decode(want) == decoded && t.decode(want, true) == c["decoded_skip_special"].get<std::string>();
    EXPECT_EQ(t.decode(want), decoded) << json(text).dump();
    EXPECT_EQ(t.decode(want, true), c["decoded_skip_special"].get<std::string>()) << json(text).dump();
    // Round trip where HF's is exact (NFC may change the text; lossy added tokens such as "café" may not).
    if (decoded == text) {
      EXPECT_EQ(t.decode(got), text);
    }
    total += 1;
    matched += ok;
  }
  int dtotal = 0, dmatched = 0;
  for (const json& c : doc["decode_cases"]) {
    const std::string got = t.decode(c["ids"].get<Ids>(), c["skip_special"].get<bool>());
    EXPECT_EQ(got, c["text"].get<std::string>()) << c["ids"].dump();
    dtotal += 1;
    dmatched += got == c["text"].get<std::string>();
  }
  std::printf("[ %s ] %d/%d encode cases and %d/%d decode cases match HF tokenizers %s\n", p.name, matched, total,
              dmatched, dtotal, doc["tokenizers_version"].get<std::string>().c_str());
  EXPECT_GT(total, 100);
}

INSTANTIATE_TEST_SUITE_P(
    TokenizerFixtures, TokenizerHF,
    ::testing::Values(FixtureParam{"qwen3", kQwen3Dir},
                      FixtureParam{"tiny_bytelevel", test::source_path("testdata/tokenizer/tiny_bytelevel")},
                      FixtureParam{"tiny_split", test::source_path("testdata/tokenizer/tiny_split")},
                      FixtureParam{"tiny_prefix", test::source_path("testdata/tokenizer/tiny_prefix/tokenizer.json")}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- the real Qwen3 tokenizer ---------------------------------------------------------------------------

TEST(TokenizerQwen3, VocabularyAndSpecialTokens) {
  const Tokenizer& t = qwen3();
  EXPECT_EQ(t.vocab_size(), 151669);
  EXPECT_EQ(t.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(t.id_to_token(151644), "<|im_start|>");
  EXPECT_EQ(t.token_to_id("Hello"), 9707);
  EXPECT_EQ(t.token_to_id("ĠHello"), 21927);
  EXPECT_EQ(t.token_to_id("no such token"), -1);
  EXPECT_EQ(t.id_to_token(-1), "");
  EXPECT_EQ(t.id_to_token(10000000), "");
  EXPECT_TRUE(t.is_special(151643));
  EXPECT_FALSE(t.is_special(151667));  // <think> is an added token but not special
  EXPECT_FALSE(t.is_special(9707));
  const SpecialTokens& s = t.special();
  EXPECT_EQ(s.bos, -1);  // tokenizer_config.json: "bos_token": null
  EXPECT_EQ(s.eos, 151645);
  EXPECT_EQ(s.eos_token, "<|im_end|>");
  EXPECT_EQ(s.pad, 151643);
  EXPECT_EQ(s.mask, -1);
  EXPECT_FALSE(s.add_bos_token);
  EXPECT_NE(t.chat_template().find("<|im_start|>"), std::string::npos);
}

TEST(TokenizerQwen3, SpecialTokensSplitBeforeNormalization) {
  const Tokenizer& t = qwen3();
  const Ids ids = t.encode("<|im_start|>user\nHi<|im_end|>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(ids.back(), 151645);
  EXPECT_EQ(t.decode(ids, true), "user\nHi");
  EXPECT_EQ(t.decode(ids), "<|im_start|>user\nHi<|im_end|>");
  // Out-of-vocabulary ids are skipped, as HF does.
  EXPECT_EQ(t.decode({9707, 999999999, 1879}), "Hello world");
}

TEST(TokenizerQwen3, LongWhitespaceRunsAndRoundTrip) {
  const Tokenizer& t = qwen3();
  const std::string spaces(100000, ' ');
  EXPECT_EQ(t.decode(t.encode(spaces)), spaces);
  const std::string mixed = std::string(5000, '\n') + "x" + std::string(5000, '\t') + "y";
  EXPECT_EQ(t.decode(t.encode(mixed)), mixed);
}

TEST(TokenizerQwen3, Encodes100KBQuickly) {
  // 100 KB made of the committed cases that HF decodes back to themselves (NFC-stable ones).
  const json doc = read_json(test::source_path("testdata/tokenizer/qwen3_cases.json"));
  std::vector<std::string> texts;
  for (const json& c : doc["cases"])
    if (c["text"] == c["decoded"] && !c["text"].get<std::string>().empty()) texts.push_back(c["text"]);
  std::string text;
  for (size_t i = 0; text.size() < 100000; ++i) text += texts[i % texts.size()];
  const Tokenizer t = Tokenizer::load(kQwen3Dir);  // fresh word cache
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = t.encode(text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ qwen3 ] encoded %zu bytes into %zu tokens in %.1f ms\n", text.size(), ids.size(), s * 1e3);
  EXPECT_LT(s, 1.0);
  EXPECT_EQ(t.decode(ids), text);
}

TEST(TokenizerQwen3, ThreadsShareOneTokenizer) {
  const json doc = read_json(test::source_path("testdata/tokenizer/qwen3_cases.json"));
  const Tokenizer t = Tokenizer::load(kQwen3Dir);  // fresh cache, filled concurrently below
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = 0; i < doc["cases"].size(); ++i) {
        const json& c = doc["cases"][(i * 7 + k * 13) % doc["cases"].size()];
        if (t.encode(c["text"].get<std::string>()) != c["ids"].get<Ids>()) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerQwen3, RejectsInvalidUtf8) {
  const std::string msg = error_of([] { qwen3().encode("ok\xff"); });
  EXPECT_NE(msg.find("not valid UTF-8 (byte offset 2)"), std::string::npos) << msg;
}

// ---- hand-built tokenizers ------------------------------------------------------------------------------

// A byte-level tokenizer.json whose base vocabulary is the 256 byte characters with id = byte value, plus
// `extra` tokens from id 256 on, `merges`, and `added` tokens.
json byte_level_json(const std::vector<std::string>& extra, const json& merges, const json& added = json::array()) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[std::string(byte_level::char_of(static_cast<unsigned char>(b)))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + static_cast<int>(i);
  return json{{"version", "1.0"},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

json added_token(int id, const std::string& content, bool special, bool lstrip = false, bool rstrip = false,
                 bool single_word = false, bool normalized = false) {
  return {{"id", id},         {"content", content},         {"special", special},      {"lstrip", lstrip},
          {"rstrip", rstrip}, {"single_word", single_word}, {"normalized", normalized}};
}

Tokenizer load_json(const test::TempDir& dir, const json& j, const std::string& name = "tokenizer.json") {
  write_file(dir / name, j.dump());
  return Tokenizer::load(dir / name);
}

Ids bytes_of(std::string_view s) {
  Ids out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}
Ids cat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(TokenizerHandBuilt, ByteLevelAlphabet) {
  EXPECT_EQ(byte_level::char_of(' '), "Ġ");
  EXPECT_EQ(byte_level::char_of('\n'), "Ċ");
  EXPECT_EQ(byte_level::char_of(0), "Ā");
  EXPECT_EQ(byte_level::char_of(0x7F), "ġ");
  EXPECT_EQ(byte_level::char_of(0xAD), "Ń");
  EXPECT_EQ(byte_level::char_of('a'), "a");
  EXPECT_EQ(byte_level::char_of(0xE9), "é");
  std::string out;
  byte_level::decode_token("ĠhiĊ", out);
  EXPECT_EQ(out, " hi\n");
}

TEST(TokenizerHandBuilt, MergesApplyByRankThenLeftmost) {
  test::TempDir dir;
  // "abc": with b+c ranked first the word ends as a|bc, with a+b first as ab|c.
  const Tokenizer bc_first = load_json(dir, byte_level_json({"ab", "bc"}, {"b c", "a b"}), "t1.json");
  const Tokenizer ab_first = load_json(dir, byte_level_json({"ab", "bc"}, {"a b", "b c"}), "t2.json");
  EXPECT_EQ(bc_first.encode("abc"), (Ids{'a', 257}));
  EXPECT_EQ(ab_first.encode("abc"), (Ids{256, 'c'}));
  // Chained merges, written as ["a", "b"] pairs.
  const Tokenizer chain = load_json(
      dir, byte_level_json({"ab", "abc", "abcabc"}, json::parse(R"([["a","b"],["ab","c"],["abc","abc"]])")), "t3.json");
  EXPECT_EQ(chain.encode("abcabcab"), (Ids{258, 256}));
  // Equal ranks: the leftmost pair merges first ("aaa" -> aa|a).
  const Tokenizer aa = load_json(dir, byte_level_json({"aa"}, {"a a"}), "t4.json");
  EXPECT_EQ(aa.encode("aaa"), (Ids{256, 'a'}));
  EXPECT_EQ(aa.encode("aaaa"), (Ids{256, 256}));
  // The GPT-2 regex splits " abc" off as its own word: the space never merges with "abc" here.
  EXPECT_EQ(chain.encode("abc abc"), (Ids{257, ' ', 257}));
  EXPECT_EQ(chain.decode({257, ' ', 257}), "abc abc");
}

TEST(TokenizerHandBuilt, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  test::TempDir dir;
  json j = byte_level_json({"ab", "abc"}, {"a b"});
  EXPECT_EQ(load_json(dir, j, "a.json").encode("abc"), (Ids{256, 'c'}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(load_json(dir, j, "b.json").encode("abc"), (Ids{257}));
  EXPECT_EQ(load_json(dir, j, "b.json").encode("abcc"), (Ids{256, 'c', 'c'}));
}

TEST(TokenizerHandBuilt, UnknownCharactersUnkFuseAndByteFallback) {
  test::TempDir dir;
  // A character-level BPE without a pre-tokenizer or decoder (HF joins decoded tokens with spaces).
  json j = {{"added_tokens", json::array()},
            {"model",
             {{"type", "BPE"},
              {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"<0x63>", 3}}},
              {"merges", json::array()},
              {"unk_token", "<unk>"}}}};
  EXPECT_EQ(load_json(dir, j, "u1.json").encode("accb"), (Ids{1, 0, 0, 2}));
  EXPECT_EQ(load_json(dir, j, "u1.json").decode({1, 0, 2}), "a <unk> b");
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(load_json(dir, j, "u2.json").encode("accbc"), (Ids{1, 0, 2, 0}));
  j["model"]["byte_fallback"] = true;
  EXPECT_EQ(load_json(dir, j, "u3.json").encode("accbd"), (Ids{1, 3, 3, 2, 0}));
  j["model"].erase("unk_token");
  j["model"]["byte_fallback"] = false;
  EXPECT_EQ(load_json(dir, j, "u4.json").encode("axb"), (Ids{1, 2}));  // no unk: dropped
}

TEST(TokenizerHandBuilt, AddedTokensLongestFirstAndSpecialFlag) {
  test::TempDir dir;
  const json added = {added_token(256, "<x>", false), added_token(257, "<x><y>", true),
                      added_token(258, "ab cd", false)};
  const Tokenizer t = load_json(dir, byte_level_json({}, json::array(), added));
  EXPECT_EQ(t.encode("<x><y><x>z<x"), cat({{257, 256}, bytes_of("z<x")}));
  EXPECT_EQ(t.decode({257, 'q', 256}), "<x><y>q<x>");
  EXPECT_EQ(t.decode({257, 'q', 256}, true), "q<x>");
  // Not every character of "ab cd" is in the byte alphabet (the space), so it decodes as its own text.
  EXPECT_EQ(t.decode({258}), "ab cd");
  EXPECT_EQ(t.token_to_id("<x><y>"), 257);
  EXPECT_EQ(t.vocab_size(), 259);
}

TEST(TokenizerHandBuilt, AddedTokenIdsAreAssignedAsHF) {
  test::TempDir dir;
  // HF gives an added token its id in the model vocabulary if it has one, else the next id after the model
  // vocabulary / the largest added id, whatever the file says ("<b>" is written as 500 but becomes 256).
  const json added = {added_token(3, "c", true), added_token(500, "<b>", true), added_token(900, "<e>", false)};
  const Tokenizer t = load_json(dir, byte_level_json({}, json::array(), added));
  EXPECT_EQ(t.token_to_id("c"), 'c');
  EXPECT_EQ(t.token_to_id("<b>"), 256);
  EXPECT_EQ(t.token_to_id("<e>"), 257);
  EXPECT_EQ(t.encode("<b>c<e>"), (Ids{256, 'c', 257}));
  EXPECT_EQ(t.decode({256, 'c', 257}, true), "<e>");  // "c" is special now
}

TEST(TokenizerHandBuilt, AddedTokenSingleWord) {
  test::TempDir dir;
  const Tokenizer t = load_json(
      dir, byte_level_json({}, json::array(), json::array({added_token(256, "<mask>", false, false, false, true)})));
  // As HF's test_single_word_is_correct: only the matches not touching a word character count.
  EXPECT_EQ(t.encode("<mask> My name <mask> A<mask> <mask>ony <mask>"),
            cat({{256}, bytes_of(" My name "), {256}, bytes_of(" A<mask> <mask>ony "), {256}}));
  EXPECT_EQ(t.encode("<mask>, <mask>-"), cat({{256}, bytes_of(", "), {256}, bytes_of("-")}));
  EXPECT_EQ(t.encode("é<mask>"), bytes_of("é<mask>"));  // é is a word character
}

TEST(TokenizerHandBuilt, AddedTokenStripsWhitespace) {
  test::TempDir dir;
  const Tokenizer t = load_json(
      dir, byte_level_json({}, json::array(), json::array({added_token(256, "<mask>", true, true, true, true)})));
  // As HF's test_lstrip_unicode_space: \t and U+2000 are whitespace; already-taken spaces stay taken.
  EXPECT_EQ(t.encode("Hi <mask> there\t<mask>\t<mask>\u2000"),
            cat({bytes_of("Hi"), {256}, bytes_of("there"), {256, 256}}));
  const Tokenizer l =
      load_json(dir, byte_level_json({}, json::array(), json::array({added_token(256, "<l>", false, true)})), "l.json");
  EXPECT_EQ(l.encode("a  <l> b"), cat({bytes_of("a"), {256}, bytes_of(" b")}));
  const Tokenizer r = load_json(
      dir, byte_level_json({}, json::array(), json::array({added_token(256, "<r>", false, false, true)})), "r.json");
  EXPECT_EQ(r.encode("a <r>  b"), cat({bytes_of("a "), {256}, bytes_of("b")}));
}

TEST(TokenizerHandBuilt, NormalizedAddedTokensMatchAfterNfc) {
  test::TempDir dir;
  json j = byte_level_json({}, json::array(),
                           {added_token(256, "e\u0301", false, false, false, false, true),  // normalized: NFC "é"
                            added_token(257, "A\u030a", false)});                           // raw: exact bytes only
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  const Tokenizer t = load_json(dir, j);
  EXPECT_EQ(t.encode("é|e\u0301"), (Ids{256, '|', 256}));
  EXPECT_EQ(t.encode("A\u030a|Å"), cat({{257}, bytes_of("|Å")}));
  EXPECT_EQ(t.encode("Å"), bytes_of("Å"));  // NFC composes, then bytes
}

TEST(TokenizerHandBuilt, TemplatePostProcessorAddsBos) {
  test::TempDir dir;
  json j = byte_level_json({}, json::array(), {added_token(256, "<s>", true), added_token(257, "</s>", true)});
  j["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [256], "tokens": ["<s>"]},
                         "</s>": {"id": "</s>", "ids": [257], "tokens": ["</s>"]}}})");
  const Tokenizer t = load_json(dir, j);
  EXPECT_EQ(t.encode("hi", true), (Ids{256, 'h', 'i', 257}));
  EXPECT_EQ(t.encode("hi", false), (Ids{'h', 'i'}));
  j["post_processor"]["single"] = "<s> $A";
  EXPECT_EQ(load_json(dir, j, "s.json").encode("hi", true), (Ids{256, 'h', 'i'}));
}

TEST(TokenizerHandBuilt, SplitPreTokenizerWithLiteralPattern) {
  test::TempDir dir;
  json j = byte_level_json({"ab"}, {"a b"});
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"String": "|"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
  // The pieces are "a", "|", "b ab": the only merge inside a piece is the last "ab".
  EXPECT_EQ(load_json(dir, j).encode("a|b ab"), (Ids{'a', '|', 'b', ' ', 256}));
}

TEST(TokenizerHandBuilt, RegexFallsBackWhenTheJitStackRunsOut) {
  test::TempDir dir;
  json j = byte_level_json({"xx"}, {"x x"});
  // On 100k 'x' this pattern overflows PCRE2's default JIT stack; the interpreter must take over.
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "(?:x|yy)+"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
  const Ids ids = load_json(dir, j).encode("a" + std::string(100000, 'x'));
  ASSERT_EQ(ids.size(), 50001u);
  EXPECT_EQ(ids.front(), 'a');
  EXPECT_EQ(ids.back(), 256);
}

TEST(TokenizerHandBuilt, Utf8LossyMatchesMaximalSubparts) {
  EXPECT_EQ(utf8::to_valid_lossy("a\xF0\x9F\x98"), "a\uFFFD");
  EXPECT_EQ(utf8::to_valid_lossy("\xE0\x80\xAF"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(utf8::to_valid_lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(utf8::to_valid_lossy("\xF4\x8F\xBF\xBF"), "\xF4\x8F\xBF\xBF");
  EXPECT_EQ(utf8::find_invalid("ok\xC3\x28"), 2u);
  EXPECT_EQ(utf8::find_invalid("ok\xC3\xA9"), utf8::npos);
}

// ---- tokenizer_config.json --------------------------------------------------------------------------------

TEST(TokenizerConfig, SpecialTokensFromConfigAndMap) {
  test::TempDir dir;
  const json added = {added_token(256, "<s>", true), added_token(257, "</s>", true), added_token(258, "<mask>", true)};
  write_file(dir / "tokenizer.json", byte_level_json({}, json::array(), added).dump());
  write_file(dir / "tokenizer_config.json", R"({"bos_token": {"content": "<s>", "__type": "AddedToken"},
      "eos_token": "</s>", "mask_token": "<mask>", "unk_token": "<nope>", "add_bos_token": true,
      "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  write_file(dir / "special_tokens_map.json", R"({"pad_token": "</s>", "eos_token": "<s>"})");
  const Tokenizer t = Tokenizer::load(dir.str());
  const SpecialTokens& s = t.special();
  EXPECT_EQ(s.bos, 256);
  EXPECT_EQ(s.eos, 257);  // tokenizer_config.json wins over special_tokens_map.json
  EXPECT_EQ(s.pad, 257);
  EXPECT_EQ(s.mask, 258);
  EXPECT_EQ(s.unk, -1);
  EXPECT_EQ(s.unk_token, "<nope>");
  EXPECT_TRUE(s.add_bos_token);
  EXPECT_EQ(t.chat_template(), "D");
  EXPECT_EQ(t.path(), dir / "tokenizer.json");
}

TEST(TokenizerConfig, ChatTemplateFromJinjaFile) {
  test::TempDir dir;
  write_file(dir / "tokenizer.json", byte_level_json({}, json::array()).dump());
  write_file(dir / "chat_template.jinja", "{{ messages }}");
  EXPECT_EQ(Tokenizer::load(dir / "tokenizer.json").chat_template(), "{{ messages }}");
}

// ---- errors -------------------------------------------------------------------------------------------

TEST(TokenizerErrors, NameTheFileAndField) {
  test::TempDir dir;
  auto load_error = [&](const json& j) {
    write_file(dir / "tokenizer.json", j.dump());
    return error_of([&] { Tokenizer::load(dir.str()); });
  };
  const std::string file = dir / "tokenizer.json";
  EXPECT_NE(error_of([&] { Tokenizer::load(dir / "missing"); }).find("missing"), std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::load(dir.str()); }).find("no such tokenizer file"), std::string::npos);
  write_file(dir / "tokenizer.json", "{\"model\": ");
  std::string msg = error_of([&] { Tokenizer::load(dir.str()); });
  EXPECT_NE(msg.find(file + ": not valid JSON"), std::string::npos) << msg;

  json j = byte_level_json({}, json::array());
  j["model"]["type"] = "WordPiece";
  msg = load_error(j);
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.type"), std::string::npos) << msg;

  j = byte_level_json({}, json::array());
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  msg = load_error(j);
  EXPECT_NE(msg.find("pre_tokenizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Whitespace"), std::string::npos) << msg;

  j = byte_level_json({}, json::array());
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(load_error(j).find("unsupported normalizer type 'Lowercase'"), std::string::npos);

  j = byte_level_json({}, {"a zz"});
  msg = load_error(j);
  EXPECT_NE(msg.find("model.merges[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'zz'"), std::string::npos) << msg;

  j = byte_level_json({}, json::array());
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  EXPECT_NE(load_error(j).find("bad regex"), std::string::npos);

  j = byte_level_json({}, json::array());
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}};
  EXPECT_NE(load_error(j).find("Split behavior 'Removed' is not supported"), std::string::npos);

  j = byte_level_json({}, json::array());
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(load_error(j).find("decoder"), std::string::npos);

  j = byte_level_json({}, json::array(), {{{"id", 5}}});
  EXPECT_NE(load_error(j).find("added_tokens[0]"), std::string::npos);

  j = byte_level_json({}, json::array());
  write_file(dir / "tokenizer.json", j.dump());
  write_file(dir / "tokenizer_config.json", R"({"eos_token": 7})");
  msg = error_of([&] { Tokenizer::load(dir.str()); });
  EXPECT_NE(msg.find("tokenizer_config.json: field 'eos_token'"), std::string::npos) << msg;
}

// ---- the CLI ------------------------------------------------------------------------------------------

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

TEST(TokenizerCli, EncodeDecodeAndFile) {
  const std::string tok = "tokenize --tokenizer " + quoted(kQwen3Dir);
  test::CmdResult r = test::run_cli(tok + " --text 'Hello world'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "[9707,1879]\n");
  r = test::run_cli(tok + " --decode '9707, 1879'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "Hello world\n");
  r = test::run_cli(tok + " --text ''");
  EXPECT_EQ(r.output, "[]\n");

  test::TempDir dir;
  const std::string text = "<|im_start|>user\n你好 😀 it's\n\n  code();\t<|im_end|>";
  write_file(dir / "in.txt", text);
  r = test::run_cli(tok + " --file " + quoted(dir / "in.txt"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, json(qwen3().encode(text)).dump() + "\n");
  r = test::run_cli(tok + " --skip-special --decode " + quoted(json(qwen3().encode(text)).dump()));
  EXPECT_EQ(r.output, "user\n你好 😀 it's\n\n  code();\t\n");
}

TEST(TokenizerCli, AddSpecialAppliesThePostProcessor) {
  // tiny_bytelevel's template is "<|bos|> $A" with <|bos|> = 0.
  const std::string dir = test::source_path("testdata/tokenizer/tiny_bytelevel");
  const Tokenizer t = Tokenizer::load(dir);
  const test::CmdResult r =
      test::run_cli("tokenize --add-special --tokenizer " + quoted(dir) + " --text 'Hello world'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, json(t.encode("Hello world", true)).dump() + "\n");
  EXPECT_EQ(t.encode("Hello world", true).front(), 0);
}

TEST(TokenizerCli, ClearErrors) {
  const std::string tok = "tokenize --tokenizer " + quoted(test::source_path("testdata/tokenizer/tiny_bytelevel"));
  test::CmdResult r = test::run_cli(tok + " --text a --decode 1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("exactly one of --text, --file or --decode"), std::string::npos) << r.output;
  r = test::run_cli(tok + " --decode '1,x'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("'x' is not an integer"), std::string::npos) << r.output;
  r = test::run_cli(tok + " --decode 99999999");
  EXPECT_NE(r.output.find("outside the vocabulary"), std::string::npos) << r.output;
  r = test::run_cli(tok + " --file /nonexistent/in.txt");
  EXPECT_NE(r.output.find("/nonexistent/in.txt: cannot open"), std::string::npos) << r.output;
  r = test::run_cli("tokenize --tokenizer /nonexistent --text a");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("/nonexistent"), std::string::npos) << r.output;
}

}  // namespace

}  // namespace dlx
