// diffulex serve: the OpenAI-compatible HTTP server (server/server.h, docs/SERVER.md) until SIGINT or SIGTERM,
// which stop it gracefully (requests in flight finish). Prints "listening on http://HOST:PORT" on stdout once
// it accepts connections; one log line per request on stderr.
#include <fmt/format.h>
#include <pthread.h>

#include <csignal>
#include <cstring>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "model/model.h"
#include "server/server.h"

namespace dlx::cli {

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions; "
                                          "docs/SERVER.md)");
  struct Args {
    std::string model, tokenizer, kv_budget = "auto";
    int threads = 0;
    ServerOptions so;
    LoadOptions lo;
    GenerationFlags gen;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Checkpoint directory (with tokenizer.json)")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json or its directory (default: the model directory)");
  cmd->add_option("--served-model-name", a->so.model_name, "Model id in the API (default: the model directory's name)");
  cmd->add_option("--host", a->so.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->so.port, "Port to listen on (0: any free port)")->capture_default_str();
  cmd->add_option("--max-batch", a->so.scheduler.max_batch, "Requests decoded at once (continuous batching)")
      ->capture_default_str();
  cmd->add_option("--kv-budget", a->kv_budget,
                  "KV-cache bytes of the running requests together (e.g. 8G; auto: 70% of free GPU memory, "
                  "unlimited on the CPU)");
  cmd->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  cmd->add_option("--max-connections", a->so.max_connections,
                  "Connections open at once (one worker thread each); more are answered 503")
      ->capture_default_str()->check(CLI::Range(1, 65536));
  cmd->add_option("--request-timeout", a->so.request_timeout_s,
                  "Seconds a request's line, headers and body may take to arrive")
      ->capture_default_str()->check(CLI::Range(0.001, 86400.0));
  cmd->add_option("--idle-timeout", a->so.idle_timeout_s, "Seconds a kept-alive connection may wait idle")
      ->capture_default_str()->check(CLI::Range(0.001, 86400.0));
  add_load_options(*cmd, a->lo);
  a->gen.add(*cmd);  // the defaults for what a request does not set
  cmd->callback([a] {
    // SIGINT / SIGTERM are blocked in every thread (threads inherit the mask) and taken by sigwait below.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not end the server
    if (log_level() == LogLevel::Warn) set_log_level(LogLevel::Info);  // the request lines (-q silences them)
    if (a->threads > 0) set_num_threads(a->threads);

    auto model = Model::load(a->model, a->lo);
    Tokenizer tok = Tokenizer::load(a->tokenizer.empty() ? a->model : a->tokenizer);
    a->so.defaults = a->gen.resolve(a->model);
    a->so.scheduler.kv_budget_bytes = kv_budget_bytes(*model, a->kv_budget);
    check(a->so.scheduler.max_batch > 0, "--max-batch must be positive (got {})", a->so.scheduler.max_batch);
    Server server(*model, tok, a->so);
    const int port = server.start();
    fmt::print("listening on http://{}:{} (model {} on {})\n", a->so.host, port, server.model_name(),
               model->backend().name());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    log_info("{}: finishing the requests in flight", strsignal(sig));
    server.stop();
  });
}

}  // namespace dlx::cli
