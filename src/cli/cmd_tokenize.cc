// `diffulex tokenize`: text -> ids (one JSON array on one line) or ids -> text, with a model's tokenizer.json.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace dlx::cli {

namespace {

struct TokenizeOptions {
  std::string tokenizer, text, file, decode;
  bool add_special = false, skip_special = false;
  CLI::Option *text_opt = nullptr, *file_opt = nullptr, *decode_opt = nullptr;  // to tell "" from absent
};

// "1,2,3", "1 2 3" or "[1, 2, 3]" -> ids; every id must be in [0, vocab_size).
std::vector<int32_t> parse_ids(const std::string& s, int32_t vocab_size) {
  std::vector<int32_t> ids;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(cur, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != cur.size()) fail("--decode: '{}' is not an integer token id", cur);
    if (v < 0 || v >= vocab_size) fail("--decode: token id {} is outside the vocabulary [0, {})", v, vocab_size);
    ids.push_back(static_cast<int32_t>(v));
    cur.clear();
  };
  for (char c : s) {
    if (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '[' || c == ']')
      flush();
    else
      cur += c;
  }
  flush();
  return ids;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void run(const TokenizeOptions& o) {
  const size_t given = o.text_opt->count() + o.file_opt->count() + o.decode_opt->count();
  if (given != 1) fail("tokenize: give exactly one of --text, --file or --decode");
  const std::string text = o.file_opt->count() ? read_file(o.file) : o.text;
  const Tokenizer tok = Tokenizer::load(o.tokenizer);
  if (o.decode_opt->count()) {
    const std::string decoded = tok.decode(parse_ids(o.decode, tok.vocab_size()), o.skip_special);
    std::fwrite(decoded.data(), 1, decoded.size(), stdout);
    std::fputc('\n', stdout);
    return;
  }
  const std::vector<int32_t> ids = tok.encode(text, o.add_special);
  std::string line = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ',';
    line += std::to_string(ids[i]);
  }
  line += "]\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Encode text to token ids (a JSON array) or decode ids to text");
  cmd->add_option("--tokenizer", opts->tokenizer, "tokenizer.json, or a model directory holding one")->required();
  opts->text_opt = cmd->add_option("--text", opts->text, "Text to encode");
  opts->file_opt = cmd->add_option("--file", opts->file, "Read the text to encode from this file (UTF-8)");
  opts->decode_opt = cmd->add_option("--decode", opts->decode, "Token ids to decode, e.g. \"1,2,3\" or \"[1, 2, 3]\"");
  cmd->add_flag("--add-special", opts->add_special, "Apply the tokenizer's post-processor (e.g. add BOS)");
  cmd->add_flag("--skip-special", opts->skip_special, "When decoding, drop special tokens");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace dlx::cli
