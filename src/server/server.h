// diffulex serve (docs/SERVER.md): an OpenAI-compatible HTTP server over the continuous-batching scheduler.
// HTTP worker threads parse a request (server/api.h), submit its prompts to one BatchScheduler and wait; one
// engine thread steps the scheduler while anything is queued or running and hands each finished request back to
// its waiting worker. So concurrent requests share batched forward passes, and each result equals a solo
// generate() with the same options and seed (docs/BATCHING.md).
#pragma once
#include <memory>
#include <string>

#include "engine/batch_scheduler.h"

namespace dlx {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;             // 0: any free port (start() returns the one bound)
  std::string model_name;      // the id /v1/models lists and requests may name; "": the model directory's name
  GenerationOptions defaults;  // the generation options a request does not set
  SchedulerOptions scheduler;
  // Connection limits (docs/SERVER.md, "Limits"): slow, idle or vanished clients hold no worker for long, and a
  // flood of connections is answered 503 at once instead of queueing in front of /health.
  int max_connections = 256;      // open at once (one worker thread each); more are answered 503 and closed
  double request_timeout_s = 30;  // a request's line, headers and body must all arrive within this
  double idle_timeout_s = 5;      // a kept-alive connection with no next request is closed after this
};

class Server {
 public:
  // Throws Error when the default options are invalid for the model.
  Server(Model& model, Tokenizer tok, ServerOptions opts);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and serves from background threads; returns the bound port. Throws Error when it cannot bind.
  int start();
  // Stops accepting connections, lets the requests in flight finish, then stops the engine. Idempotent.
  void stop();
  const std::string& model_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dlx
