#include "kernels/cpu/cpu_features.h"

#include <cstdlib>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace dlx {

bool cpu_has_avx2() {
  static const bool has = [] {
    const char* off = std::getenv("DIFFULEX_NO_AVX2");
    if (off && *off && *off != '0') return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    // F16C through cpuid (leaf 1, ECX): clang's __builtin_cpu_supports does not know "f16c".
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#else
    return false;
#endif
  }();
  return has;
}

}  // namespace dlx
