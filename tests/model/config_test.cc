#include "model/config.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "model/random_model.h"

namespace dlx {

namespace {
std::string error_of(const nlohmann::json& j) {
  try {
    parse_model_config(j, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, DreamFields) {
  ModelConfig c = parse_model_config(random_preset_config("dream-7b"), "config.json");
  EXPECT_EQ(c.arch, Arch::Dream);
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.shift_logits());
  EXPECT_EQ(c.mask_token_id, 151666);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
}

TEST(Config, LladaFields) {
  ModelConfig c = parse_model_config(random_preset_config("llada-8b"), "config.json");
  EXPECT_EQ(c.arch, Arch::LLaDA);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 12288);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.vocab_size, 126464);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.shift_logits());
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(Config, RejectsUnknownArchitectureListingSupported) {
  std::string e = error_of({{"model_type", "llama"}});
  EXPECT_NE(e.find("unsupported model_type 'llama'"), std::string::npos) << e;
  EXPECT_NE(e.find("Dream"), std::string::npos);
  EXPECT_NE(e.find("llada"), std::string::npos);
  EXPECT_NE(error_of({{"hidden_size", 3}}).find("missing field 'model_type'"), std::string::npos);
}

TEST(Config, NamesBadFields) {
  auto j = random_preset_config("dream-tiny");
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("missing field 'hidden_size'"), std::string::npos);
  j = random_preset_config("dream-tiny");
  j["num_attention_heads"] = "four";
  EXPECT_NE(error_of(j).find("'num_attention_heads' must be an integer"), std::string::npos);
  j = random_preset_config("dream-tiny");
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("not a multiple of the number of key/value heads"), std::string::npos);
  j = random_preset_config("dream-tiny");
  j["torch_dtype"] = "float64";
  EXPECT_NE(error_of(j).find("torch_dtype"), std::string::npos);
  j = random_preset_config("llada-tiny");
  j["n_layers"] = 0;
  EXPECT_NE(error_of(j).find("'n_layers' must be positive"), std::string::npos);
}

}  // namespace dlx
