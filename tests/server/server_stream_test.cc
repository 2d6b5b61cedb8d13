// Streaming in the OpenAI-compatible server (src/server/stream.h, docs/SERVER.md "Streaming"): the SSE chunk
// format, which text ChoiceStream sends when (final text only, stop strings and split characters held back), and
// end to end on the shipped model through a real HTTP client: streamed chunks concatenate to the non-streamed
// answer, usage comes last, the canvas extension reports every revealed position, and a client that hangs up
// frees its slot and KV bytes.
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "server/api.h"
#include "server/server.h"
#include "server/stream.h"
#include "shipped_server.h"
#include "test_util.h"

namespace dlx {
namespace {

using nlohmann::json;

const std::string& kModel = test::kShippedModel;

// The data of each event of an SSE body, in order; comments (":" lines) are skipped. Fails on any other line.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) {
      ADD_FAILURE() << "an event without its blank line: " << body.substr(at);
      break;
    }
    const std::string event = body.substr(at, end - at);
    at = end + 2;
    if (event.rfind(":", 0) == 0) continue;
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_EQ(event.find('\n'), std::string::npos) << event;
    out.push_back(event.substr(6));
  }
  return out;
}

struct Streamed {
  int status = -1;
  std::string content_type;
  std::vector<json> chunks;  // every data event but the last
  bool done = false;         // the last was [DONE]
};

// POSTs `body` and reads the whole event stream.
Streamed post_stream(int port, const std::string& path, const json& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  httplib::Result r = c.Post(path, body.dump(), "application/json");
  Streamed s;
  if (!r) {
    ADD_FAILURE() << "no response: " << httplib::to_string(r.error());
    return s;
  }
  s.status = r->status;
  s.content_type = r->get_header_value("Content-Type");
  if (s.status != 200) return s;
  std::vector<std::string> data = sse_data(r->body);
  s.done = !data.empty() && data.back() == "[DONE]";
  if (s.done) data.pop_back();
  for (const std::string& d : data) {
    json j = json::parse(d, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << d;
    s.chunks.push_back(j);
  }
  return s;
}

json get(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  httplib::Result r = c.Get(path);
  return r ? json::parse(r->body, nullptr, false) : json();
}

json post(int port, const std::string& path, const json& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  httplib::Result r = c.Post(path, body.dump(), "application/json");
  if (!r || r->status != 200) {
    ADD_FAILURE() << path << " " << body.dump() << ": " << (r ? r->body : httplib::to_string(r.error()));
    return json();
  }
  return json::parse(r->body);
}

// Each choice's text (completions: "text", chat: "delta.content") concatenated, by index.
std::map<int64_t, std::string> texts(const Streamed& s, bool chat) {
  std::map<int64_t, std::string> out;
  for (const json& c : s.chunks)
    for (const json& ch : c["choices"]) {
      const json& t = chat ? ch["delta"].value("content", json("")) : ch["text"];
      out[ch["index"].get<int64_t>()] += t.get<std::string>();
    }
  return out;
}

class ServerStream : public test::ShippedServer {};

json request(int64_t max_tokens, uint64_t seed, float temperature) {
  return {{"max_tokens", max_tokens}, {"steps", max_tokens}, {"seed", seed}, {"temperature", temperature}};
}

// ---- the chunk format ------------------------------------------------------------------------------------------

TEST(StreamFormat, ChunksAreOpenAIs) {
  EXPECT_EQ(server::sse_event({{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(server::sse_event("caf\xC3"), "data: \"caf\xEF\xBF\xBD\"\n\n");  // invalid UTF-8 replaced, never thrown
  EXPECT_STREQ(server::kSseDone, "data: [DONE]\n\n");

  server::ApiRequest cr;
  const server::Chunks c{cr, "cmpl-1-0", "m", 7};
  EXPECT_EQ(c.text(1, "Hi"), json::parse(R"({"id": "cmpl-1-0", "object": "text_completion", "created": 7,
      "model": "m", "choices": [{"index": 1, "text": "Hi", "logprobs": null, "finish_reason": null}]})"));
  EXPECT_EQ(c.finish(0, "length")["choices"][0],
            json::parse(R"({"index": 0, "text": "", "logprobs": null, "finish_reason": "length"})"));

  server::ApiRequest chat;
  chat.chat = true;
  chat.include_usage = true;
  const server::Chunks h{chat, "chatcmpl-1-0", "m", 7};
  EXPECT_EQ(h.role(0), json::parse(R"({"id": "chatcmpl-1-0", "object": "chat.completion.chunk", "created": 7,
      "model": "m", "usage": null, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
      "logprobs": null, "finish_reason": null}]})"));
  EXPECT_EQ(h.text(0, "Yea")["choices"][0]["delta"], json::parse(R"({"content": "Yea"})"));
  EXPECT_EQ(h.finish(0, "stop")["choices"][0],
            json::parse(R"({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"})"));
  EXPECT_EQ(h.usage(3, 5), json::parse(R"({"id": "chatcmpl-1-0", "object": "chat.completion.chunk", "created": 7,
      "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})"));
  const json cv = h.canvas(0, 2, 8, {{4, 17, " God"}}, 5);
  EXPECT_EQ(cv["choices"][0]["delta"], json::parse(R"({"content": ""})"));
  EXPECT_EQ(cv["canvas"], json::parse(R"({"step": 2, "steps": 8, "masked": 5,
      "revealed": [{"position": 4, "token": 17, "text": " God"}]})"));
}

// ---- which text is final ---------------------------------------------------------------------------------------

class ChoiceStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Model::load(kModel);
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load(kModel));
    mask_ = model_->config().mask_token_id;
    stops_ = stop_token_ids(*model_, *tok_);
  }
  std::vector<int64_t> encode(const std::string& s) const {
    const std::vector<int32_t> e = tok_->encode(s, false);
    return {e.begin(), e.end()};
  }
  // Reveals `ids` (padded with EOS to max_tokens) in `order`, one position per update; returns each update.
  std::vector<server::StreamUpdate> reveal(server::ChoiceStream& cs, const std::vector<int64_t>& ids,
                                           const std::vector<size_t>& order) const {
    std::vector<int64_t> canvas(ids.size(), mask_);
    std::vector<server::StreamUpdate> out;
    for (size_t p : order) {
      canvas[p] = ids[p];
      out.push_back(cs.update(canvas));
      if (out.back().finished) break;
    }
    return out;
  }
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  int64_t mask_ = 0;
  std::vector<int64_t> stops_;
};

