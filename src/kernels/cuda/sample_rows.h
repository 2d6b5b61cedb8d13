// Host entry points of sample_rows.cu: the samplers' row pipeline (kernels/row_sampling.h) and the row gather of the
// LM head on the GPU. Plain C++ (no CUDA type headers beyond the runtime API), like launch.h.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/launch.h"

namespace dlx::cuda {

// out[r, :] = x[rows[r], :]   (x bf16 [T, H], rows device I64 [R], already range-checked on the host)
void launch_gather_rows(const bf16_t* x, const int64_t* rows, int64_t R, int64_t H, bf16_t* out, cudaStream_t stream);

struct SampleDraw {
  int64_t row, uncond_row;
  double u;
};
struct SampleResult {
  int64_t token;  // -1: the row had no finite logit
  double prob, confidence;
};
struct SampleRowsArgs {
  const bf16_t* logits;  // [N, V]
  int64_t V;
  const SampleDraw* draws;  // device [n]
  int n;
  bool gumbel;  // Gumbel rule (temperature must be 0 here); else the Dream rule
  float temperature, top_p;
  int64_t top_k;
  int confidence;  // Confidence as int: 0 prob, 1 margin, 2 neg entropy
  float cfg_scale;
  const int64_t* suppress;  // device [n_suppress]
  int n_suppress;
  float* scratch;  // device F32 [n, V]: the working rows
  void* partials;  // device, sample_rows_partial_bytes(*this) bytes (none when 0)
  SampleResult* out;  // device [n]
};
// The workspace of the split path (greedy Dream rows: temperature 0, no top-p / top-k), 0 for the one-block path.
int64_t sample_rows_partial_bytes(const SampleRowsArgs& a);
void launch_sample_rows(const SampleRowsArgs& a, cudaStream_t stream);

}  // namespace dlx::cuda
