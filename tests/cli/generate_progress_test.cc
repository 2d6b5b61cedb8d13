// generate's progress on stderr (cli/canvas_view.h, cmd_generate.cc): on a terminal (a pseudo-terminal from
// `script`) the canvas fills in and is erased before the text; with pipes nothing, unless --progress, and then
// plain lines on stderr only, so stdout (text or JSON) stays clean; -q turns it off everywhere.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace dlx {
namespace {

const std::string kModel = test::source_path("models/kjv-dream-tiny");

struct Ran {
  int status = -1;
  std::string out, err;
};

// `args` run by the shell with stdout to a pipe and stderr to a file.
Ran run(const std::string& command) {
  test::TempDir tmp;
  const std::string err = tmp / "stderr.txt";
  Ran r;
  FILE* p = popen((command + " 2>" + err).c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream in(err);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  return r;
}

// generate --json's object without its timings.
nlohmann::json untimed(const std::string& out) {
  nlohmann::json j = nlohmann::json::parse(out);
  j.erase("timings");
  return j;
}

std::string generate_args(const std::string& extra) {
  return std::string(DIFFULEX_BINARY) + " generate --model " + kModel +
         " --prompt 'In the beginning' --max-new-tokens 24 --steps 24 --block-length 8 --seed 3 " + extra;
}

TEST(GenerateProgress, PipesGetNoneUnlessAsked) {
  const Ran plain = run(generate_args("--json"));
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_EQ(plain.err.find("generate ["), std::string::npos) << plain.err;
  const Ran asked = run(generate_args("--json --progress"));
  ASSERT_EQ(asked.status, 0) << asked.err;
  EXPECT_NE(asked.err.find("generate ["), std::string::npos) << asked.err;
  EXPECT_EQ(asked.err.find('\033'), std::string::npos) << "no terminal codes in a file";
  EXPECT_EQ(untimed(asked.out), untimed(plain.out)) << "stdout is the JSON alone";
  const Ran quiet =
      run(std::string(DIFFULEX_BINARY) + " -q" + generate_args("--json --progress").substr(std::string(DIFFULEX_BINARY).size()));
  ASSERT_EQ(quiet.status, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  EXPECT_EQ(untimed(quiet.out), untimed(plain.out));
}

// Continuous batching with --progress: a line over the requests on stderr, one JSON line each on stdout.
TEST(GenerateProgress, ContinuousBatchingCountsRequests) {
  test::TempDir tmp;
  std::ofstream(tmp / "p.txt") << "In the beginning\nBlessed are\nAnd Ruth said\n";
  const Ran r = run(std::string(DIFFULEX_BINARY) + " generate --model " + kModel + " --prompts-file " + (tmp / "p.txt") +
                    " --max-new-tokens 8 --steps 8 --max-batch 2 --progress");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("3/3  "), std::string::npos) << r.err;
  std::istringstream lines(r.out);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) EXPECT_TRUE(nlohmann::json::parse(line).contains("text"));
  EXPECT_EQ(n, 3);
}

// On a terminal: the canvas view (the step line, masks as '·') drawn on stderr and erased, then the text.
TEST(GenerateProgress, TerminalShowsTheCanvasFillingIn) {
  if (system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "no `script` (util-linux) to make a terminal";
  const Ran want = run(generate_args(""));
  ASSERT_EQ(want.status, 0) << want.err;
  const std::string text = want.out.substr(0, want.out.find('\n'));
  ASSERT_FALSE(text.empty());
  const Ran tty = run("script -qec \"" + generate_args("") + "\" /dev/null");
  ASSERT_EQ(tty.status, 0) << tty.out << tty.err;
  EXPECT_NE(tty.out.find("step 1/24"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("step 24/24"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("\xC2\xB7"), std::string::npos) << "masked positions as '·'";
  EXPECT_NE(tty.out.find("\033[J"), std::string::npos) << "erased";
  EXPECT_NE(tty.out.find(text), std::string::npos) << "the text after the view";
  const Ran quiet = run("script -qec \"" + std::string(DIFFULEX_BINARY) + " -q" +
                        generate_args("").substr(std::string(DIFFULEX_BINARY).size()) + "\" /dev/null");
  ASSERT_EQ(quiet.status, 0);
  EXPECT_EQ(quiet.out.find("step "), std::string::npos) << quiet.out;
}

}  // namespace
}  // namespace dlx
