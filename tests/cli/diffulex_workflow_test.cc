// The original Diffulex's documented workflow, verbatim with our binary in place of its Python modules
// (docs/FROM_DIFFULEX.md): quantize without calibration data, copy model_quantized_{fmt}.safetensors next to the
// source's config.json, generate from that directory with its flags. The text and the logits must match the
// quantizer's standalone output directory. Plus its flag aliases, the warnings and the layout detections.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/model.h"
#include "test_util.h"

namespace dlx {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::run_cli;
using test::TempDir;

const std::string kModel = test::source_path("models/kjv-dream-tiny");
const std::string kPrompt = "\"And the LORD spake unto Moses, saying,\"";

// Every file of the shipped model: the user's own model directory, which the workflow writes into.
std::string copy_model(const TempDir& dir, const std::string& name) {
  const std::string m = dir / name;
  fs::create_directories(m);
  for (const auto& e : fs::directory_iterator(kModel)) fs::copy_file(e.path(), m + "/" + e.path().filename().string());
  return m;
}

// The shipped model quantized (GPTQ, RTN) into dir/q, and a copy of the shipped model in dir/model with that
// quantized file beside it, every tensor passed through `edit` (which may rename or replace it). Returns the copy.
std::string quantized_copy_edited(
    const TempDir& dir,
    const std::function<std::pair<std::string, Tensor>(const std::string&, const SafetensorsFile&)>& edit) {
  const std::string out = dir / "q";
  EXPECT_EQ(run_cli("-q quantize --model-path " + kModel + " --output-path " + out + " --quant-format gptq").status, 0);
  const std::string m = copy_model(dir, "model");
  SafetensorsFile qf(out + "/model_quantized_gptq.safetensors");
  std::vector<std::pair<std::string, Tensor>> ts;
  for (const auto& [name, info] : qf.tensors()) ts.push_back(edit(name, qf));
  write_safetensors(m + "/model_quantized_gptq.safetensors", ts);
  return m;
}

// Logits of `model` on fixed ids through `diffulex forward` (extra flags appended).
Tensor cli_logits(const TempDir& dir, const std::string& model, const std::string& flags = "") {
  const std::string ids_path = dir / "ids.safetensors", out = dir / "logits.safetensors";
  if (!fs::exists(ids_path)) {
    Tensor ids = Tensor::zeros(DType::I64, {1, 24});
    for (int64_t i = 0; i < 24; ++i) ids.data<int64_t>()[i] = (i * 37 + 11) % 4000;
    write_safetensors(ids_path, {{"input_ids", ids}});
  }
  fs::remove(out);
  test::CmdResult r = run_cli("forward --model " + model + " --input-ids " + ids_path + " --output " + out + " " + flags);
  EXPECT_EQ(r.status, 0) << r.output;
  SafetensorsFile f(out);
  return Tensor::from_data(DType::F32, f.get("logits").shape(), f.get("logits").data());
}

class Workflow : public ::testing::TestWithParam<std::string> {};

TEST_P(Workflow, QuantizeCopyGenerateAsTheOriginalDocuments) {
  const std::string fmt = GetParam(), other = fmt == "gptq" ? "awq" : "gptq";
  TempDir dir;
  const std::string out = dir / "quantized";
  // Step 1, verbatim: no calibration options.
  test::CmdResult q = run_cli("quantize --model-path " + kModel + " --output-path " + out + " --quant-format " + fmt +
                              " --group-size 128 --bits 4");
  ASSERT_EQ(q.status, 0) << q.output;
  EXPECT_NE(q.output.find("no calibration data: quantizing with RTN"), std::string::npos) << q.output;
  const std::string qfile = "model_quantized_" + fmt + ".safetensors";
  ASSERT_TRUE(fs::exists(out + "/" + qfile));
  json meta = json::parse(std::ifstream(out + "/quantization_metadata_" + fmt + ".json"));
  EXPECT_EQ(meta["quant_format"], fmt);
  EXPECT_EQ(meta["quant_method"], "simple");  // the original's name for calibration-free quantization
  EXPECT_EQ(meta["method"], "rtn");
  EXPECT_EQ(meta["quantized_modules"].size(), 42u);
  // Only the quantized linears (and their biases) in the quantized file.
  SafetensorsFile qf(out + "/" + qfile);
  for (const auto& [name, info] : qf.tensors())
    EXPECT_TRUE(name.find(".self_attn.") != std::string::npos || name.find(".mlp.") != std::string::npos) << name;

  // Step 2: copy it into the user's model directory, next to config.json.
  const std::string m = copy_model(dir, "model");
  fs::copy_file(out + "/" + qfile, m + "/" + qfile);

  // Step 3: generate with the original's flags; the load says it read the overlay.
  const std::string gen = " --prompt " + kPrompt + " --max-tokens 50";
  test::CmdResult g = run_cli("-v generate --model-path " + m + gen + " --linear-attn-weight-dtype " + fmt +
                              " --linear-mlp-weight-dtype " + fmt +
                              " --linear-attn-act-dtype bf16 --linear-mlp-act-dtype bf16 --tensor-parallel-size 1");
  ASSERT_EQ(g.status, 0) << g.output;
  EXPECT_NE(g.output.find(qfile + " overlays the checkpoint: 42 quantized layers replace 42 dense weights"),
            std::string::npos)
      << g.output;
  test::CmdResult go = run_cli("-q generate --model " + out + gen);
  ASSERT_EQ(go.status, 0) << go.output;
  EXPECT_GT(go.output.size(), 20u);
  EXPECT_NE(g.output.find(go.output), std::string::npos) << g.output;  // the standalone directory's text

  // The same logits: the overlay's packed layers are the output directory's; the other tensors differ only by the
  // output's float16 copy of the bf16 embeddings and norms.
  const Tensor lo = cli_logits(dir, out), lm = cli_logits(dir, m);
  EXPECT_LT(test::rel_error(lm, lo), 1e-5);
  // A standalone output with --dtype bfloat16 holds exactly the source's other tensors: the logits are identical.
  const std::string out16 = dir / "quantized_bf16";
  ASSERT_EQ(run_cli("-q quantize --model-path " + kModel + " --output-path " + out16 + " --quant-format " + fmt +
                    " --dtype bfloat16")
                .status,
            0);
  EXPECT_EQ(test::rel_error(cli_logits(dir, out16), lm), 0.0);

  // inspect names what the directory holds although it has no quantization settings.
  test::CmdResult ins = run_cli("inspect --model " + m);
  ASSERT_EQ(ins.status, 0) << ins.output;
  EXPECT_NE(ins.output.find("quantization:  " + fmt + "_w4a16 4-bit group 128 x42 (from the tensors"),
            std::string::npos)
      << ins.output;
  EXPECT_NE(ins.output.find("overlay:       " + m + "/" + qfile), std::string::npos) << ins.output;

  // The original's strategy runs: one JSON line each; a strategy the checkpoint cannot serve is an error line.
  test::CmdResult st = run_cli("-q generate --model-path " + m + " --prompt " + kPrompt + " --max-tokens 16 --strategies " +
                               fmt + "_w4a16_bf16kv," + fmt + "_w4a16_fp8kv," + other + "_w4a16_bf16kv");
  EXPECT_EQ(st.status, 1) << st.output;
  std::istringstream lines(st.output);
  std::string line;
  std::vector<json> rows;
  while (std::getline(lines, line))
    if (!line.empty() && line[0] == '{') rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 3u) << st.output;
  EXPECT_EQ(rows[0]["strategy"], fmt + "_w4a16_bf16kv");
  EXPECT_EQ(rows[0]["texts"].size(), 1u);
  EXPECT_EQ(rows[1]["kv_dtype"], "fp8");
  EXPECT_EQ(rows[1]["cache"], "prefix");
  EXPECT_GT(rows[1]["new_tokens"].get<int64_t>(), 0);
  EXPECT_NE(rows[2]["error"].get<std::string>().find("is stored as " + fmt + " in the checkpoint but " + other +
                                                     " was requested"),
            std::string::npos)
      << rows[2];
  EXPECT_NE(st.output.find("1 of 3 strategies failed"), std::string::npos) << st.output;
  test::CmdResult b = run_cli("bench --model-path " + m + " --strategies bf16_bf16kv," + fmt + "_w4a16_bf16kv --max-tokens 8");
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_NE(b.output.find("\"strategy\":\"bf16_bf16kv\""), std::string::npos) << b.output;
  EXPECT_NE(b.output.find("\"tokens_per_s\""), std::string::npos) << b.output;
}