std::vector<size_t> in_order(size_t n) {
  std::vector<size_t> o(n);
  for (size_t i = 0; i < n; ++i) o[i] = i;
  return o;
}

std::string joined(const std::vector<server::StreamUpdate>& us) {
  std::string s;
  for (const auto& u : us) s += u.text;
  return s;
}

// Left to right: each token's text is sent when it is revealed, except what may begin the stop string; the
// stream ends at the token that completes it, with make_choice's text and token count.
TEST_F(ChoiceStreamTest, StopStringAcrossTokensIsHeldBackThenCut) {
  const std::string text = " And God said, Let there be light: and there was light.";
  const std::vector<int64_t> ids = encode(text);
  ASSERT_GT(ids.size(), 8u);
  server::ApiRequest req;
  req.opts.max_new_tokens = int64_t(ids.size());
  req.stop = {"be light", "never"};
  // The token that ends in "be" and the one that completes the stop string.
  size_t be = 0;
  while (tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + int64_t(be) + 1)).find("be") == std::string::npos) ++be;
  server::ChoiceStream cs(req, *tok_, stops_, mask_);
  const std::vector<server::StreamUpdate> us = reveal(cs, ids, in_order(ids.size()));
  EXPECT_EQ(joined(std::vector<server::StreamUpdate>(us.begin(), us.begin() + int64_t(be) + 1)), " And God said, Let there ")
      << "\"be\" may begin \"be light\": held back";
  ASSERT_TRUE(us.back().finished);
  EXPECT_LT(us.size(), ids.size()) << "finished when the stop string became final";
  GenerationResult full;
  full.new_ids = ids;
  full.text = tok_->decode(std::vector<int32_t>(ids.begin(), ids.end()), true);
  const server::Choice want = server::make_choice(full, req, *tok_);
  EXPECT_EQ(joined(us), want.text);
  EXPECT_EQ(want.text, " And God said, Let there ");
  EXPECT_EQ(us.back().finish_reason, "stop");
  EXPECT_EQ(us.back().completion_tokens, want.completion_tokens);
  EXPECT_TRUE(cs.update(ids).text.empty());  // nothing after the end
}

