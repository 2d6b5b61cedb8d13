// Reading untrusted JSON (checkpoint headers, config.json, tokenizer.json, HTTP request bodies).
// nlohmann's parser is iterative and so is its destructor, but copying, comparing and dump() of a parsed tree
// recurse once per nesting level: a 200 KB document of nested arrays would overflow the stack the first time
// it is copied. parse_json therefore refuses, while parsing, any document nested deeper than kMaxJsonDepth
// (no file or request this project reads comes near it: tokenizer.json nests about 6 levels deep).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dlx {

constexpr int kMaxJsonDepth = 128;

// Parses `text`; every error is a dlx::Error that starts with `what` (a file name, "request body").
// `cb`, when given, sees every parse event as nlohmann's parser callback does.
nlohmann::json parse_json(std::string_view text, std::string_view what,
                          const nlohmann::json::parser_callback_t& cb = nullptr);

// Reads and parses a JSON file, with errors that name it (model/config.h declares the first form too).
nlohmann::json read_json_file(const std::string& path);
nlohmann::json read_json_file(const std::string& path, const nlohmann::json::parser_callback_t& cb);

}  // namespace dlx
