// The masked-token evaluation (eval command): it must reproduce the PyTorch training code's numbers for the
// shipped bf16 model (testdata/kjv/eval_reference.json), and quantization quality on that model must order as
// expected: GPTQ and AWQ lose clearly less held-out NLL than RTN at 4 bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/masked_eval.h"
#include "model/model.h"
#include "quant/quantizer.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace dlx {
namespace {

using json = nlohmann::json;
using test::TempDir;

const std::string kModel = test::source_path("models/kjv-dream-tiny");

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(MaskedEval, MaskUniformIsSplitmix64) {
  // splitmix64(0) is the first output of the reference generator seeded with 0.
  EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(mask_uniform(0, 0, 0), double(0xE220A8397B1DCDAFull >> 11) / 9007199254740992.0);
}

// Tolerance: NLL within 1e-4 nats (fp32 forwards; measured: 1e-7), the masked positions exactly the same, and
// accuracy within one token (an argmax tie could flip; measured: identical).
TEST(MaskedEval, ReproducesPyTorchReference) {
  json ref = json::parse(read_file(test::source_path("testdata/kjv/eval_reference.json")));
  Tokenizer tok = Tokenizer::load(kModel);
  std::vector<int32_t> ids = tok.encode(read_file(test::source_path("testdata/kjv/heldout.txt")));
  ASSERT_EQ(int64_t(ids.size()), ref["tokens"].get<int64_t>());
  auto m = Model::load(kModel);
  MaskedEvalOptions opt;
  opt.seed = ref["seed"].get<uint64_t>();
  opt.window = ref["window"].get<int64_t>();
  MaskedEvalResult r = masked_token_eval(*m, ids, opt);
  EXPECT_EQ(r.windows, ref["windows"].get<int64_t>());
  ASSERT_EQ(r.ratios.size(), 3u);
  for (const auto& x : r.ratios) {
    const json& e = ref["ratios"][x.ratio == 0.5 ? "0.5" : x.ratio == 0.15 ? "0.15" : "0.9"];
    EXPECT_EQ(x.masked_tokens, e["masked_tokens"].get<int64_t>()) << x.ratio;
    EXPECT_NEAR(x.nll, e["nll"].get<double>(), 1e-4) << x.ratio;
    EXPECT_NEAR(x.accuracy, e["accuracy"].get<double>(), 1.0 / double(x.masked_tokens) + 1e-12) << x.ratio;
  }
}

TEST(MaskedEval, CliJson) {
  test::CmdResult r = test::run_cli("-q eval --model " + kModel + " --text " +
                                    test::source_path("testdata/kjv/heldout.txt") + " --ratios 0.15 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  json j = json::parse(r.output);
  json ref = json::parse(read_file(test::source_path("testdata/kjv/eval_reference.json")));
  EXPECT_EQ(j["ratios"]["0.15"]["masked_tokens"], ref["ratios"]["0.15"]["masked_tokens"]);
  EXPECT_NEAR(j["ratios"]["0.15"]["nll"].get<double>(), ref["ratios"]["0.15"]["nll"].get<double>(), 1e-4);
  EXPECT_NE(test::run_cli("eval --model " + kModel + " --text /nonexistent").status, 0);
}

// Quality on the real model, with calibration and evaluation text disjoint: calibration on Ruth (held-out lines
// 1-85, 12 windows of 128 tokens, AWQ block searches on 4 of them), evaluation on Jonah, Philemon and Jude
// (lines 86-183, 3,192 tokens, one mask draw). Measured NLL increase over bf16 (nats, g128, asym grids):
//               ratio 0.5   0.9
//   RTN           +0.083  +0.071
//   AWQ           +0.034  -0.007
//   GPTQ asym     +0.034  +0.032
// (with two draws: RTN +0.083/+0.068, AWQ +0.029/+0.003, GPTQ +0.033/+0.039)
// Asserted, where it holds with a margin: AWQ loses less than half of what RTN (same layout and grid) loses, GPTQ
// less than 3/4 of it. Not asserted: ratio 0.15 and symmetric GPTQ, which are within noise with this little
// calibration text (docs/TINY_MODEL.md has both tables; with 16k calibration tokens from the train books GPTQ sym
// also wins clearly).
TEST(MaskedEval, AwqAndGptqLoseLessThanRtnOnKjv) {
  TempDir dir;
  {
    std::ofstream(dir / "calib.txt") << test::kjv_heldout_lines(0, 85);
    std::ofstream(dir / "eval.txt") << test::kjv_heldout_lines(85, 183);
  }
  Tokenizer tok = Tokenizer::load(kModel);
  const std::vector<int32_t> ids = tok.encode(read_file(dir / "eval.txt"));
  MaskedEvalOptions eo;
  eo.ratios = {0.5, 0.9};
  eo.draws = 1;
  auto nll = [&](const std::string& model_dir) {
    auto m = Model::load(model_dir);
    MaskedEvalResult r = masked_token_eval(*m, ids, eo);
    return std::vector<double>{r.ratios[0].nll, r.ratios[1].nll};
  };
  const std::vector<double> base = nll(kModel);
  auto loss = [&](const std::string& name, const std::string& format, const std::string& method, bool calib) {
    QuantizeOptions o;
    o.model_path = kModel;
    o.output_path = dir / name;
    o.format = format;
    o.method = method;
    o.sym = false;
    if (calib) {
      o.calib.text_path = dir / "calib.txt";
      o.calib.samples = 12;
      o.calib.seq_len = 128;
      o.awq_search_tokens = 512;  // the AWQ block losses on 4 of the 12 windows: keeps the test fast
    }
    quantize_model(o);
    std::vector<double> v = nll(dir / name);
    for (size_t i = 0; i < v.size(); ++i) v[i] -= base[i];
    return v;
  };
  const std::vector<double> rtn = loss("rtn", "awq", "rtn", false);
  const std::vector<double> awq = loss("awq", "awq", "awq", true);
  const std::vector<double> gptq = loss("gptq", "gptq", "gptq", true);
  for (size_t i = 0; i < 2; ++i) {
    std::printf("mask ratio %.2f: NLL increase RTN %+.4f  AWQ %+.4f  GPTQ asym %+.4f\n", eo.ratios[i], rtn[i], awq[i],
                gptq[i]);
    SCOPED_TRACE("mask ratio " + std::to_string(eo.ratios[i]));
    EXPECT_GT(rtn[i], 0.03);  // 4-bit RTN clearly hurts
    EXPECT_LT(awq[i], 0.5 * rtn[i]) << "awq " << awq[i] << " rtn " << rtn[i];
    EXPECT_LT(gptq[i], 0.75 * rtn[i]) << "gptq " << gptq[i] << " rtn " << rtn[i];
  }
}

}  // namespace
}  // namespace dlx
