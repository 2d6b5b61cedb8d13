// The OpenAI-compatible server (src/server, docs/SERVER.md) in process on an ephemeral port with the shipped tiny
// model on the CPU, through a real HTTP client: responses equal the library's generate() for the same prompt and
// seed, concurrent requests equal their solo runs, every class of bad input gets a 400 naming the field, and
// `diffulex serve` runs end to end and stops on SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "server/api.h"
#include "server/server.h"
#include "shipped_server.h"
#include "test_util.h"

namespace dlx {
namespace {

using nlohmann::json;

const std::string& kModel = test::kShippedModel;

struct Reply {
  int status = -1;
  json body;
};

Reply send(int port, const std::string& method, const std::string& path, const std::string& body = "") {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  httplib::Result r = method == "GET" ? c.Get(path) : c.Post(path, body, "application/json");
  if (!r) {
    ADD_FAILURE() << method << " " << path << ": no response (" << httplib::to_string(r.error()) << ")";
    return {};
  }
  return {r->status, json::parse(r->body, nullptr, false)};
}
Reply post(int port, const std::string& path, const json& body) { return send(port, "POST", path, body.dump()); }

// The options a request {max_tokens, steps = max_tokens, seed, temperature} asks for over the model's defaults.
GenerationOptions request_opts(int64_t max_tokens, uint64_t seed, float temperature) {
  GenerationOptions o = generation_defaults(kModel);
  o.max_new_tokens = max_tokens;
  o.steps = int(max_tokens);
  o.seed = seed;
  o.temperature = temperature;
  return o;
}
json request_json(int64_t max_tokens, uint64_t seed, float temperature) {
  return {{"model", "kjv-dream-tiny"}, {"max_tokens", max_tokens}, {"steps", max_tokens}, {"seed", seed},
          {"temperature", temperature}};
}

class ServerTest : public test::ShippedServer {
 protected:
  static GenerationResult solo(const std::vector<int64_t>& ids, const GenerationOptions& o) {
    return generate(*model_, *tok_, ids, o);
  }
  static GenerationResult solo(const std::string& prompt, const GenerationOptions& o) {
    return solo(format_prompt(*tok_, prompt, false), o);
  }
};

TEST_F(ServerTest, HealthAndModels) {
  Reply h = send(port_, "GET", "/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body.value("status", ""), "ok");
  Reply m = send(port_, "GET", "/v1/models");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.body["object"], "list");
  ASSERT_EQ(m.body["data"].size(), 1u);
  EXPECT_EQ(m.body["data"][0]["id"], "kjv-dream-tiny");
  EXPECT_EQ(m.body["data"][0]["object"], "model");
}

TEST_F(ServerTest, CompletionEqualsGenerate) {
  json req = request_json(16, 7, 0.7f);
  req["prompt"] = "In the beginning";
  Reply r = post(port_, "/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  const GenerationResult want = solo("In the beginning", request_opts(16, 7, 0.7f));
  ASSERT_FALSE(want.text.empty());
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_EQ(r.body["model"], "kjv-dream-tiny");
  ASSERT_EQ(r.body["choices"].size(), 1u);
  EXPECT_EQ(r.body["choices"][0]["text"], want.text);
  EXPECT_EQ(r.body["choices"][0]["index"], 0);
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], want.new_ids.size() < 16 ? "stop" : "length");
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], want.prompt_ids.size());
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want.new_ids.size());
  EXPECT_EQ(r.body["usage"]["total_tokens"], want.prompt_ids.size() + want.new_ids.size());
}

