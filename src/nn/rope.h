// Rotary position embedding (RoPE) in the "rotate half" form of Llama and GPT-NeoX: in a
// head vector of size D, the pair (i, i + D/2) is rotated by the angle pos * theta^(-2i/D),
//
//   out[i]       = x[i] * cos - x[i + D/2] * sin
//   out[i + D/2] = x[i + D/2] * cos + x[i] * sin          for i in [0, D/2).
//
// The rotation is orthogonal, so its backward is the rotation by the opposite angle.
// The angles come from a table filled once per call, since sin/cos cost ~20 ns each and a
// [B, T, C] tensor needs B*T*C/2 of them against T*D/2 for the table (16 * 6 = 96 times
// fewer at B=16, H=6).
#pragma once

#include <cstdint>

namespace moe::nn {

// Elements of the table rope_table writes: cos then sin, each [T, D/2].
inline int64_t rope_table_size(int64_t T, int64_t D) {
    return T * D;
}

// cos_sin[0, t, i] = cos(t * theta^(-2i/D)), cos_sin[1, t, i] = sin(...), for t in [0, T).
// Angles are computed in double and rounded once: at t = 255, i = 0 the angle is 255 rad,
// where a float angle would already be off by ~1e-5.
template <class R>
void rope_table(R* cos_sin, int64_t T, int64_t D, double theta);

// The table row of one position: cos[D/2] and sin[D/2] at angle pos * theta^(-2i/D), with
// the same double expressions as rope_table, so equal bit for bit to rope_table's row pos.
// For incremental decoding, where each step sees one new position: D/2 pow and D sin/cos
// calls (1.2 us at D = 64) instead of a table of every position so far.
template <class R>
void rope_position(R* cos, R* sin, int64_t pos, int64_t D, double theta);

// Rotates one head vector: dst[D] = rope(src[D]) with the table row cos[D/2], sin[D/2] of its
// position. dst may alias src (each pair is read before it is written).
template <class R>
inline void rope_rotate(R* dst, const R* src, const R* cos, const R* sin, int64_t D) {
    const int64_t half = D / 2;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
        const R x1 = src[i], x2 = src[i + half];
        dst[i] = x1 * cos[i] - x2 * sin[i];
        dst[i + half] = x2 * cos[i] + x1 * sin[i];
    }
}

// The backward of rope_rotate: d_src[D] = rotation of d_dst[D] by the opposite angle.
// Overwrites d_src (callers that accumulate do so afterwards); d_src may alias d_dst.
template <class R>
inline void rope_rotate_backward(R* d_src, const R* d_dst, const R* cos, const R* sin, int64_t D) {
    const int64_t half = D / 2;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
        const R g1 = d_dst[i], g2 = d_dst[i + half];
        d_src[i] = g1 * cos[i] + g2 * sin[i];
        d_src[i + half] = g2 * cos[i] - g1 * sin[i];
    }
}

}  // namespace moe::nn
