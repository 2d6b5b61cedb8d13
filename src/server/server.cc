#include "server/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "server/api.h"
#include "server/stream.h"

namespace dlx {

using nlohmann::json;
using server::ApiError;

namespace {

thread_local std::chrono::steady_clock::time_point t_request_start;  // set before routing, read by the logger

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// A route whose every failure is answered with an OpenAI error body (ApiError: its status; anything else: 500).
httplib::Server::Handler guarded(std::function<void(const httplib::Request&, httplib::Response&)> fn) {
  return [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
    try {
      fn(req, res);
    } catch (const ApiError& e) {
      reply(res, e.status, server::error_body(e.status, e.what(), e.param));
    } catch (const std::exception& e) {
      reply(res, 500, server::error_body(500, e.what(), ""));
    }
  };
}

std::string dir_name(const std::string& dir) {
  std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

struct Server::Impl {
  Impl(Model& m, Tokenizer t, ServerOptions o)
      : model(m), tok(std::move(t)), opts(std::move(o)), sched(model, tok, opts.scheduler) {}

  struct Stream;
  using OnDone = std::function<void(FinishedRequest&&)>;

  void routes();
  void engine_main();
  std::vector<uint64_t> submit(const server::ApiRequest& r, const std::function<OnDone(size_t)>& on_done,
                               const std::function<StepCallback(size_t)>& on_step = {});
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, std::shared_ptr<const server::ApiRequest> r, const std::string& id);
  bool write_stream(Stream& st, httplib::DataSink& sink);

  Model& model;
  const Tokenizer tok;
  const ServerOptions opts;
  BatchScheduler sched;
  httplib::Server http;
  std::thread engine, listener;
  std::atomic<bool> listen_returned{false};
  std::mutex mu;  // waiting, stop_engine
  std::condition_variable cv;
  std::map<uint64_t, OnDone> waiting;  // by scheduler id
  bool stop_engine = false;
  std::atomic<uint64_t> responses{0};
  const int64_t created = unix_now();
};

// Steps the scheduler while requests wait for it; sleeps otherwise.
void Server::Impl::engine_main() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return stop_engine || !waiting.empty(); });
      if (stop_engine) return;
    }
    std::vector<FinishedRequest> done;
    std::string failure;
    try {
      done = sched.step();
    } catch (const std::exception& e) {
      failure = e.what();
      log_warn("engine step failed: {}", failure);
    }
    std::lock_guard<std::mutex> lk(mu);
    for (FinishedRequest& f : done) {
      auto it = waiting.find(f.id);
      if (it == waiting.end()) continue;  // failed with an earlier step
      it->second(std::move(f));
      waiting.erase(it);
    }
    if (!failure.empty()) {  // the requests it held cannot be trusted to finish
      for (auto& [id, on_done] : waiting) {
        FinishedRequest f;
        f.id = id;
        f.error = failure;
        on_done(std::move(f));
      }
      waiting.clear();
    }
  }
}

// Submits every choice of the request (prompt-major: choice i * n + j); on_done(choice) is called with its
// result (from the engine thread, under `mu`), on_step(choice), when given, after each of its steps. On a refused
// submission the choices already queued are cancelled.
std::vector<uint64_t> Server::Impl::submit(const server::ApiRequest& r, const std::function<OnDone(size_t)>& on_done,
                                           const std::function<StepCallback(size_t)>& on_step) {
  std::vector<uint64_t> ids;
  std::string error;
  {
    std::lock_guard<std::mutex> lk(mu);
    for (const auto& prompt : r.prompts)
      for (int64_t j = 0; j < r.n && error.empty(); ++j) {
        GenerationOptions o = r.opts;
        o.seed += uint64_t(j);
        const size_t choice = ids.size();
        try {
          ids.push_back(sched.submit(prompt, o, on_step ? on_step(choice) : StepCallback()));
          waiting[ids.back()] = on_done(choice);
        } catch (const Error& e) {
          error = e.what();
        }
      }
  }
  cv.notify_all();
  if (!error.empty()) {
    for (uint64_t id : ids) sched.cancel(id);
    throw ApiError(400, error, r.prompt_param());
  }
  return ids;
}

void Server::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const json body = server::parse_body(req.body);
  auto r = std::make_shared<const server::ApiRequest>(
      server::parse_request(body, chat, model, tok, opts.defaults, opts.model_name));
  const std::string id = fmt::format("{}-{}-{}", chat ? "chatcmpl" : "cmpl", created, responses++);
  if (r->stream) return stream(res, r, id);
  // Shared with the handlers: a refused submission leaves cancelled choices that report after this returns.
  auto results = std::make_shared<std::vector<std::promise<FinishedRequest>>>(r->prompts.size() * size_t(r->n));
  submit(*r, [&](size_t i) { return [results, i](FinishedRequest&& f) { (*results)[i].set_value(std::move(f)); }; });
  std::vector<server::Choice> choices;
  for (auto& p : *results) {
    FinishedRequest done = p.get_future().get();
    if (!done.error.empty()) throw ApiError(500, "generation failed: " + done.error);
    choices.push_back(server::make_choice(done.result, *r, tok));
  }
  reply(res, 200, server::response_body(*r, choices, id, opts.model_name, unix_now()));
}