TEST_F(ServerTest, PromptListsTokenIdsAndN) {
  // Two text prompts and n = 2: choices prompt-major, choice j with seed + j.
  json req = request_json(8, 3, 0.9f);
  req["prompt"] = {"And God said", "Blessed are"};
  req["n"] = 2;
  Reply r = post(port_, "/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  ASSERT_EQ(r.body["choices"].size(), 4u);
  int64_t prompt_tokens = 0, completion_tokens = 0;
  const char* prompts[] = {"And God said", "Blessed are"};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      const GenerationResult want = solo(prompts[i], request_opts(8, 3 + j, 0.9f));
      EXPECT_EQ(r.body["choices"][i * 2 + j]["text"], want.text) << i << "," << j;
      EXPECT_EQ(r.body["choices"][i * 2 + j]["index"], i * 2 + j);
      prompt_tokens += j == 0 ? int64_t(want.prompt_ids.size()) : 0;
      completion_tokens += int64_t(want.new_ids.size());
    }
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(r.body["usage"]["completion_tokens"], completion_tokens);

  // Token ids, as one list and as a list of lists.
  const std::vector<int64_t> ids = format_prompt(*tok_, "The LORD is my shepherd", false);
  const GenerationResult want = solo(ids, request_opts(8, 11, 0.5f));
  for (const json& prompt : {json(ids), json::array({ids})}) {
    json q = request_json(8, 11, 0.5f);
    q["prompt"] = prompt;
    Reply t = post(port_, "/v1/completions", q);
    ASSERT_EQ(t.status, 200) << t.body.dump();
    EXPECT_EQ(t.body["choices"][0]["text"], want.text);
  }
}

TEST_F(ServerTest, StopStringCutsTheText) {
  const GenerationOptions o = request_opts(32, 1, 0);
  const GenerationResult want = solo("In the beginning", o);
  // A stop string from the middle of the known text.
  const size_t at = want.text.find(' ', want.text.size() / 2);
  ASSERT_NE(at, std::string::npos) << want.text;
  const std::string stop = want.text.substr(at, 3);
  json req = request_json(32, 1, 0);
  req["prompt"] = "In the beginning";
  req["stop"] = {"never appears in it", stop};
  Reply r = post(port_, "/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["choices"][0]["text"], want.text.substr(0, want.text.find(stop)));
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "stop");
  const int64_t tokens = r.body["usage"]["completion_tokens"];
  EXPECT_GT(tokens, 0);
  EXPECT_LT(tokens, int64_t(want.new_ids.size()));
}

TEST_F(ServerTest, ConcurrentRequestsEqualSoloRuns) {
  const std::vector<std::string> prompts = {"In the beginning", "And Ruth said unto Naomi", "Blessed",
                                            "The LORD is my shepherd; I shall not"};
  std::vector<std::future<Reply>> replies;
  for (size_t i = 0; i < prompts.size(); ++i)
    replies.push_back(std::async(std::launch::async, [&, i] {
      json req = request_json(8 + 8 * int64_t(i % 2), 100 + i, 0.8f);
      req["prompt"] = prompts[i];
      req["block_length"] = 4;
      req["cache"] = i < 2 ? "dual" : "none";
      return post(port_, "/v1/completions", req);
    }));
  for (size_t i = 0; i < prompts.size(); ++i) {
    Reply r = replies[i].get();
    ASSERT_EQ(r.status, 200) << r.body.dump();
    GenerationOptions o = request_opts(8 + 8 * int64_t(i % 2), 100 + i, 0.8f);
    o.block_length = 4;
    o.cache = i < 2 ? CacheMode::Dual : CacheMode::None;
    EXPECT_EQ(r.body["choices"][0]["text"], solo(prompts[i], o).text) << "request " << i;
  }
}

// The shipped model's own chat template (models/kjv-dream-tiny/tokenizer_config.json): a chat request equals
// generate --chat on the same question.
TEST_F(ServerTest, ChatOnTheShippedModel) {
  ASSERT_FALSE(tok_->chat_template().empty());
  json req = request_json(16, 3, 0.5f);
  req["messages"] = {{{"role", "user"}, {"content", "Who made the heaven and the earth?"}}};
  Reply r = post(port_, "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  const GenerationResult want =
      solo(format_prompt(*tok_, "Who made the heaven and the earth?", true), request_opts(16, 3, 0.5f));
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], want.prompt_ids.size());
}