// Any reveal order (block-wise decoding reveals anywhere in a block): only the contiguous revealed prefix is
// sent, so the text sent only grows, and the whole equals the non-streamed text; an EOS ends it once all before
// it is revealed, whatever follows.
TEST_F(ChoiceStreamTest, OnlyTheRevealedPrefixIsSentInAnyOrder) {
  std::vector<int64_t> ids = encode(" Blessed are the meek: for they shall inherit the earth.");
  const size_t eos_at = ids.size();
  ids.push_back(stops_.at(0));
  for (int64_t t : encode(" after the end")) ids.push_back(t);
  server::ApiRequest req;
  req.opts.max_new_tokens = int64_t(ids.size());
  GenerationResult full;
  full.new_ids.assign(ids.begin(), ids.begin() + int64_t(eos_at));
  full.text = tok_->decode(std::vector<int32_t>(full.new_ids.begin(), full.new_ids.end()), true);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<size_t> order = in_order(ids.size());
    std::shuffle(order.begin(), order.end(), rng);
    server::ChoiceStream cs(req, *tok_, stops_, mask_);
    std::vector<int64_t> canvas(ids.size(), mask_);
    std::string sent;
    bool finished = false;
    for (size_t p : order) {
      canvas[p] = ids[p];
      const server::StreamUpdate u = cs.update(canvas);
      sent += u.text;
      size_t prefix = 0;
      while (prefix < canvas.size() && canvas[prefix] != mask_) ++prefix;
      const std::string final_text =
          tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + int64_t(std::min(prefix, eos_at))), true);
      EXPECT_EQ(final_text.compare(0, sent.size(), sent), 0) << "sent text that is not final: " << sent;
      if (u.finished) {
        EXPECT_GE(prefix, eos_at);
        EXPECT_EQ(u.finish_reason, "stop");
        EXPECT_EQ(u.completion_tokens, int64_t(eos_at));
        finished = true;
        break;
      }
    }
    EXPECT_TRUE(finished);
    EXPECT_EQ(sent, full.text);
  }
}

// A character whose UTF-8 bytes are split between tokens is sent whole, never as a replacement character.
TEST_F(ChoiceStreamTest, SplitCharactersAreSentWhole) {
  const std::string text = " Noé said: «Selah» \xF0\x9F\x95\x8A amen";
  const std::vector<int64_t> ids = encode(text);
  ASSERT_EQ(tok_->decode(std::vector<int32_t>(ids.begin(), ids.end())), text);
  bool split = false;
  for (size_t k = 1; k < ids.size(); ++k)
    split |= tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + int64_t(k))).find("\xEF\xBF\xBD") != std::string::npos;
  ASSERT_TRUE(split) << "the test text should split a character between tokens";
  server::ApiRequest req;
  req.opts.max_new_tokens = int64_t(ids.size());
  server::ChoiceStream cs(req, *tok_, stops_, mask_);
  const std::vector<server::StreamUpdate> us = reveal(cs, ids, in_order(ids.size()));
  for (const auto& u : us) EXPECT_EQ(u.text.find("\xEF\xBF\xBD"), std::string::npos) << u.text;
  EXPECT_EQ(joined(us), text);
  ASSERT_TRUE(us.back().finished);
  EXPECT_EQ(us.back().finish_reason, "length");
}

// revealed(): each position once, when it is first revealed.
TEST_F(ChoiceStreamTest, RevealedListsNewPositions) {
  const std::vector<int64_t> ids = encode(" In the beginning God");
  server::ApiRequest req;
  server::ChoiceStream cs(req, *tok_, stops_, mask_);
  std::vector<int64_t> canvas(ids.size(), mask_);
  canvas[2] = ids[2];
  auto r = cs.revealed(canvas);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].position, 2);
  EXPECT_EQ(r[0].token, ids[2]);
  EXPECT_EQ(r[0].text, tok_->decode({int32_t(ids[2])}));
  canvas[0] = ids[0], canvas[3] = ids[3];
  r = cs.revealed(canvas);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].position, 0);
  EXPECT_EQ(r[1].position, 3);
  EXPECT_TRUE(cs.revealed(canvas).empty());
}

