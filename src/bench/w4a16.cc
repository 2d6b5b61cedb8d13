// `diffulex bench --device cuda --w4a16-kernels`: the W4A16 linear alone (src/kernels/cuda/w4a16_mma.cu and
// w4a16_wgmma.cu) against cuBLASLt bf16 (the backend's matmul) and the int4 memory floor, at the Dream-7B and
// LLaDA-8B linear shapes for M = 1 .. 2048. Per cell: the backend's own choice ("auto": whichever of the mma.sync
// kernel, the wgmma kernel (compute capability 9.0) and, for M >= 64, dequantize + cuBLASLt was faster when first
// timed in that M bucket; "path" names it), each path forced, and cuBLASLt on a bf16 weight. The floor is (packed
// codes + scale words + x + y bytes) / the copy bandwidth measured in the same run. Weights are rotated among enough
// copies to exceed the L2 cache, so every call reads its weight from DRAM. Times (cuda_graph_time_ms): after
// --warmup eager calls (where the tuners choose), two rounds of the weight copies captured back to back into one
// CUDA graph, replayed max(5, --iters / calls) times; the median replay divided by the calls. That is the device
// time as a graph-captured decode step sees it: timed eagerly, call by call between events, a kernel shorter than
// its launch also counts the host's launch time (the small cells then read 12-14 us for every path alike). The
// eager figures are kept as ms_w4a16_stream and ms_cublas_bf16_stream (median of --iters calls).
#include "bench/w4a16.h"

#include <algorithm>

