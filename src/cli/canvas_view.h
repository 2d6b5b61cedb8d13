// generate's live view on a terminal (stderr): the generated text filling in as diffusion steps reveal tokens,
// [MASK]s shown as '·', under a line with the step, the tokens revealed and the time. Redrawn in place at most
// 30 times a second and erased at the end, so stdout (the text, or the JSON) is all that stays on the screen.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "tokenizer/tokenizer.h"

namespace dlx::cli {

// The text of a canvas row's generated part [prompt_len, end): runs of revealed tokens decoded, each [MASK] as
// '·', and nothing from the first revealed stop token on (the text ends there).
std::string canvas_text(const Tokenizer& tok, const int64_t* row, int64_t prompt_len, int64_t end, int64_t mask_id,
                        const std::vector<int64_t>& stop_ids);

class CanvasView {
 public:
  CanvasView(const Tokenizer& tok, int64_t prompt_len, int64_t mask_id, std::vector<int64_t> stop_ids);
  ~CanvasView();  // erases the view
  CanvasView(const CanvasView&) = delete;
  CanvasView& operator=(const CanvasView&) = delete;
  // After each step (StepCallback): draws row 0 of `canvas`.
  void step(int step, int total, int64_t revealed, const Tensor& canvas);

 private:
  void erase();
  const Tokenizer& tok_;
  int64_t prompt_len_, mask_id_;
  std::vector<int64_t> stop_ids_;
  int lines_ = 0;  // lines drawn, to move back over
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace dlx::cli
