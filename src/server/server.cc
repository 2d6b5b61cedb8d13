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

  void routes();
  void engine_main();
  std::vector<std::future<FinishedRequest>> submit(const server::ApiRequest& r);
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);

  Model& model;
  const Tokenizer tok;
  const ServerOptions opts;
  BatchScheduler sched;
  httplib::Server http;
  std::thread engine, listener;
  std::atomic<bool> listen_returned{false};
  std::mutex mu;  // waiting, stop_engine
  std::condition_variable cv;
  std::map<uint64_t, std::promise<FinishedRequest>> waiting;  // by scheduler id
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
      it->second.set_value(std::move(f));
      waiting.erase(it);
    }
    if (!failure.empty()) {  // the requests it held cannot be trusted to finish
      for (auto& [id, p] : waiting) {
        FinishedRequest f;
        f.id = id;
        f.error = failure;
        p.set_value(std::move(f));
      }
      waiting.clear();
    }
  }
}

// Submits every choice of the request; on a refused submission the ones already queued still run, unread.
std::vector<std::future<FinishedRequest>> Server::Impl::submit(const server::ApiRequest& r) {
  std::vector<std::future<FinishedRequest>> out;
  std::string error;
  {
    std::lock_guard<std::mutex> lk(mu);
    for (const auto& prompt : r.prompts)
      for (int64_t j = 0; j < r.n && error.empty(); ++j) {
        GenerationOptions o = r.opts;
        o.seed += uint64_t(j);
        try {
          out.push_back(waiting[sched.submit(prompt, o)].get_future());
        } catch (const Error& e) {
          error = e.what();
        }
      }
  }
  cv.notify_all();
  if (!error.empty()) throw ApiError(400, error, r.prompt_param());
  return out;
}

void Server::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const json body = server::parse_body(req.body);
  const server::ApiRequest r = server::parse_request(body, chat, model, tok, opts.defaults, opts.model_name);
  std::vector<std::future<FinishedRequest>> pending = submit(r);
  std::vector<server::Choice> choices;
  for (auto& f : pending) {
    FinishedRequest done = f.get();
    if (!done.error.empty()) throw ApiError(500, "generation failed: " + done.error);
    choices.push_back(server::make_choice(done.result, r, tok));
  }
  const std::string id = fmt::format("{}-{}-{}", chat ? "chatcmpl" : "cmpl", created, responses++);
  reply(res, 200, server::response_body(r, choices, id, opts.model_name, unix_now()));
}

void Server::Impl::routes() {
  using httplib::Request, httplib::Response;
  http.Get("/health", guarded([this](const Request&, Response& res) {
    reply(res, 200, {{"status", "ok"}, {"model", opts.model_name}, {"running", sched.active()}, {"queued", sched.queued()}});
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
