// Vectorisable float math for the CPU kernels' inner loops.
//
// GCC vectorises a loop that calls std::exp only under -ffast-math (glibc's vector expf is
// declared only then), which we do not use: it would also relax NaN and rounding rules
// everywhere. These are plain arithmetic (Cody-Waite range reduction and Cephes' degree-7
// polynomial, about 1 ulp), so loops calling them vectorise with -O3 -march=native.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace moe::kernels::cpu {

// exp(x) for x <= 0, written so GCC vectorises it: std::exp does not (without -ffast-math
// glibc's vector expf is not declared). Cephes' expf: x = n*ln2 + r with |r| <= ln2/2, a
// degree-7 polynomial for exp(r), 2^n built from the exponent bits. The error is at most
// 1.02 ulp (checked against double exp over every float in [-87, 0]). Below -87.3, exp(x) is
// under FLT_MIN (1.2e-38): return 0 instead, which also covers x = -inf (masked logits) and
// keeps 2^n inside the normal range.
[[gnu::always_inline]] inline float exp_nonpositive_f32(float x) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;  // ln2 split so n * kLn2Hi is exact for |n| < 2^9
    constexpr float kLn2Lo = -2.12194440e-4f;
    constexpr float kMin = -87.3f;
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float xc = x < kMin ? kMin : x;
    const float n = (xc * kLog2e + kRound) - kRound;
    const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
    // Select a constant, then multiply: GCC if-converts a select between two constants, but
    // not `x < kMin ? 0 : p * two_n` (it will not speculate a float multiply), and a branch in
    // the loop stops vectorisation (the whole softmax took 2.8 ns/element with it, 0.5 without).
    const float keep = x < kMin ? 0.0f : 1.0f;
    return p * two_n * keep;
}

// exp(hi + lo), where lo is a small correction (|lo| << ulp(hi) is fine), for float lanes.
// The range reduction is done on hi alone, so lo keeps its full precision: the GELU tail
// uses that to pass the rounding error of x^2. Overflows to inf above ~88.7 and underflows
// gradually to 0 below ~-87.3 like std::exp: hi is clamped to [-150, 100], so n lies in
// [-217, 145], and 2^n is applied as two factors 2^(n/2) 2^(n - n/2), each a normal float.
[[gnu::always_inline]] inline float exp_f32(float hi, float lo) {
    hi = hi < -150.0f ? -150.0f : hi;  // NaN passes through both selects
    hi = hi > 100.0f ? 100.0f : hi;
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const float shifter = 12582912.0f;
    const float k = hi * 1.44269504088896341f + shifter;
    const float n = k - shifter;
    const int32_t ni = std::bit_cast<int32_t>(k) - std::bit_cast<int32_t>(shifter);
    // ln 2 = 0.693359375 - 2.12194440e-4: the first part has 9 bits, so n * it is exact.
    float r = std::fma(-n, 0.693359375f, hi);
    r = std::fma(n, 2.12194440e-4f, r) + lo;
    float p = 1.9875691500e-4f;
    p = std::fma(p, r, 1.3981999507e-3f);
    p = std::fma(p, r, 8.3334519073e-3f);
    p = std::fma(p, r, 4.1665795894e-2f);
    p = std::fma(p, r, 1.6666665459e-1f);
    p = std::fma(p, r, 5.0000001201e-1f);
    const float e = std::fma(p * r, r, r) + 1.0f;
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    const float s1 = std::bit_cast<float>((n1 + 127) << 23);
    const float s2 = std::bit_cast<float>((n2 + 127) << 23);
    return e * s1 * s2;
}

// GELU's Phi(x) and phi(x), shared by kernels/cpu/activations.cpp and the fused
// LayerNorm + GELU (kernels/cpu/layernorm_gelu.cpp), so both give the same bits.
// The erfc fit and the exact split of x^2 are described in activations.cpp's header.
// Phi(x) (the normal CDF) and phi(x) (its density) for one float lane.
// Phi(x) = erfc(-x / sqrt 2) / 2: for x < 0 it is the small erfc tail, computed with its
// relative accuracy, and for x >= 0 it is 1 - erfc(x / sqrt 2) / 2, which never cancels.
[[gnu::always_inline]] inline void normal_cdf_pdf_f32(float x, float& cdf, float& pdf) {
    // Beyond |x| = 20 both are exactly 0 or 1 in float (Phi(-20) = 3e-89); clamping keeps
    // x^2 finite, so x = +-inf gives Phi = 1 or 0 as the reference does. NaN passes.
    x = x < -20.0f ? -20.0f : x;
    x = x > 20.0f ? 20.0f : x;
    const float z = std::fabs(x) * 0.70710678118654752f;
    const float t = 1.0f / std::fma(0.5f, z, 1.0f);
    float p = 0.17087277f;
    p = std::fma(p, t, -0.82215223f);
    p = std::fma(p, t, 1.48851587f);
    p = std::fma(p, t, -1.13520398f);
    p = std::fma(p, t, 0.27886807f);
    p = std::fma(p, t, -0.18628806f);
    p = std::fma(p, t, 0.09678418f);
    p = std::fma(p, t, 0.37409196f);
    p = std::fma(p, t, 1.00002368f);
    p = std::fma(p, t, -1.26551223f);
    // x^2 = sq + sq_err exactly (fma gives the rounding error of the product), so
    // g = exp(-x^2 / 2) has relative error ~1 ulp even at x = 13, where rounding x^2 alone
    // would cost 85 * 2^-24 / 2 = 2.5e-6 (~40 ulp).
    const float sq = x * x;
    const float sq_err = std::fma(x, x, -sq);
    const float g = exp_f32(-0.5f * sq, -0.5f * sq_err);
    const float half_erfc = 0.5f * t * g * exp_f32(p, 0.0f);
    cdf = x < 0.0f ? half_erfc : 1.0f - half_erfc;
    pdf = g * 0.39894228040143268f;  // 1 / sqrt(2 pi)
}

}  // namespace moe::kernels::cpu