// A streamed request (docs/SERVER.md, "Streaming"): each choice's latest canvas and its result, posted by the
// scheduler's threads and read by the HTTP worker that writes the events.
struct Server::Impl::Stream {
  std::shared_ptr<const server::ApiRequest> req;
  std::string id;
  std::vector<uint64_t> ids;  // scheduler ids by choice
  std::mutex mu;              // the fields below
  std::condition_variable cv;
  struct Choice {
    std::vector<int64_t> generated;  // the canvas's generated part after the latest step
    int step = 0, steps = 0;
    uint64_t version = 0;  // steps posted
    bool done = false;
    FinishedRequest result;
  };
  std::vector<Choice> choices;
};

void Server::Impl::stream(httplib::Response& res, std::shared_ptr<const server::ApiRequest> r, const std::string& id) {
  auto st = std::make_shared<Stream>();
  st->req = r;
  st->id = id;
  st->choices.resize(r->prompts.size() * size_t(r->n));
  st->ids = submit(
      *r,
      [&](size_t i) {
        return [st, i](FinishedRequest&& f) {
          std::lock_guard<std::mutex> lk(st->mu);
          st->choices[i].result = std::move(f);
          st->choices[i].done = true;
          st->cv.notify_all();
        };
      },
      [&](size_t i) -> StepCallback {
        const int64_t P = int64_t(r->prompts[i / size_t(r->n)].size());
        // The stream holds no reference back to the callback: a weak pointer lets a finished stream go.
        return [w = std::weak_ptr<Stream>(st), i, P](int step, int steps, int64_t, const Tensor& canvas) {
          const auto s = w.lock();
          if (!s) return;
          const int64_t* row = canvas.data<int64_t>();
          std::lock_guard<std::mutex> lk(s->mu);
          Stream::Choice& c = s->choices[i];
          c.generated.assign(row + P, row + canvas.dim(1));
          c.step = step, c.steps = steps;
          ++c.version;
          s->cv.notify_all();
        };
      });
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [this, st](size_t, httplib::DataSink& sink) { return write_stream(*st, sink); },
      [this, st](bool) {  // however the response ended: nothing of it keeps running
        for (uint64_t sid : st->ids) sched.cancel(sid);
      });
}

// Writes the whole event stream of `st`; false when the client has gone (its choices are then cancelled by the
// releaser). Every step that adds no text writes an SSE comment, so a client that hung up is noticed within a
// step or two (a write to a closed connection fails) and its slot and KV bytes are freed.
bool Server::Impl::write_stream(Stream& st, httplib::DataSink& sink) {
  const server::ApiRequest& r = *st.req;
  const server::Chunks chunks{r, st.id, opts.model_name, unix_now()};
  const size_t n = st.choices.size();
  const int64_t mask_id = model.config().mask_token_id;
  std::vector<server::ChoiceStream> streams;
  for (size_t i = 0; i < n; ++i) streams.emplace_back(r, tok, stop_token_ids(model, tok), mask_id);
  std::vector<uint64_t> seen(n, 0);
  std::vector<bool> ended(n, false);
  size_t ended_count = 0;
  int64_t completion_tokens = 0;
  auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };

  std::string out;
  if (r.chat)
    for (size_t i = 0; i < n; ++i) out += server::sse_event(chunks.role(i));
  while (ended_count < n) {
    struct Update {
      size_t i;
      std::vector<int64_t> generated;
      int step, steps;
      bool done;
      FinishedRequest result;
    };
    std::vector<Update> updates;
    {
      std::unique_lock<std::mutex> lk(st.mu);
      auto ready = [&](size_t i) { return !ended[i] && (st.choices[i].version != seen[i] || st.choices[i].done); };
      st.cv.wait_for(lk, std::chrono::seconds(1), [&] {
        for (size_t i = 0; i < n; ++i)
          if (ready(i)) return true;
        return false;
      });
      for (size_t i = 0; i < n; ++i) {
        if (!ready(i)) continue;
        Stream::Choice& c = st.choices[i];
        Update u{i, {}, c.step, c.steps, c.done, {}};
        if (c.version != seen[i]) u.generated = c.generated, seen[i] = c.version;
        if (c.done) u.result = std::move(c.result);
        updates.push_back(std::move(u));
      }
    }
    for (Update& u : updates) {
      server::ChoiceStream& cs = streams[u.i];
      server::StreamUpdate text;
      if (!u.generated.empty()) {
        if (r.canvas) {
          const int64_t masked = std::count(u.generated.begin(), u.generated.end(), mask_id);
          out += server::sse_event(chunks.canvas(u.i, u.step, u.steps, cs.revealed(u.generated), masked));
        }
        text = cs.update(u.generated);
      }
      if (!text.finished && u.done) {
        if (!u.result.error.empty()) {  // the generation failed: an error event ends the stream
          out += server::sse_event(server::error_body(500, "generation failed: " + u.result.error, ""));
          out += server::kSseDone;
          write(out);
          sink.done();
          return true;
        }
        text = cs.finish(u.result.result);
      }
      if (!text.text.empty()) out += server::sse_event(chunks.text(u.i, text.text));
      if (text.finished) {
        out += server::sse_event(chunks.finish(u.i, text.finish_reason));
        completion_tokens += text.completion_tokens;
        ended[u.i] = true;
        ++ended_count;
        if (!u.done) sched.cancel(st.ids[u.i]);  // its text is complete: the remaining steps would change nothing
      }
    }
    if (out.empty()) out = ": diffulex: generating\n\n";  // an SSE comment, ignored by clients
    if (!write(out)) return false;
    out.clear();
  }
  if (r.include_usage) {
    int64_t prompt_tokens = 0;
    for (const auto& p : r.prompts) prompt_tokens += int64_t(p.size());
    out += server::sse_event(chunks.usage(prompt_tokens, completion_tokens));
  }
  out += server::kSseDone;
  if (!write(out)) return false;
  sink.done();
  return true;
}