// Each class of bad input: status, the field named, and the server still answers afterwards.
TEST_F(ServerTest, BadInputsAre400NamingTheField) {
  struct Case {
    std::string path, body;
    int status;
    json param;
  };
  const std::string c = "/v1/completions", chat = "/v1/chat/completions";
  const std::string long_prompt = json(std::vector<int64_t>(300, 5)).dump();
  const std::vector<Case> cases = {
      {c, R"({"max_tokens": 8})", 400, "prompt"},
      {c, R"({"prompt": 42})", 400, "prompt"},
      {c, R"({"prompt": [1, "a"]})", 400, "prompt"},
      {c, R"({"prompt": ""})", 400, "prompt"},
      {c, R"({"prompt": [5, 99999]})", 400, "prompt"},
      {c, R"({"prompt": )" + long_prompt + "}", 400, "prompt"},
      {c, R"({"prompt": "In", "max_tokens": -1})", 400, "max_tokens"},
      {c, R"({"prompt": "In", "max_tokens": "ten"})", 400, "max_tokens"},
      {c, R"({"prompt": "In", "max_tokens": 256})", 400, "max_tokens"},
      {c, R"({"prompt": "In the beginning God created the heaven", "max_tokens": 254})", 400, "max_tokens"},
      {c, R"({"prompt": "In", "max_tokens": 1e30})", 400, "max_tokens"},
      {c, R"({"prompt": "In", "temperature": -1})", 400, "temperature"},
      {c, R"({"prompt": "In", "top_p": 0})", 400, "top_p"},
      {c, R"({"prompt": "In", "seed": -3})", 400, "seed"},
      {c, R"({"prompt": "In", "steps": 99999999999})", 400, "steps"},
      {c, R"({"prompt": "In", "alg": "fastest"})", 400, "alg"},
      {c, R"({"prompt": "In", "cache": "all"})", 400, "cache"},
      {c, R"({"prompt": "In", "kv_dtype": "fp8"})", 400, "kv_dtype"},
      {c, R"({"prompt": "In", "max_tokens": 16, "block_length": 5})", 400, "block_length"},
      {c, R"({"prompt": "In", "threshold": 0.9, "tokens_per_step": 2})", 400, "threshold"},
      {c, R"({"prompt": "In", "n": 0})", 400, "n"},
      {c, R"({"prompt": "In", "stop": ""})", 400, "stop"},
      {c, R"({"prompt": "In", "stop": [1]})", 400, "stop"},
      {c, R"({"prompt": "In", "stream": "yes"})", 400, "stream"},
      {c, R"({"prompt": "In", "stream_options": {"include_usage": true}})", 400, "stream_options"},
      {c, R"({"prompt": "In", "stream": true, "stream_options": true})", 400, "stream_options"},
      {c, R"({"prompt": "In", "stream": true, "stream_options": {"include_usage": 1}})", 400,
       "stream_options.include_usage"},
      {c, R"({"prompt": "In", "stream": true, "stream_options": {"chunk_size": 4}})", 400,
       "stream_options.chunk_size"},
      {c, R"({"prompt": "In", "echo": true})", 400, "echo"},
      {c, R"({"prompt": "In", "logprobs": 5})", 400, "logprobs"},
      {c, R"({"prompt": "In", "model": "gpt-4"})", 400, "model"},
      {c, R"({"prompt": "In")", 400, nullptr},
      {c, R"([{"prompt": "In"}])", 400, nullptr},
      {chat, R"({"max_tokens": 8})", 400, "messages"},
      {chat, R"({"messages": "hi"})", 400, "messages"},
      {chat, R"({"messages": [{"role": "user", "content": 3}]})", 400, "messages"},
      {chat, R"({"messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 0})", 400, "n"},
      {chat, R"({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0})", 400,
       "max_completion_tokens"},
  };
  for (const Case& k : cases) {
    Reply r = send(port_, "POST", k.path, k.body);
    EXPECT_EQ(r.status, k.status) << k.path << " " << k.body << " -> " << r.body.dump();
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << k.body;
    EXPECT_EQ(r.body["error"]["param"], k.param) << k.body << " -> " << r.body.dump();
    EXPECT_EQ(r.body["error"]["type"], "invalid_request_error") << k.body;
    EXPECT_FALSE(r.body["error"]["message"].get<std::string>().empty()) << k.body;
  }
  // The message is about the request as sent (its max_tokens, not the default's).
  Reply blk = send(port_, "POST", c, R"({"prompt": "In", "max_tokens": 16, "block_length": 5})");
  EXPECT_NE(blk.body["error"]["message"].get<std::string>().find("max_new_tokens (16)"), std::string::npos)
      << blk.body.dump();
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/nothing"}, {"POST", "/v1/embeddings"}, {"GET", "/v1/completions"}}) {
    Reply r = send(port_, method, path);
    EXPECT_EQ(r.status, 404) << method << " " << path;
    EXPECT_EQ(r.body["error"]["type"], "invalid_request_error");
    EXPECT_NE(r.body["error"]["message"].get<std::string>().find(path), std::string::npos);
  }
  EXPECT_EQ(send(port_, "GET", "/health").status, 200);
}

