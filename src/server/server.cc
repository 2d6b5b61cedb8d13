#include "server/server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <malloc.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
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

// --- Connections (docs/SERVER.md, "Limits") ---------------------------------------------------------------------
// httplib's own pool has a fixed number of workers, each held by one connection for as long as the client keeps
// sending a byte before each read timeout, so a few slow or idle clients leave /health unanswered. Here every
// connection gets a worker of its own, up to ServerOptions::max_connections (more are answered 503 on the
// accepting thread), and each request must arrive whole within request_timeout_s.

using Clock = std::chrono::steady_clock;

thread_local bool t_refuse = false;  // set by ConnectionPool while the accepting thread runs a refused connection
thread_local int t_client_fd = -1;   // the connection the current worker serves

int millis_until(Clock::time_point t) {
  return int(std::clamp<int64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count(), 0, 1 << 30));
}

// Waits up to `ms` for `events` on fd; true when they (or a hang-up or error, which the next call reports) came.
bool wait_fd(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  int r;
  while ((r = ::poll(&p, 1, ms)) < 0 && errno == EINTR) {
  }
  return r > 0;
}

// True when the peer of fd has closed its side (or the socket failed); pipelined bytes do not count.
bool peer_gone(int fd) {
  if (!wait_fd(fd, POLLIN, 0)) return false;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// One worker thread per connection, at most `max` connections at once. A thread waits up to a second for the next
// connection, then exits (its stack pages go back to the system), so a burst leaves no threads behind.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(size_t max) : max_(max) {}
  ~ConnectionPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lk(mu_);
    if (busy_ >= max_ || stopping_) {  // fn answers 503 and closes the socket without reading the request
      lk.unlock();
      t_refuse = true;
      fn();
      t_refuse = false;
      return;
    }
    ++busy_;
    jobs_.push_back(std::move(fn));
    if (jobs_.size() > idle_) {  // no waiting thread is left for it
      ++threads_;
      std::thread([this] { work(); }).detach();
    } else {
      cv_.notify_one();
    }
  }

  void shutdown() override {
    std::unique_lock<std::mutex> lk(mu_);
    stopping_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return threads_ == 0; });
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      ++idle_;
      cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) {  // idle for a second, or stopping
        // The last one gives the freed memory of the burst back to the system (glibc keeps it in the arenas of
        // the threads that freed it otherwise: 30 MB idle became 50 MB after the load test).
        const bool last = --threads_ == 0;
        cv_.notify_all();  // shutdown() waits for the last one
        lk.unlock();       // the pool may be gone from here on
        if (last) ::malloc_trim(0);
        return;
      }
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lk.unlock();
      fn();
      fn = nullptr;
      lk.lock();
      --busy_;
    }
  }

  const size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  size_t busy_ = 0, idle_ = 0, threads_ = 0;
  bool stopping_ = false;
};

// A connection's socket as httplib reads and writes it, with a deadline on reading the current request.
class ConnStream final : public httplib::Stream {
 public:
  ConnStream(int fd, int io_timeout_ms) : fd_(fd), io_ms_(io_timeout_ms) {}
  void set_read_deadline(Clock::time_point t) { deadline_ = t; }