void Server::Impl::routes() {
  using httplib::Request, httplib::Response;
  http.Get("/health", guarded([this](const Request&, Response& res) {
    reply(res, 200,
          {{"status", "ok"},
           {"model", opts.model_name},
           {"running", sched.active()},
           {"queued", sched.queued()},
           {"kv_bytes", sched.kv_bytes_in_use()},
           {"cancelled", sched.cancelled()}});
  }));
  http.Get("/v1/models", guarded([this](const Request&, Response& res) {
    reply(res, 200,
          {{"object", "list"},
           {"data", {{{"id", opts.model_name}, {"object", "model"}, {"created", created}, {"owned_by", "diffulex"}}}}});
  }));
  http.Post("/v1/completions", guarded([this](const Request& req, Response& res) { generate(req, res, false); }));
  http.Post("/v1/chat/completions", guarded([this](const Request& req, Response& res) { generate(req, res, true); }));

  // Responses without a body of ours (no such route, or a request httplib could not parse) get an error body.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const Request& req, Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string msg =
        res.status == 404 ? fmt::format("no route {} {} (GET /health, GET /v1/models, POST /v1/completions, POST "
                                        "/v1/chat/completions)",
                                        req.method, req.path)
                          : fmt::format("HTTP {} for {} {}", res.status, req.method, req.path);
    reply(res, res.status, server::error_body(res.status, msg, ""));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_pre_routing_handler([](const Request&, Response&) {
    t_request_start = std::chrono::steady_clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.set_logger([](const Request& req, const Response& res) {
    if (log_level() < LogLevel::Info) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_request_start).count();
    std::string why;
    if (res.status >= 400) {
      const json body = json::parse(res.body, nullptr, false);
      if (body.contains("error")) why = ": " + body["error"].value("message", "");
    }
    log_info("{} {} {} {} {:.3f}s{}", req.remote_addr, req.method, req.path, res.status, s, why);
  });
  // Enough workers for a full batch of waiting requests plus the quick routes.
  const size_t workers = size_t(std::max<int64_t>(8, opts.scheduler.max_batch + 4));
  http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  http.set_payload_max_length(size_t(64) << 20);
}

Server::Server(Model& model, Tokenizer tok, ServerOptions opts) {
  if (opts.model_name.empty()) opts.model_name = dir_name(model.dir());
  const std::string err = server::options_error(model, opts.defaults);
  check(err.empty(), "default generation options: {}", err);
  const int64_t ctx = model.config().max_position_embeddings;
  check(ctx == 0 || opts.defaults.max_new_tokens < ctx,
        "default max_new_tokens {} leaves no room for a prompt in the model's context of {} tokens",
        opts.defaults.max_new_tokens, ctx);
  impl_ = std::make_unique<Impl>(model, std::move(tok), std::move(opts));
  impl_->routes();
}

Server::~Server() { stop(); }

const std::string& Server::model_name() const { return impl_->opts.model_name; }

int Server::start() {
  Impl& s = *impl_;
  check(!s.listener.joinable() && !s.listen_returned, "the server was already started");
  const std::string& host = s.opts.host;
  const int port = s.opts.port == 0                          ? s.http.bind_to_any_port(host)
                   : s.http.bind_to_port(host, s.opts.port) ? s.opts.port
                                                             : -1;
  check(port > 0, "cannot listen on {}:{} (port in use, or not an address of this machine)", host, s.opts.port);
  s.engine = std::thread([&s] { s.engine_main(); });
  s.listener = std::thread([&s] {
    s.http.listen_after_bind();
    s.listen_returned = true;
  });
  // Until the accept loop runs, httplib's stop() would not stop it.
  while (!s.http.is_running() && !s.listen_returned) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return port;
}

void Server::stop() {
  Impl& s = *impl_;
  if (s.listener.joinable()) {
    s.http.stop();  // closes the listening socket; listen returns once the workers have finished their requests
    s.listener.join();
  }
  if (s.engine.joinable()) {
    {
      std::lock_guard<std::mutex> lk(s.mu);
      s.stop_engine = true;
    }
    s.cv.notify_all();
    s.engine.join();
  }
}

}  // namespace dlx
