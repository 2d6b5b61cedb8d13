// Run-time CPU feature detection: the AVX2/FMA/F16C kernels are used only when the processor has them
// (DIFFULEX_NO_AVX2=1 forces the portable path, for tests and comparisons).
#pragma once

namespace dlx {
bool cpu_has_avx2();
}