// ---- end to end ------------------------------------------------------------------------------------------------

// Completions, block-wise: the text comes in several chunks, concatenates to the non-streamed text, and the
// stream is usage-last with "usage": null before, then [DONE].
TEST_F(ServerStream, CompletionChunksConcatenateToTheAnswer) {
  json req = request(32, 5, 0.4f);
  req["prompt"] = "And God said,";
  req["block_length"] = 8;
  req["cache"] = "dual";
  const json plain = post(port_, "/v1/completions", req);
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  const Streamed s = post_stream(port_, "/v1/completions", req);
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(s.content_type.rfind("text/event-stream", 0), 0u) << s.content_type;
  ASSERT_TRUE(s.done);
  ASSERT_GE(s.chunks.size(), 3u);
  const std::string answer = plain["choices"][0]["text"];
  ASSERT_GT(answer.size(), 20u) << "a text over more than one block";
  EXPECT_EQ(texts(s, false)[0], answer);
  size_t with_text = 0;
  for (size_t i = 0; i + 1 < s.chunks.size(); ++i) {
    const json& c = s.chunks[i];
    EXPECT_EQ(c["object"], "text_completion");
    EXPECT_EQ(c["id"], s.chunks[0]["id"]);
    EXPECT_EQ(c["model"], "kjv-dream-tiny");
    EXPECT_TRUE(c.contains("usage") && c["usage"].is_null());
    ASSERT_EQ(c["choices"].size(), 1u);
    with_text += !c["choices"][0]["text"].get<std::string>().empty();
    const bool last = i + 2 == s.chunks.size();
    EXPECT_EQ(c["choices"][0]["finish_reason"], last ? plain["choices"][0]["finish_reason"] : json(nullptr));
  }
  EXPECT_GE(with_text, 2u) << "block by block, not all at the end";
  EXPECT_EQ(s.chunks.back()["choices"], json::array());
  EXPECT_EQ(s.chunks.back()["usage"], plain["usage"]);
}