#include "core/error.h"
#include "core/stats.h"
#include "kernels/backend.h"
#include "model/random_init.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA
nlohmann::json run_w4a16_kernel_bench(const W4A16BenchArgs& a) {
  using json = nlohmann::json;
  auto be = make_backend("cuda");
  json out;
  out["backend"] = be->name();
  out["what"] =
      "W4A16 linear (group 128, asym) vs cuBLASLt bf16 vs int4 floor; ms_*: device time per call inside a CUDA graph "
      "(median of replays); *_stream: eager calls, each between two CUDA events (median)";
  const double copy_gbps = cuda_measure_copy_gbps(*be, size_t(1) << 30, 10);
  out["copy_GBps"] = copy_gbps;
  struct Shape {
    const char* name;
    int64_t N, K;
  };
  const Shape shapes[] = {{"dream.qkv", 4608, 3584},     {"dream.o", 3584, 3584},     {"dream.gate_up", 37888, 3584},
                          {"dream.down", 3584, 18944},   {"llada.qkv", 12288, 4096}, {"llada.gate_up", 24576, 4096},
                          {"llada.down", 4096, 12288}};
  const int64_t gs = 128;
  const size_t rotate_bytes = size_t(160) << 20;  // > 3x the 50 MB L2
  json rows = json::array();
  CudaEventTimer timer(*be);
  bool all_graphed = true;  // every graph-timed cell was captured (else some were timed eagerly: see the log)
  for (const Shape& s : shapes) {
    if (!a.shape.empty() && std::string(s.name).find(a.shape) == std::string::npos) continue;
    // Integer zero points 0..15 (the GPTQ/AWQ asym form), scales 0.005 .. 0.015.
    RandomPackedOptions ro;
    ro.group_size = gs;
    ro.sym = false;
    ro.scale_lo = 0.005f, ro.scale_hi = 0.015f;
    PackedWeight host = random_packed_weight(s.N, s.K, ro, a.seed + uint64_t(s.N) * 7 + uint64_t(s.K));
    std::vector<PackedWeight> pw;
    pw.push_back(be->upload_packed(host));
    check(pw[0].layout == kW4A16TileLayout, "bench: the {} weight did not take the W4A16 tile layout", s.name);
    const size_t packed_bytes = pw[0].nbytes();
    while (pw.size() < 16 && pw.size() * packed_bytes < rotate_bytes) pw.push_back(be->upload_packed(host));
    std::vector<Tensor> dense;
    const size_t dense_bytes = size_t(s.N * s.K) * 2;
    for (uint64_t c = 0; dense.empty() || (dense.size() < 8 && dense.size() * dense_bytes < rotate_bytes); ++c)
      dense.push_back(cuda_random_tensor(*be, DType::BF16, {s.N, s.K}, a.seed + 100 + c, 0.0f, 0.02f));
    for (int64_t M : a.ms) {
      Tensor x = cuda_random_tensor(*be, DType::BF16, {M, s.K}, a.seed + 7 + uint64_t(M), 0.0f, 1.0f);
      Tensor y = be->empty(DType::BF16, {M, s.N});
      auto stream_time = [&](auto&& call, size_t copies) {
        for (int i = 0; i < a.warmup; ++i) call(size_t(i) % copies);
        timer.clear();
        timer.mark();
        for (int i = 0; i < a.iters; ++i) {
          call(size_t(i) % copies);
          timer.mark();
        }
        return median(timer.intervals_ms());
      };
      auto time = [&](auto&& call, size_t copies) {
        for (int i = 0; i < a.warmup; ++i) call(size_t(i) % copies);
        const int calls = int(2 * copies);
        bool graphed = false;
        const double ms = cuda_graph_time_ms(
            *be, [&](int i) { call(size_t(i) % copies); }, calls, std::max(5, a.iters / calls), &graphed);
        if (!graphed) all_graphed = false;
        return ms;
      };
      auto packed = [&](size_t c) { be->matmul_packed(x, pw[c], nullptr, y); };
      json row = {{"shape", s.name}, {"N", s.N}, {"K", s.K}, {"M", M}};
      cuda_set_w4a16_path(*be, "auto");
      row["ms_w4a16"] = time(packed, pw.size());
      row["path"] = cuda_w4a16_choice(*be, s.N, s.K, gs, M);
      cuda_set_w4a16_path(*be, "mma");
      row["ms_mma"] = time(packed, pw.size());
      if (cuda_w4a16_wgmma_available()) {
        cuda_set_w4a16_path(*be, "wgmma");
        row["ms_wgmma"] = time(packed, pw.size());
        if (M > 32) {  // the 128-feature blocks (the same kernel as "wgmma" below that: cuda_backend.h)
          cuda_set_w4a16_path(*be, "wgmma_narrow");
          row["ms_wgmma_narrow"] = time(packed, pw.size());
        }
        if (M <= 32) {  // the small tiles with twice the stages (launch.h W4A16Variant)
          cuda_set_w4a16_path(*be, "wgmma_deep");
          row["ms_wgmma_deep"] = time(packed, pw.size());
        }
        if (M > 256) {  // token tiles fitted to M (launch.h W4A16Variant)
          cuda_set_w4a16_path(*be, "wgmma_fit");
          row["ms_wgmma_fit"] = time(packed, pw.size());
        }
        if (M > 128) {  // 256-token tiles (launch.h W4A16Variant)
          cuda_set_w4a16_path(*be, "wgmma_tall");
          row["ms_wgmma_tall"] = time(packed, pw.size());
        }
      }
      if (cuda_w4a16_wgmma_available() && M <= 64 && !a.splits.empty()) {
        cuda_set_w4a16_path(*be, "wgmma");
        json sweep = json::object();
        for (int sp : a.splits) {
          cuda_set_w4a16_splits(*be, sp);
          sweep[std::to_string(sp)] = time(packed, pw.size());
        }
        cuda_set_w4a16_splits(*be, 0);
        row["ms_wgmma_splits"] = sweep;
        row["wgmma_splits_planned"] = cuda_w4a16_wgmma_planned_splits(M, s.N, s.K, gs);
        fmt::print(stderr, "{:<15} M={:<5} wgmma by forced splits {} (planned {})\n", s.name, M, sweep.dump(),
                   row["wgmma_splits_planned"].get<int>());
      }
      if (M >= 64) {
        cuda_set_w4a16_path(*be, "dequant");
        row["ms_dequant_cublas"] = time(packed, pw.size());
      }
      cuda_set_w4a16_path(*be, "auto");
      auto dense_call = [&](size_t c) { be->matmul(x, dense[c], nullptr, y); };
      row["ms_cublas_bf16"] = time(dense_call, dense.size());
      row["ms_cublas_bf16_stream"] = stream_time(dense_call, dense.size());
      row["ms_w4a16_stream"] = stream_time(packed, pw.size());
      const double bytes = double(packed_bytes) + double(M * s.K * 2) + double(M * s.N * 2);
      const double floor = bytes / (copy_gbps * 1e9) * 1e3;
      row["floor_ms"] = floor;
      row["w4a16_over_floor"] = row["ms_w4a16"].get<double>() / floor;
      row["cublas_over_w4a16"] = row["ms_cublas_bf16"].get<double>() / row["ms_w4a16"].get<double>();
      rows.push_back(row);
      fmt::print(stderr,
                 "{:<15} M={:<5} w4a16 {:.4f} ms ({}; mma {:.4f} wgmma {:.4f} narrow {:.4f} tall {:.4f} deep {:.4f} fit {:.4f}) cublas {:.4f} floor {:.4f}  x{:.2f} floor"
                 "  [eager: w4a16 {:.4f} cublas {:.4f}]\n",
                 s.name, M, row["ms_w4a16"].get<double>(), row["path"].get<std::string>(), row["ms_mma"].get<double>(),
                 row.value("ms_wgmma", 0.0), row.value("ms_wgmma_narrow", 0.0), row.value("ms_wgmma_tall", 0.0),
                 row.value("ms_wgmma_deep", 0.0), row.value("ms_wgmma_fit", 0.0), row["ms_cublas_bf16"].get<double>(), floor,
                 row["w4a16_over_floor"].get<double>(), row["ms_w4a16_stream"].get<double>(),
                 row["ms_cublas_bf16_stream"].get<double>());
    }
  }
  out["rows"] = rows;
  out["timing"] = all_graphed ? "graph" : "graph, some cells eager (capture failed)";
  return out;
}
#else
nlohmann::json run_w4a16_kernel_bench(const W4A16BenchArgs&) {
  fail("bench --w4a16-kernels needs the CUDA backend (this build has none)");
}
#endif

}  // namespace dlx
