// Element types and the scalar conversions between them (bf16, fp16, fp8 e4m3 <-> fp32).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dlx {

enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, I64, I32, I8, U8 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);      // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(std::string_view name, DType* out);
inline bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3; }

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float fp8e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8e4m3(float f);

// Reads element i of a float buffer of type t as fp32.
inline float load_as_f32(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F8_E4M3: return fp8e4m3_to_f32(static_cast<const uint8_t*>(p)[i]);
    default: return 0.0f;
  }
}

}  // namespace dlx