INSTANTIATE_TEST_SUITE_P(Formats, Workflow, ::testing::Values("gptq", "awq"));

TEST(WorkflowFlags, WhatCannotBeHonouredIsAClearError) {
  TempDir dir;
  auto err = [](const std::string& args) {
    test::CmdResult r = run_cli(args);
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    return r.output;
  };
  const std::string gen = "generate --model " + kModel + " --prompt x --max-tokens 4 ";
  EXPECT_NE(err(gen + "--linear-mlp-act-dtype int8").find("--linear-mlp-act-dtype int8: not supported"),
            std::string::npos);
  EXPECT_NE(err(gen + "--tensor-parallel-size 2").find("--tensor-parallel-size 2: diffulex runs a model in one process"),
            std::string::npos);
  EXPECT_NE(err(gen + "--strategies w8a8_bf16kv").find("'w8a8_bf16kv' is not supported"), std::string::npos);
  // Calibrated algorithms need data, and the message names the ways out.
  const std::string qz = "quantize --model-path " + kModel + " --output-path " + (dir / "o") + " --quant-format gptq ";
  const std::string e = err(qz + "--method gptq");
  EXPECT_NE(e.find("calibration text or ids file"), std::string::npos) << e;
  EXPECT_NE(e.find("or method rtn"), std::string::npos) << e;
  EXPECT_NE(err(qz + "--quant-method auto").find("method gptq needs calibration data"), std::string::npos);
  EXPECT_NE(err(qz + "--target-modules q_proj").find("--target-modules q_proj: not supported"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "o"));
  test::CmdResult ok = run_cli("-q quantize --model-path " + kModel + " --output-path " + (dir / "o") +
                               " --quant-format awq --quant-method simple --group-size 64");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_EQ(json::parse(std::ifstream(dir / "o/quantization_metadata_awq.json"))["group_size"], 64);
}

