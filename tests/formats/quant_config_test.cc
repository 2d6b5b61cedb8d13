// Quantization settings detection (formats/quant_config.h): which file wins, field spellings of
// AutoGPTQ / GPTQModel / AutoAWQ, and clear rejection of unsupported variants.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "formats/quant_config.h"
#include "test_util.h"

namespace dlx {

namespace {

void write(const test::TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir / name) << text;
}

std::string error_of(const std::string& dir) {
  try {
    load_quant_config(dir);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

}  // namespace

TEST(QuantConfig, ReadsEachFile) {
  test::TempDir none;
  write(none, "config.json", R"({"model_type": "Dream"})");
  EXPECT_EQ(load_quant_config(none.str()), nullptr);

  test::TempDir gptq;
  write(gptq, "config.json",
        R"({"quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": true,
            "sym": false, "checkpoint_format": "gptq_v2"}})");
  auto q = load_quant_config(gptq.str());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->method, "gptq");
  EXPECT_EQ(q->bits, 8);
  EXPECT_EQ(q->group_size, -1);
  EXPECT_TRUE(q->desc_act);
  EXPECT_FALSE(q->sym);
  EXPECT_EQ(q->checkpoint_format, "gptq_v2");

  test::TempDir autogptq;  // only quantize_config.json
  write(autogptq, "config.json", R"({"model_type": "Dream"})");
  write(autogptq, "quantize_config.json", R"({"bits": 4, "group_size": 128, "desc_act": false, "sym": true})");
  q = load_quant_config(autogptq.str());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->method, "gptq");
  EXPECT_EQ(q->checkpoint_format, "gptq");
  EXPECT_NE(q->source.find("quantize_config.json"), std::string::npos);

  test::TempDir autoawq;  // older AutoAWQ: quant_config.json with w_bit / q_group_size
  write(autoawq, "config.json", R"({"model_type": "Dream"})");
  write(autoawq, "quant_config.json", R"({"zero_point": true, "q_group_size": 64, "w_bit": 4, "version": "GEMM",
                                          "modules_to_not_convert": ["lm_head", "mlp.gate"]})");
  q = load_quant_config(autoawq.str());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->method, "awq");
  EXPECT_EQ(q->group_size, 64);
  EXPECT_EQ(q->modules_to_not_convert, (std::vector<std::string>{"lm_head", "mlp.gate"}));
}

TEST(QuantConfig, RejectsUnsupportedVariants) {
  struct Bad {
    const char* json;
    const char* says;
  };
  for (Bad b : {Bad{R"({"quant_method": "awq", "bits": 4, "version": "gemv"})", "gemv"},
                Bad{R"({"quant_method": "gptq", "bits": 3})", "3 bits"},
                Bad{R"({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"})", "marlin"},
                Bad{R"({"quant_method": "bitsandbytes"})", "bitsandbytes"},
                Bad{R"({"quant_method": "gptq", "group_size": 0})", "group_size"}}) {
    test::TempDir dir;
    write(dir, "config.json", std::string(R"({"quantization_config": )") + b.json + "}");
    std::string msg = error_of(dir.str());
    EXPECT_NE(msg.find(b.says), std::string::npos) << msg;
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  }
}

}  // namespace dlx