// Chat: the role first, then content deltas that concatenate to the message, a finish chunk with an empty delta.
TEST_F(ServerStream, ChatChunksConcatenateToTheMessage) {
  json req = request(24, 2, 0.5f);
  req["messages"] = {{{"role", "user"}, {"content", "Who divided the waters?"}}};
  const json plain = post(port_, "/v1/chat/completions", req);
  req["stream"] = true;
  const Streamed s = post_stream(port_, "/v1/chat/completions", req);
  ASSERT_EQ(s.status, 200);
  ASSERT_TRUE(s.done);
  ASSERT_GE(s.chunks.size(), 2u);
  EXPECT_EQ(s.chunks.front()["choices"][0]["delta"], json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_EQ(s.chunks.back()["choices"][0]["delta"], json::object());
  EXPECT_EQ(s.chunks.back()["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);
  for (const json& c : s.chunks) {
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_FALSE(c.contains("usage"));
  }
  EXPECT_EQ(texts(s, true)[0], plain["choices"][0]["message"]["content"]);
}

// Several prompts, n = 2 and stop strings: every choice streams to its non-streamed text and reason.
TEST_F(ServerStream, ChoicesAndStopStringsMatchTheAnswer) {
  json req = request(32, 9, 0.8f);
  req["prompt"] = {"In the beginning", "And Ruth said"};
  req["n"] = 2;
  req["block_length"] = 8;
  req["stop"] = {",", "LORD"};
  const json plain = post(port_, "/v1/completions", req);
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  const Streamed s = post_stream(port_, "/v1/completions", req);
  ASSERT_EQ(s.status, 200);
  ASSERT_TRUE(s.done);
  const auto got = texts(s, false);
  ASSERT_EQ(plain["choices"].size(), 4u);
  std::map<int64_t, json> reasons;
  for (const json& c : s.chunks)
    for (const json& ch : c["choices"])
      if (!ch["finish_reason"].is_null()) reasons[ch["index"].get<int64_t>()] = ch["finish_reason"];
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(got.at(i), plain["choices"][size_t(i)]["text"]) << "choice " << i;
    EXPECT_EQ(reasons[i], plain["choices"][size_t(i)]["finish_reason"]) << "choice " << i;
  }
  EXPECT_EQ(s.chunks.back()["usage"], plain["usage"]);
}

// The canvas extension: every generated position is reported once, with the token the answer has there.
TEST_F(ServerStream, CanvasReportsEveryRevealedPosition) {
  json req = request(16, 4, 0.6f);
  req["prompt"] = {4, 5, 6, 7};
  req["stream"] = true;
  req["stream_options"] = {{"canvas", true}};
  const Streamed s = post_stream(port_, "/v1/completions", req);
  ASSERT_EQ(s.status, 200);
  std::map<int64_t, int64_t> seen;
  int last_step = -1;
  for (const json& c : s.chunks) {
    if (!c.contains("canvas")) continue;
    EXPECT_EQ(c["choices"][0]["text"], "");
    EXPECT_GT(c["canvas"]["step"].get<int>(), last_step);
    last_step = c["canvas"]["step"];
    for (const json& t : c["canvas"]["revealed"])
      EXPECT_TRUE(seen.emplace(t["position"].get<int64_t>(), t["token"].get<int64_t>()).second) << t.dump();
  }
  GenerationOptions o = generation_defaults(kModel);
  o.max_new_tokens = 16, o.steps = 16, o.seed = 4, o.temperature = 0.6f;
  const GenerationResult want = generate(*model_, *tok_, {4, 5, 6, 7}, o);
  for (size_t k = 0; k < want.new_ids.size(); ++k) EXPECT_EQ(seen.at(int64_t(k)), want.new_ids[k]) << "position " << k;
  EXPECT_EQ(texts(s, false)[0], want.text);
}

// Errors before the stream starts are ordinary error responses.
TEST_F(ServerStream, BadStreamedRequestIsAnErrorResponse) {
  json req = request(16, 0, 0);
  req["prompt"] = "In";
  req["stream"] = true;
  req["block_length"] = 5;
  const Streamed s = post_stream(port_, "/v1/completions", req);
  EXPECT_EQ(s.status, 400);
}

// A client that hangs up mid-stream: its request is cancelled, and the slot and KV bytes return to zero long
// before the generation would have finished.
TEST(ServerStreamDisconnect, FreesSlotAndKvBytes) {
  auto model = Model::load(kModel);
  const Tokenizer tok = Tokenizer::load(kModel);
  ServerOptions so;
  so.port = 0;
  so.defaults = generation_defaults(kModel);
  so.scheduler.max_batch = 1;
  Server server(*model, tok, so);
  const int port = server.start();
  json req = request(240, 1, 0.5f);
  req["prompt"] = "In";
  req["block_length"] = 8;
  req["cache"] = "dual";
  req["stream"] = true;
  httplib::Client c("127.0.0.1", port);
  httplib::Request r;
  r.method = "POST";
  r.path = "/v1/completions";
  r.body = req.dump();
  r.set_header("Content-Type", "application/json");
  json during;
  r.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    during = get(port, "/health");
    return false;  // hang up at the first bytes
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  c.send(r, res, err);
  EXPECT_EQ(err, httplib::Error::Canceled);
  EXPECT_EQ(during["running"], 1) << during.dump();
  EXPECT_GT(during["kv_bytes"].get<int64_t>(), 0) << during.dump();
  json h;
  for (int i = 0; i < 500; ++i) {
    h = get(port, "/health");
    if (h["running"] == 0 && h["queued"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(h["running"], 0) << h.dump();
  EXPECT_EQ(h["kv_bytes"], 0) << h.dump();
  EXPECT_EQ(h["cancelled"], 1) << h.dump() << ": the request ran to its end instead";
  // The server goes on.
  json again = request(8, 1, 0);
  again["prompt"] = "In";
  EXPECT_FALSE(post(port, "/v1/completions", again).is_null());
}

}  // namespace
}  // namespace dlx