// Quantized tensors whose layer names match no layer: a warning naming them, an error with --strict.
TEST(WorkflowFlags, UnmatchedQuantizedTensorsAreNamed) {
  TempDir dir;
  const std::string m = quantized_copy_edited(dir, [](const std::string& name, const SafetensorsFile& qf) {
    std::string n = name;
    // The layer-5 MLP under another model's names (as a checkpoint for a different architecture would have).
    if (n.rfind("model.layers.5.mlp.", 0) == 0) n = "model.layers.5.feed_forward." + n.substr(19);
    return std::pair<std::string, Tensor>(n, qf.get(name));
  });
  test::CmdResult w = run_cli("inspect --model " + m + " --list-layers");
  ASSERT_EQ(w.status, 0) << w.output;
  EXPECT_NE(w.output.find("warning: " + m + "/model_quantized_gptq.safetensors: 12 quantized tensors match no layer"),
            std::string::npos)
      << w.output;
  EXPECT_NE(w.output.find("'model.layers.5.feed_forward.down_proj.g_idx'"), std::string::npos) << w.output;
  // The layer-5 MLP stays dense (its .weight is in the base), the others are quantized.
  const size_t at = w.output.find("model.layers.5.mlp.up_proj ");
  ASSERT_NE(at, std::string::npos) << w.output;
  EXPECT_NE(w.output.substr(at, w.output.find('\n', at) - at).find(" bf16 "), std::string::npos) << w.output;
  test::CmdResult s = run_cli("inspect --model " + m + " --strict");
  EXPECT_EQ(s.status, 1) << s.output;
  EXPECT_NE(s.output.find("match no layer"), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("(strict loading)"), std::string::npos) << s.output;
}

// The later Diffulex export writes an empty g_idx ([0]) for layers without act-order: it means "no g_idx".
TEST(WorkflowFlags, EmptyGIdxMeansNone) {
  TempDir dir;
  const std::string out = dir / "q";
  const std::string m = quantized_copy_edited(dir, [](const std::string& name, const SafetensorsFile& qf) {
    const bool g_idx = name.size() > 6 && name.substr(name.size() - 6) == ".g_idx";
    return std::pair<std::string, Tensor>(name, g_idx ? Tensor::zeros(DType::I32, {0}) : qf.get(name));
  });
  EXPECT_LT(test::rel_error(cli_logits(dir, m, "--linear-attn-weight-dtype gptq --strict"), cli_logits(dir, out)), 1e-5);
}

}  // namespace
}  // namespace dlx
