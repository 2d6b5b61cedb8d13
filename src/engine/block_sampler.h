// Block-diffusion decoding (SDAR, Fast-dLLM v2; docs/BLOCK_DIFFUSION.md): the sequence is cut into blocks of the
// model's block size at sequence indices 0, bs, 2 bs, ...; attention is causal between blocks and bidirectional
// inside one, so the keys and values of a finished block never change again and its KV-cache entries are exact.
//
// Per row: the prompt's whole blocks are prefilled into the cache, then block by block: the block's positions at or
// past the prompt start as masks; diffusion steps over the block's window (one pass each, reading the cache of
// every earlier block) reveal masks, a sub-block at a time where the model has sub-blocks; the finished block's
// exact keys and values are then written into the cache by a pass over it. Block-causal attention lets one pass
// cover several blocks exactly, so SDAR's prefill and commit passes ride on the next block's first step (its window
// starts earlier); Fast-dLLM v2 needs their last row's logits first and runs them alone. A step reveals every masked position
// of the current sub-block whose probability reaches the threshold, and at least the n most confident ones, n from
// SDAR's schedule (steps per block) or 1. Fast-dLLM v2 predicts position l from row l - 1 (Dream's shift); the
// first position of each block is then its previous row's argmax, from the prefill or the commit pass.
//
// Rows are independent sequences (no padding): each has its own canvas, cache and passes; one engine pass runs every
// active row's window at once (Model::forward_slots), and a row's random draws are keyed by its own pass count,
// so a row's result does not depend on the batch.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/sampling.h"
#include "model/model.h"

namespace dlx {

struct BlockDecodeOptions {
  int64_t max_new_tokens = 64;
  int64_t block_size = 4;   // the model's (ModelConfig::block_size)
  int64_t sub_block = 0;    // tokens per sub-block (Fast-dLLM v2: 8); 0: the whole block
  int steps = 0;            // SDAR: denoising steps per block (at most block_size); 0: one token at least per step
  float threshold = 0.9f;   // reveal every masked position whose probability reaches it
  bool shift = false;       // Fast-dLLM v2: position l is predicted by row l - 1
  float temperature = 0;    // 0: greedy
  float top_p = 1;
  int64_t top_k = 0;
  uint64_t seed = 0;
  int64_t mask_token_id = -1;
  std::vector<int64_t> stop_ids;  // a row ends once one of them is decoded with no mask before it
  bool fp8_kv = false;            // the rows' KV caches in fp8 (KvCache::fp8)
};

// One pass of one row: its canvas ids I64 [1, L] (host), the window [begin, end) computed through its cache, and
// the sequence indices whose logits are wanted (inside the window, ascending).
struct BlockPass {
  Tensor ids;
  KvCache* cache = nullptr;
  int64_t begin = 0, end = 0;
  std::vector<int64_t> rows;
};
// Every pass's logits as one tensor [rows, V] in the backend's memory: pass i's rows (in its `rows` order) start at
// first[i]. One tensor, so that a step samples all rows with one call.
struct BlockLogits {
  Tensor rows;
  std::vector<int64_t> first;
};
// Runs the passes (one per active row).
using BlockForwardFn = std::function<BlockLogits(std::vector<BlockPass>& passes)>;

// The passes on the model itself: Model::forward_slots, one slot per pass.
BlockForwardFn model_block_forward(Model& model);

// Decodes every prompt (independently, as above) and returns the canvas I64 [B, P + max_new_tokens] with the
// prompts left-padded with `pad_id` to the longest, P (generate_canvas's layout). Positions a row never reached
// (it stopped earlier) hold the mask id. `on_step` is called after every engine pass.
Tensor block_generate(Backend& be, const BlockForwardFn& forward, const std::vector<std::vector<int64_t>>& prompts,
                      const BlockDecodeOptions& o, int64_t pad_id, const StepCallback& on_step = {},
                      int* passes_run = nullptr);

}  // namespace dlx