TEST_F(ServerTest, KvCacheOverTheBudgetIs400) {
  ServerOptions so;
  so.port = 0;
  so.defaults = generation_defaults(kModel);
  so.scheduler.kv_budget_bytes = 4096;
  Server server(*model_, *tok_, so);
  const int port = server.start();
  json req = request_json(8, 0, 0);
  req["prompt"] = "In the beginning";
  req["cache"] = "dual";
  Reply r = post(port, "/v1/completions", req);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "prompt");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("KV budget"), std::string::npos) << r.body.dump();
  req["cache"] = "none";  // no cache, nothing reserved
  EXPECT_EQ(post(port, "/v1/completions", req).status, 200);
}

// A tokenizer directory: the tiny model's tokenizer.json changed by `edit_tokenizer`, tokenizer_config.json
// changed by `edit_config`.
void write_tokenizer(const test::TempDir& dir, const std::function<void(json&)>& edit_tokenizer,
                     const std::function<void(json&)>& edit_config) {
  json t = json::parse(std::ifstream(kModel + "/tokenizer.json")), cfg = json::parse(std::ifstream(kModel + "/tokenizer_config.json"));
  edit_tokenizer(t);
  edit_config(cfg);
  std::ofstream(dir / "tokenizer.json") << t.dump();
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
}

TEST_F(ServerTest, ChatUsesTheChatTemplate) {
  test::TempDir dir;
  write_tokenizer(dir, [](json&) {}, [](json& cfg) {
    cfg["chat_template"] =
        "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Answer:{% endif %}";
  });
  const Tokenizer tok = Tokenizer::load(dir.str());
  ServerOptions so;
  so.port = 0;
  so.defaults = generation_defaults(kModel);
  so.model_name = "kjv-chat";
  Server server(*model_, tok, so);
  const int port = server.start();

  // One user turn: the prompt format_prompt(..., chat = true) makes, so the text equals generate's.
  json req = request_json(16, 9, 0.6f);
  req["model"] = "kjv-chat";
  req["messages"] = {{{"role", "user"}, {"content", "Who begat Enoch?"}}};
  Reply r = post(port, "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  const GenerationResult want = generate(*model_, tok, format_prompt(tok, "Who begat Enoch?", true), request_opts(16, 9, 0.6f));
  EXPECT_EQ(want.prompt_ids, format_prompt(*tok_, "User: Who begat Enoch?\nAnswer:", false));
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["model"], "kjv-chat");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], want.prompt_ids.size());
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want.new_ids.size());

  // Several turns, content as text parts.
  req["messages"] = {{{"role", "system"}, {"content", "Speak as the Preacher."}},
                     {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Vanity"}},
                                                                 {{"type", "text"}, {"text", " of vanities"}}})}}};
  Reply turns = post(port, "/v1/chat/completions", req);
  ASSERT_EQ(turns.status, 200) << turns.body.dump();
  const GenerationResult want2 = generate(
      *model_, tok, format_prompt(tok, "System: Speak as the Preacher.\nUser: Vanity of vanities\nAnswer:", false),
      request_opts(16, 9, 0.6f));
  EXPECT_EQ(turns.body["choices"][0]["message"]["content"], want2.text);
}

