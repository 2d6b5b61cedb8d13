// The backend as the door to the device: the host backend reports no device memory (so `--kv-budget auto` means
// no limit there) and prefers no fused linears.
#include <gtest/gtest.h>

#include "kernels/backend.h"

TEST(Backend, HostHasNoDeviceMemoryAndNoFusion) {
  auto be = dlx::make_backend("cpu");
  const dlx::Backend::MemoryInfo m = be->device_memory();
  EXPECT_EQ(m.free_bytes, 0u);
  EXPECT_EQ(m.total_bytes, 0u);
  const dlx::Backend::Fusion f = be->fusion();
  EXPECT_FALSE(f.gate_up);
  EXPECT_FALSE(f.qkv);
  EXPECT_FALSE(f.packed);
}
