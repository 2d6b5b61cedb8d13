// Checks shared by the quantized linear kinds. Every failure is an Error whose message names the tensor and
// the file it lives in, and says what was expected and why.
#pragma once
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/linear.h"

namespace dlx {

// The tensors of one quantized layer in a checkpoint.
class QuantTensorSet {
 public:
  QuantTensorSet(const TensorStore& store, std::string prefix) : store_(store), prefix_(std::move(prefix)) {}
  std::string name(const char* suffix) const { return prefix_ + "." + suffix; }
  bool has(const char* suffix) const;
  // The tensor, or Error "<file of qweight>: checkpoint has no tensor '<name>' (<why>)".
  Tensor require(const char* suffix, const std::string& why) const;
  const std::string& file(const char* suffix) const;  // file holding the tensor (or qweight's when absent)
  const TensorStore& store() const { return store_; }

  void check_dtype(const char* suffix, const Tensor& t, std::initializer_list<DType> allowed) const;
  void check_shape(const char* suffix, const Tensor& t, const Shape& want, const std::string& why) const;
  // Every element finite (scales: NaN or Inf would poison whole output columns).
  void check_finite(const char* suffix, const Tensor& t) const;
  // The per-group scales [in_features/group_size, out_features] (float dtype, finite) and their group size: the
  // config's (-1: in_features), or without a config the one the scales' rows imply.
  Tensor group_scales(const QuantConfig* cfg, int64_t k, int64_t n, const std::string& why, int64_t& group_size) const;
  // g_idx I32 [K] with values in [0, groups) and exactly `group_size` rows per group. Returns the act-order
  // permutation (stable sort of the input rows by group) or an empty vector when g_idx is k / group_size.
  std::vector<int32_t> act_order_perm(const char* suffix, const Tensor& g_idx, int64_t k, int64_t group_size) const;
  // Optional bias [out_features] in a float dtype; Error when the architecture needs one and it is absent.
  Tensor bias(const LinearSpec& spec) const;

 private:
  const TensorStore& store_;
  std::string prefix_;
};

// True when an entry of modules_to_not_convert is a run of whole dotted components of `prefix` ("lm_head",
// "mlp", "up_proj", "model.layers.0.mlp.up_proj" all match "model.layers.0.mlp.up_proj"; "up" does not).
bool quant_skips_module(const QuantConfig* q, const std::string& prefix);

// The int32 layout holding spec's qweight: "gptq" or "awq". Decided by ctx.quant->method when the checkpoint has
// a quantization config, else by the shape (GPTQ [K*b/32, N], AWQ [K, N/8]); "gptq" when neither fits, so the
// GPTQ loader reports the shape. "" when the layer has no qweight, an int8 one (Diffulex layout), or is listed in
// modules_to_not_convert and has a dense `.weight` (a listed layer with only packed tensors stays packed).
std::string quant_layout(const LoadContext& ctx, const LinearSpec& spec);

// Tensors of quantized layers (names ending in .qweight, .qzeros, .scales or .g_idx) whose layer is not among
// `loaded` (the prefixes of the model's linears): a checkpoint made for other layer names, which would otherwise
// be ignored silently.
std::vector<std::string> unmatched_quant_tensors(const TensorStore& store, const std::set<std::string>& loaded);

// GPTQ bits: the config's, else from the qweight rows (K/8 rows: 4, K/4 rows: 8; 4 when neither fits).
int gptq_bits(const LoadContext& ctx, const LinearSpec& spec);

}  // namespace dlx
