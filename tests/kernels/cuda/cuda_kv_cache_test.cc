// The block KV cache on the CUDA backend: a refresh equals the full forward and a window over current keys and
// values gives the full forward's logits for its rows (bf16 activations: compared with the CUDA full forward).
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/model.h"
#include "test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

TEST(CudaKvCache, RefreshAndWindowMatchFullForward) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  Tensor ids = TensorStore::open_file(dir + "/reference.safetensors")->get("input_ids");
  LoadOptions lo;
  lo.device = "cuda";
  auto model = Model::load(dir, lo);
  const int64_t B = ids.dim(0), L = ids.dim(1), V = model->config().vocab_size;
  Tensor full = model->forward(ids);
  KvCache cache;
  EXPECT_LT(test::rel_error(model->forward_window(ids, {}, cache, 0, L), full), 1e-3);
  std::vector<int64_t> rows = {3, 4, 5, L + 3, L + 6, 2 * L + 4};
  Tensor win = model->forward_window(ids, {}, cache, 3, 7, rows);
  Tensor want = Tensor::zeros(DType::F32, {int64_t(rows.size()), V});
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(full.data<float>() + rows[i] * V, V, want.data<float>() + int64_t(i) * V);
  EXPECT_LT(test::rel_error(win, want), 1e-2);
  (void)B;
}

#endif

}  // namespace dlx
