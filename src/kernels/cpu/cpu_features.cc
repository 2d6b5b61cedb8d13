#include "kernels/cpu/cpu_features.h"

#include <cstdlib>

namespace dlx {

bool cpu_has_avx2() {
  static const bool has = [] {
    const char* off = std::getenv("DIFFULEX_NO_AVX2");
    if (off && *off && *off != '0') return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
  }();
  return has;
}

}  // namespace dlx
