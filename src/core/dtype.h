// Element types and devices a tensor can carry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moe {

// f32 is the training type; bf16 stores inference weights (this CPU has avx512_bf16);
// f64 exists for finite-difference checks; integer types hold token ids and labels.
enum class DType : uint8_t { f32, bf16, f64, i32, i64, u8 };

// Tensors carry a device tag so a second backend can be added without touching layers.
// The CPU is the only backend today.
enum class Device : uint8_t { cpu };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // "f32", "bf16", ...

// bf16 is the upper half of an f32. Rounding is to nearest even; NaN stays NaN.
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);

}  // namespace moe
