#include "cli/canvas_view.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace dlx::cli {

std::string canvas_text(const Tokenizer& tok, const int64_t* row, int64_t prompt_len, int64_t end, int64_t mask_id,
                        const std::vector<int64_t>& stop_ids) {
  std::string out;
  std::vector<int32_t> run;
  auto flush = [&] {
    out += tok.decode(run, true);
    run.clear();
  };
  for (int64_t p = prompt_len; p < end; ++p) {
    const int64_t id = row[p];
    if (std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) break;
    if (id == mask_id) {
      flush();
      out += "\xC2\xB7";  // ·
    } else {
      run.push_back(int32_t(id));
    }
  }
  flush();
  return out;
}

namespace {

// `text` cut into lines of at most `width` characters (UTF-8 code points; a tab or newline ends a line).
std::vector<std::string> wrap(const std::string& text, size_t width) {
  std::vector<std::string> lines(1);
  size_t cols = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n' || c == '\t') {
      lines.emplace_back(), cols = 0;
      continue;
    }
    if (c < 0x20) continue;                    // other control bytes would move the cursor
    if ((c & 0xC0) != 0x80 && cols == width)  // a new character that does not fit
      lines.emplace_back(), cols = 0;
    lines.back() += char(c);
    if ((c & 0xC0) != 0x80) ++cols;
  }
  return lines;
}

}  // namespace

CanvasView::CanvasView(const Tokenizer& tok, int64_t prompt_len, int64_t mask_id, std::vector<int64_t> stop_ids)
    : tok_(tok), prompt_len_(prompt_len), mask_id_(mask_id), stop_ids_(std::move(stop_ids)) {
  start_ = std::chrono::steady_clock::now();
  last_ = start_ - std::chrono::seconds(1);
}

CanvasView::~CanvasView() { erase(); }

void CanvasView::erase() {
  if (lines_ > 0) std::fprintf(stderr, "\033[%dA\r\033[J", lines_);
  std::fflush(stderr);
  lines_ = 0;
}

void CanvasView::step(int step, int total, int64_t revealed, const Tensor& canvas) {
  const auto now = std::chrono::steady_clock::now();
  const bool last = step + 1 >= total;
  if (!last && now - last_ < std::chrono::milliseconds(33)) return;
  last_ = now;
  winsize ws{};
  const bool sized = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0;
  const size_t width = sized ? size_t(std::max<int>(ws.ws_col - 1, 10)) : 79;
  const size_t height = sized && ws.ws_row > 4 ? size_t(ws.ws_row) - 2 : 20;
  const int64_t L = canvas.dim(1);
  const int64_t masked = std::count(canvas.data<int64_t>() + prompt_len_, canvas.data<int64_t>() + L, mask_id_);
  const double secs = std::chrono::duration<double>(now - start_).count();
  std::vector<std::string> lines =
      wrap(canvas_text(tok_, canvas.data<int64_t>(), prompt_len_, L, mask_id_, stop_ids_), width);
  if (lines.size() + 1 > height) lines.erase(lines.begin(), lines.end() - int64_t(height - 1));  // the last ones
  const std::string header =
      fmt::format("step {}/{} · {} tokens revealed, {} masked · {:.1f}s", step + 1, total, revealed, masked, secs);
  std::string out = "\033[2m" + wrap(header, width)[0] + "\033[0m\033[K\n";  // dim, one line
  for (const std::string& l : lines) out += l + "\033[K\n";
  if (lines_ > 0) std::fprintf(stderr, "\033[%dA\r", lines_);
  std::fprintf(stderr, "%s\033[J", out.c_str());
  std::fflush(stderr);
  lines_ = int(lines.size()) + 1;
}

}  // namespace dlx::cli