TEST(ServerApi, ChatmlWhenTheTokenizerHasItsTokensButNoTemplate) {
  test::TempDir dir;
  write_tokenizer(
      dir,
      [](json& t) {
        for (int i : {0, 1})
          t["added_tokens"].push_back({{"id", 4096 + i}, {"content", i ? "<|im_end|>" : "<|im_start|>"},
                                       {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                       {"normalized", false}, {"special", true}});
      },
      [](json& cfg) { cfg.erase("chat_template"); });
  const Tokenizer tok = Tokenizer::load(dir.str());
  ASSERT_TRUE(tok.chat_template().empty());
  const std::vector<int64_t> ids = server::chat_prompt(tok, {{"system", "Be brief."}, {"user", "Hi"}});
  auto enc = [&](const std::string& s) {
    std::vector<int32_t> e = tok.encode(s, false);
    return std::vector<int64_t>(e.begin(), e.end());
  };
  std::vector<int64_t> want;
  for (const auto& part : {std::vector<int64_t>{4096}, enc("system\nBe brief."), std::vector<int64_t>{4097},
                           enc("\n"), std::vector<int64_t>{4096}, enc("user\nHi"), std::vector<int64_t>{4097},
                           enc("\n"), std::vector<int64_t>{4096}, enc("assistant\n")})
    want.insert(want.end(), part.begin(), part.end());
  EXPECT_EQ(ids, want);

  // Without those tokens (the shipped tokenizer less its template): a 400 naming messages.
  test::TempDir plain;
  write_tokenizer(plain, [](json&) {}, [](json& cfg) { cfg.erase("chat_template"); });
  try {
    server::chat_prompt(Tokenizer::load(plain.str()), {{"user", "Hi"}});
    ADD_FAILURE() << "no error";
  } catch (const server::ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "messages");
  }
}

// stop() while a request runs: the request still gets its full answer, then the port is closed.
TEST_F(ServerTest, StopFinishesRequestsInFlight) {
  ServerOptions so;
  so.port = 0;
  so.defaults = generation_defaults(kModel);
  Server server(*model_, *tok_, so);
  const int port = server.start();
  json req = request_json(32, 2, 0.5f);
  req["prompt"] = {"In the beginning", "And it came to pass"};
  auto reply = std::async(std::launch::async, [&] { return post(port, "/v1/completions", req); });
  for (;;) {  // until the engine holds it
    Reply h = send(port, "GET", "/health");
    ASSERT_EQ(h.status, 200);
    if (h.body["running"].get<int64_t>() + h.body["queued"].get<int64_t>() > 0) break;
    ASSERT_NE(reply.wait_for(std::chrono::milliseconds(1)), std::future_status::ready) << "finished before stop()";
  }
  server.stop();
  Reply r = reply.get();
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["choices"][1]["text"], solo("And it came to pass", request_opts(32, 2, 0.5f)).text);
  httplib::Client c("127.0.0.1", port);
  EXPECT_FALSE(c.Get("/health"));
}

// `diffulex serve` as a subprocess: the printed port answers, a completion equals generate(), SIGTERM exits 0
// after logging the request.
TEST(ServeCli, ServesAndStopsOnSigterm) {
  test::TempDir tmp;
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  struct Child {  // killed if the test ends before it exits
    pid_t pid;
    ~Child() {
      if (pid > 0) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
    }
  } child{fork()};
  const pid_t pid = child.pid;
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    const int err = open((tmp / "stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(err, STDERR_FILENO);
    close(out[0]);
    execl(DIFFULEX_BINARY, DIFFULEX_BINARY, "serve", "--model", kModel.c_str(), "--port", "0", "--max-batch", "2",
          "--threads", "1", "--steps", "8", "--max-new-tokens", "8", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string line;
  char ch;
  while (read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  close(out[0]);
  const size_t colon = line.rfind(':', line.find(" (model"));
  ASSERT_NE(line.find("listening on http://127.0.0.1:"), std::string::npos) << line;
  const int port = std::stoi(line.substr(colon + 1));

  Reply r = post(port, "/v1/completions", {{"prompt", "In the beginning"}, {"seed", 4}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  auto model = Model::load(kModel);
  const Tokenizer tok = Tokenizer::load(kModel);
  GenerationOptions o = generation_defaults(kModel);  // with the server's --steps 8 --max-new-tokens 8
  o.steps = 8;
  o.max_new_tokens = 8;
  o.seed = 4;
  EXPECT_EQ(r.body["choices"][0]["text"], generate(*model, tok, format_prompt(tok, "In the beginning", false), o).text);
  EXPECT_EQ(post(port, "/v1/completions", {{"prompt", 1}}).status, 400);

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  child.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::ifstream f(tmp / "stderr.txt");
  const std::string log((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("POST /v1/completions 200"), std::string::npos) << log;
  EXPECT_NE(log.find("POST /v1/completions 400"), std::string::npos) << log;
}

}  // namespace
}  // namespace dlx
