// Reading and writing the 32-bit words of packed checkpoint tensors. Tensors mapped from a safetensors file
// need not be 4-byte aligned, so words are copied with memcpy (the compiler turns it into one load).
#pragma once
#include <cstdint>
#include <cstring>

namespace dlx {

inline uint32_t load_word(const void* base, int64_t i) {
  uint32_t w;
  std::memcpy(&w, static_cast<const char*>(base) + i * 4, 4);
  return w;
}

inline void store_word(void* base, int64_t i, uint32_t w) { std::memcpy(static_cast<char*>(base) + i * 4, &w, 4); }

}  // namespace dlx
