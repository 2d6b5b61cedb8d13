// Small statistics for timings.
#pragma once
#include <algorithm>
#include <vector>

namespace dlx {

// The median (upper middle for an even count) of the values; 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace dlx