  bool is_readable() const override {
    if (Clock::now() >= deadline_) return false;  // even for a client that sends fast, but without end
    return pos_ < len_ || wait_fd(fd_, POLLIN, std::min(io_ms_, millis_until(deadline_)));
  }
  bool is_writable() const override { return wait_fd(fd_, POLLOUT, io_ms_) && !peer_gone(fd_); }
  ssize_t read(char* p, size_t n) override {
    if (Clock::now() >= deadline_) return -1;
    if (pos_ == len_) {
      if (!is_readable()) return -1;  // the read timeout or the request's deadline passed
      const ssize_t r = recv_retry(buf_, sizeof buf_);
      if (r <= 0) return r;
      pos_ = 0, len_ = size_t(r);
    }
    n = std::min(n, len_ - pos_);
    std::memcpy(p, buf_ + pos_, n);
    pos_ += n;
    return ssize_t(n);
  }
  ssize_t write(const char* p, size_t n) override {
    if (!wait_fd(fd_, POLLOUT, io_ms_)) return -1;
    ssize_t r;
    while ((r = ::send(fd_, p, n, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    return r;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  ssize_t recv_retry(char* p, size_t n) {
    ssize_t r;
    while ((r = ::recv(fd_, p, n, 0)) < 0 && errno == EINTR) {
    }
    return r;
  }
  void address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear(), port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = "";
    if (a.ss_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
      port = ntohs(in->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &in->sin6_addr, text, sizeof text);
      port = ntohs(in->sin6_port);
    }
    ip = text;
  }

  const int fd_;
  const int io_ms_;
  Clock::time_point deadline_ = Clock::time_point::max();
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

// httplib's server with the connection loop above (its process_and_close_socket, a private virtual, overridden;
// process_request, protected, does the HTTP).
class LimitedServer final : public httplib::Server {
 public:
  LimitedServer(const ServerOptions& o) : opts_(o) {
    new_task_queue = [this] { return new ConnectionPool(size_t(std::max(1, opts_.max_connections))); };
    set_keep_alive_timeout(std::max<time_t>(1, time_t(opts_.idle_timeout_s)));  // what the Keep-Alive header says
  }

  // After binding: httplib listens with a backlog of 5, so a burst of connections overflows it and the kernel drops
  // their SYNs, which clients resend a second later (a /health behind 40 new connections waited 1 s for its connect).
  void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

 private:
  bool process_and_close_socket(socket_t sock) override {
    if (t_refuse) {
      refuse(sock);
    } else {
      t_client_fd = sock;
      serve(sock);
      t_client_fd = -1;
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return true;
  }

  void serve(int sock) {
    const auto ms = [](double s) { return int(std::clamp(s * 1000.0, 1.0, 1e9)); };
    ConnStream strm(sock, ms(std::min(opts_.request_timeout_s, 5.0)));
    for (size_t count = keep_alive_max_count_; count > 0 && svr_sock_ != INVALID_SOCKET; --count) {
      // Idle between requests: the next one must start within idle_timeout_s.
      strm.set_read_deadline(Clock::time_point::max());
      const Clock::time_point idle_end = Clock::now() + std::chrono::milliseconds(ms(opts_.idle_timeout_s));
      while (!wait_fd(sock, POLLIN, std::min(100, millis_until(idle_end))))  // 100 ms: stop() is noticed soon
        if (Clock::now() >= idle_end || svr_sock_ == INVALID_SOCKET) return;
      t_request_start = Clock::now();  // for the log line of a request that fails before routing
      strm.set_read_deadline(t_request_start + std::chrono::milliseconds(ms(opts_.request_timeout_s)));
      bool closed = false;
      if (!process_request(strm, count == 1, closed, nullptr) || closed) return;
    }
  }

  // Too many connections: a 503 on a socket nothing was read from (the accepting thread writes it; a fresh
  // socket's send buffer takes it without blocking).
  void refuse(int sock) {
    const std::string body = server::error_body(503, "too many connections; try again later", "").dump();
    const std::string msg = fmt::format(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n{}",
        body.size(), body);
    (void)!::send(sock, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    log_warn("refused a connection: {} open (--max-connections)", opts_.max_connections);
  }

  const ServerOptions& opts_;
};

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
  LimitedServer http{opts};
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
  for (bool busy = false;; busy = true) {
    {
      std::unique_lock<std::mutex> lk(mu);
      if (busy && waiting.empty()) {  // a burst ended: the memory its requests freed goes back to the system
        lk.unlock();
        ::malloc_trim(0);
        lk.lock();
      }
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
  const std::vector<uint64_t> ids = submit(
      *r, [&](size_t i) { return [results, i](FinishedRequest&& f) { (*results)[i].set_value(std::move(f)); }; });
  std::vector<server::Choice> choices;
  for (auto& p : *results) {
    std::future<FinishedRequest> f = p.get_future();
    // A client that hung up gets nothing: its choices are cancelled, so they stop taking batch slots.
    while (f.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready)
      if (t_client_fd >= 0 && peer_gone(t_client_fd)) {
        for (uint64_t sid : ids) sched.cancel(sid);
        throw ApiError(400, "the client closed the connection before the completion was ready");
      }
    FinishedRequest done = f.get();
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
  s.http.widen_backlog();
  // One malloc arena per core at most: with one per connection thread (glibc's default allows 8 per core), the
  // memory a burst of connections freed stays spread over arenas that malloc_trim cannot shrink well.
  ::mallopt(M_ARENA_MAX, int(std::max(2u, std::thread::hardware_concurrency())));
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
