// Multi-head self-attention: projections as whole-batch gemms, then one "unit" of work per
// (batch, head) pair: q k^T, a row softmax and att v, each a gemm on that head's [T, D] and
// [T, T] blocks.
//
// Parallelism. At the real size (B=16, T=256, H=6, D=64) there are 96 units of 256x256x64
// gemms (~8 MFLOP, ~60 us on one core each). Threading gemms that small inside oneDNN costs a
// fork/join per call, and the softmax and fills between them run in separate parallel regions;
// giving each thread whole units instead needs one parallel region per call and keeps a
// unit's [T, T] block in that thread's L2 (256 KiB at T=256). oneDNN runs sgemm
// single-threaded inside a parallel region, so nothing oversubscribes. Measured here with 2
// threads, forward/backward in ms, units in parallel vs units in turn with threaded gemms:
//   B=16 T=256 H=6:  causal 33/60 vs 44/84, bidirectional 35/65 vs 37/75;
//   B=2 T=1024 H=6:  causal 27/48 vs 34/71, bidirectional 33/63 vs 34/70;
//   B=1 T=2048 H=6:  causal 45/83 vs 48/91, bidirectional 55/111 vs 54/113.
// The gain is gone by T=2048 while the backward scratch (two [T, T] blocks per thread) is
// 4.6 times larger (214 vs 47 MB there), so above T=1024 units run one after another and
// every gemm, softmax and fill uses all threads. Calls too small for any threading stay
// serial (kParallelMinUnitWork).
//
// Causal mask. Query block [i0, i1) needs only keys [0, i1), so with the mask the gemms run
// on blocks of kCausalBlock query rows and skip the rest. Scores right of the diagonal are set
// to -inf and the softmax makes them exact zeros, so saved probabilities are exactly 0 where
// masked and backward sends exactly zero gradient through them.
#include "nn/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/gemm.h"
#include "kernels/grouped_reduce.h"
#include "kernels/softmax.h"
#include "nn/rope.h"

namespace moe::nn {

namespace {

// Query rows per causal block. Single-threaded, B=4, T=256, H=6, D=64, forward/backward:
// 15.6/27.8 ms with 32, 15.7/28.2 with 64, 16.1/29.3 with 128, 16.7/30.3 without skipping
// (the projections, untouched by the mask, are 3/4 of the flops).
constexpr int64_t kCausalBlock = 32;
// Largest T for which units run in parallel (measurements at the top of the file).
constexpr int64_t kParallelUnitsMaxT = 1024;
// Backward scratch holds two [T, T] blocks per thread, for at most this many threads: at
// most twice the saved probabilities ([B*H, T, T]); 8 MiB at the real size, a third of them.
constexpr int64_t kMaxSlots = 16;
// Elementwise passes over [B, T, C] go parallel above this many elements (a team wake-up is
// ~1-2 us, the pass ~5 us per 32k elements on one core).
constexpr int64_t kParallelMinElems = 32 * 1024;
// Units go parallel only when B*H*T*T*D reaches this. The forward's units do twice that many
// multiply-adds, the backward's four times (0.13M and 0.26M here, 15-30 us on one core),
// against a team wake-up of a few us. Tiny calls (the finite-difference tests run T=5, D=4
// thousands of times) stay serial: on a loaded machine a parallel region can wait a whole
// scheduler slice for a descheduled thread.
constexpr int64_t kParallelMinUnitWork = 64 * 1024;

bool parallel_units(int64_t T, int64_t D, int64_t units) {
    return T <= kParallelUnitsMaxT && units > 1 && units * T * T * D >= kParallelMinUnitWork;
}

int64_t backward_slots(int64_t T, int64_t D, int64_t units) {
    return parallel_units(T, D, units) ? std::min(units, kMaxSlots) : 1;
}

// Rounds scratch offsets up to 16 elements (64 bytes in float).
int64_t round_up(int64_t n) {
    return (n + 15) / 16 * 16;
}

void check_args(const char* op, int64_t B, int64_t T, const AttentionConfig& cfg) {
    MOE_CHECK(B > 0 && T > 0 && cfg.n_heads > 0 && cfg.head_dim > 0, op, ": bad sizes B=", B,
              " T=", T, " n_heads=", cfg.n_heads, " head_dim=", cfg.head_dim);
    MOE_CHECK(!cfg.rope || (cfg.head_dim % 2 == 0 && cfg.rope_theta > 0), op,
              ": RoPE needs an even head_dim and rope_theta > 0, got head_dim=", cfg.head_dim,
              " rope_theta=", cfg.rope_theta);
}

// Runs fn(i) for the rows i in [0, T) of a [T, T] block: threaded when units run one after
// another (not inside a parallel region) and the block is big enough to pay for the team.
template <class F>
void for_rows(int64_t T, F&& fn) {
    parallel_for(T, !in_parallel_region() && T * T > kParallelMinElems, [&](int64_t i) { fn(i); });
}

// Query rows go in blocks; with the causal mask, block [i0, i1) sees keys [0, i1) only.
struct Blocks {
    int64_t T, size;
    bool causal;
    int64_t keys(int64_t i1) const { return causal ? i1 : T; }   // keys a query block sees
    int64_t first(int64_t j0) const { return causal ? j0 : 0; }  // first query a key block feeds
};

Blocks make_blocks(int64_t T, bool causal) {
    return {T, causal ? kCausalBlock : T, causal};
}

// One (batch, head) unit of the forward.
//   att: [T, T] (written); y_h: [T, D] with row stride C (written); q, k, v: [T, D].
template <class R>
void unit_forward(R* att, R* y_h, const R* q, const R* k, const R* v, int64_t T, int64_t D,
                  int64_t C, bool causal) {
    const R scale = R(1.0 / std::sqrt(double(D)));
    const Blocks blk = make_blocks(T, causal);
    for (int64_t i0 = 0; i0 < T; i0 += blk.size) {
        const int64_t i1 = std::min(T, i0 + blk.size);
        kernels::gemm(false, true, i1 - i0, blk.keys(i1), D, scale, q + i0 * D, D, k, D, R(0),
                      att + i0 * T, T);
    }
    // -inf right of the diagonal (including the part no gemm wrote): softmax turns it into
    // exact zeros. One softmax call for all T rows rather than one per row over its own i+1
    // columns: each call enters a parallel region (~0.5 us even when it stays serial), and with
    // 256 calls per unit causal ran 8% slower than bidirectional at T=256; now 6% faster.
    if (causal) {
        for_rows(T, [&](int64_t i) {
            std::fill(att + i * T + i + 1, att + (i + 1) * T, -std::numeric_limits<R>::infinity());
        });
    }
    kernels::softmax_forward(att, att, T, T);
    for (int64_t i0 = 0; i0 < T; i0 += blk.size) {
        const int64_t i1 = std::min(T, i0 + blk.size);
        kernels::gemm(false, false, i1 - i0, D, blk.keys(i1), R(1), att + i0 * T, T, v, D, R(0),
                      y_h + i0 * C, C);
    }
}

// One (batch, head) unit of the backward. Writes (does not accumulate) the gradients with
// respect to this head's q, k (after RoPE) and v.
//   dq_h, dk_h, dv_h, dy_h: [T, D] with row stride C; att: [T, T]; q, k, v: [T, D];
//   g, p: [T, T] scratch (d_att, then d_scores).
template <class R>
void unit_backward(R* dq_h, R* dk_h, R* dv_h, R* g, R* p, const R* dy_h, const R* att, const R* q,
                   const R* k, const R* v, int64_t T, int64_t D, int64_t C, bool causal) {
    const R scale = R(1.0 / std::sqrt(double(D)));
    const Blocks blk = make_blocks(T, causal);
    for (int64_t i0 = 0; i0 < T; i0 += blk.size) {  // g = dy v^T
        const int64_t i1 = std::min(T, i0 + blk.size);
        kernels::gemm(false, true, i1 - i0, blk.keys(i1), D, R(1), dy_h + i0 * C, C, v, D, R(0),
                      g + i0 * T, T);
    }
    for (int64_t j0 = 0; j0 < T; j0 += blk.size) {  // dv = att^T dy
        const int64_t j1 = std::min(T, j0 + blk.size), f = blk.first(j0);
        kernels::gemm(true, false, j1 - j0, D, T - f, R(1), att + f * T + j0, T, dy_h + f * C, C,
                      R(0), dv_h + j0 * C, C);
    }
    // Masked probabilities are exactly 0, so p = att * (g - sum(g * att)) is exactly 0 there
    // once g is finite: zero the part of g that no gemm wrote (scratch may hold anything).
    for_rows(T, [&](int64_t i) {
        if (causal) std::fill(g + i * T + i + 1, g + (i + 1) * T, R(0));
        std::fill(p + i * T, p + (i + 1) * T, R(0));
    });
    kernels::softmax_backward(p, g, att, T, T);
    for (int64_t i0 = 0; i0 < T; i0 += blk.size) {  // dq = scale p k
        const int64_t i1 = std::min(T, i0 + blk.size);
        kernels::gemm(false, false, i1 - i0, D, blk.keys(i1), scale, p + i0 * T, T, k, D, R(0),
                      dq_h + i0 * C, C);
    }
    for (int64_t j0 = 0; j0 < T; j0 += blk.size) {  // dk = scale p^T q
        const int64_t j1 = std::min(T, j0 + blk.size), f = blk.first(j0);
        kernels::gemm(true, false, j1 - j0, D, T - f, scale, p + f * T + j0, T, q + f * D, D, R(0),
                      dk_h + j0 * C, C);
    }
}

// dst[B, H, T, D] = src[B, T, C] split into heads, rotated by RoPE when cos_sin (the
// rope_table) is not null.
template <class R>
void split_heads(R* dst, const R* src, const R* cos_sin, int64_t B, int64_t T, int64_t H,
                 int64_t D) {
    const int64_t C = H * D, half = D / 2;
    parallel_for(B * T, B * T * C > kParallelMinElems, [&](int64_t row) {
        const int64_t b = row / T, t = row % T;
        for (int64_t h = 0; h < H; ++h) {
            const R* s = src + row * C + h * D;
            R* d = dst + ((b * H + h) * T + t) * D;
            if (cos_sin)
                rope_rotate(d, s, cos_sin + t * half, cos_sin + T * half + t * half, D);
            else
                std::copy(s, s + D, d);
        }
    });
}

// g[B, T, C] = RoPE backward of g, in place, head by head.
template <class R>
void unrotate_rows(R* g, const R* cos_sin, int64_t B, int64_t T, int64_t H, int64_t D) {
    const int64_t C = H * D, half = D / 2;
    parallel_for(B * T, B * T * C > kParallelMinElems, [&](int64_t row) {
        const int64_t t = row % T;
        for (int64_t h = 0; h < H; ++h) {
            R* r = g + row * C + h * D;
            rope_rotate_backward(r, r, cos_sin + t * half, cos_sin + T * half + t * half, D);
        }
    });
}

}  // namespace

int64_t attention_scratch_size(int64_t B, int64_t T, const AttentionConfig& cfg) {
    check_args("attention_scratch_size", B, T, cfg);
    const int64_t C = cfg.n_heads * cfg.head_dim;
    const int64_t units = B * cfg.n_heads;
    // dy, dq, dk, dv: [B, T, C] each; the RoPE table; two [T, T] blocks per slot.
    return 4 * round_up(B * T * C) + (cfg.rope ? round_up(rope_table_size(T, cfg.head_dim)) : 0) +
           backward_slots(T, cfg.head_dim, units) * 2 * T * T;
}

template <class R>
void attention_forward(R* out, const AttentionSaved<R>& saved, const R* x, const R* wq, const R* wk,
                       const R* wv, const R* wo, int64_t B, int64_t T, const AttentionConfig& cfg) {
    check_args("attention_forward", B, T, cfg);
    MOE_CHECK(out != x && saved.y != x, "attention_forward: out and saved.y must not alias x");
    const int64_t H = cfg.n_heads, D = cfg.head_dim, C = H * D, N = B * T, units = B * H;

    // Until the output projection, `out` is free: it holds the RoPE table (T*D <= B*T*C
    // elements), and saved.y holds each projection before it is split into heads.
    R* cos_sin = cfg.rope ? out : nullptr;
    if (cos_sin) rope_table(cos_sin, T, D, cfg.rope_theta);
    R* proj = saved.y;
    kernels::gemm(false, true, N, C, C, R(1), x, C, wq, C, R(0), proj, C);
    split_heads(saved.q, proj, cos_sin, B, T, H, D);
    kernels::gemm(false, true, N, C, C, R(1), x, C, wk, C, R(0), proj, C);
    split_heads(saved.k, proj, cos_sin, B, T, H, D);
    kernels::gemm(false, true, N, C, C, R(1), x, C, wv, C, R(0), proj, C);
    split_heads(saved.v, proj, static_cast<const R*>(nullptr), B, T, H, D);

    // Each unit writes its own [T, T] block of att and its own D columns of y.
    const bool par = parallel_units(T, D, units);
    auto run = [&](int64_t u) {
        const int64_t b = u / H, h = u % H;
        unit_forward(saved.att + u * T * T, saved.y + b * T * C + h * D, saved.q + u * T * D,
                     saved.k + u * T * D, saved.v + u * T * D, T, D, C, cfg.causal);
    };
    if (par) {
        parallel_for(units, true, [&](int64_t u) { run(u); });
    } else {
        for (int64_t u = 0; u < units; ++u) run(u);
    }

    kernels::gemm(false, true, N, C, C, R(1), saved.y, C, wo, C, R(0), out, C);
}

template <class R>
void attention_backward(R* d_x, R* d_wq, R* d_wk, R* d_wv, R* d_wo, R* scratch, const R* d_out,
                        const AttentionSaved<R>& saved, const R* x, const R* wq, const R* wk,
                        const R* wv, const R* wo, int64_t B, int64_t T,
                        const AttentionConfig& cfg) {
    check_args("attention_backward", B, T, cfg);
    const int64_t H = cfg.n_heads, D = cfg.head_dim, C = H * D, N = B * T, units = B * H;

    // Scratch layout, in the order attention_scratch_size counts it. dq, dk and dv are kept
    // in the [B, T, C] layout of x, so each unit writes its D columns directly and the weight
    // gradients below are plain whole-batch gemms.
    R* dy = scratch;
    R* dq = dy + round_up(N * C);
    R* dk = dq + round_up(N * C);
    R* dv = dk + round_up(N * C);
    R* cos_sin = dv + round_up(N * C);
    R* slots = cos_sin + (cfg.rope ? round_up(rope_table_size(T, D)) : 0);

    // out = y @ wo^T: d_wo += d_out^T @ y, dy = d_out @ wo.
    kernels::grouped_rows_reduce(d_wo, C * C, N, [&](R* dw, int64_t first, int64_t rows) {
        kernels::gemm(true, false, C, C, rows, R(1), d_out + first * C, C, saved.y + first * C, C,
                      R(1), dw, C);
    });
    kernels::gemm(false, false, N, C, C, R(1), d_out, C, wo, C, R(0), dy, C);

    const bool par = parallel_units(T, D, units);
    auto run = [&](int64_t u, int64_t slot) {
        const int64_t b = u / H, h = u % H;
        const int64_t col = b * T * C + h * D;  // this head's [T, D] block in [B, T, C]
        R* g = slots + slot * 2 * T * T;
        unit_backward(dq + col, dk + col, dv + col, g, g + T * T, dy + col, saved.att + u * T * T,
                      saved.q + u * T * D, saved.k + u * T * D, saved.v + u * T * D, T, D, C,
                      cfg.causal);
    };
    if (par) {
        // One scratch slot per thread, so the team is no larger than the slots that exist.
        const int64_t team = std::min<int64_t>(omp_get_max_threads(), backward_slots(T, D, units));
        parallel_team(true, team, [&](int64_t slot, int64_t) {
            team_for_nowait(units, [&](int64_t u) { run(u, slot); });
        });
    } else {
        for (int64_t u = 0; u < units; ++u) run(u, 0);
    }

    if (cfg.rope) {
        rope_table(cos_sin, T, D, cfg.rope_theta);
        unrotate_rows(dq, cos_sin, B, T, H, D);
        unrotate_rows(dk, cos_sin, B, T, H, D);
    }

    // q = x @ wq^T (likewise k, v): d_wq += dq^T @ x, d_x += dq @ wq.
    const R* grads[3] = {dq, dk, dv};
    const R* weights[3] = {wq, wk, wv};
    R* d_weights[3] = {d_wq, d_wk, d_wv};
    for (int i = 0; i < 3; ++i) {
        kernels::grouped_rows_reduce(
            d_weights[i], C * C, N, [&](R* dw, int64_t first, int64_t rows) {
                kernels::gemm(true, false, C, C, rows, R(1), grads[i] + first * C, C, x + first * C,
                              C, R(1), dw, C);
            });
        kernels::gemm(false, false, N, C, C, R(1), grads[i], C, weights[i], C, R(1), d_x, C);
    }
}

template void attention_forward<float>(float*, const AttentionSaved<float>&, const float*,
                                       const float*, const float*, const float*, const float*,
                                       int64_t, int64_t, const AttentionConfig&);
template void attention_forward<double>(double*, const AttentionSaved<double>&, const double*,
                                        const double*, const double*, const double*, const double*,
                                        int64_t, int64_t, const AttentionConfig&);
template void attention_backward<float>(float*, float*, float*, float*, float*, float*,
                                        const float*, const AttentionSaved<float>&, const float*,
                                        const float*, const float*, const float*, const float*,
                                        int64_t, int64_t, const AttentionConfig&);
template void attention_backward<double>(double*, double*, double*, double*, double*, double*,
                                         const double*, const AttentionSaved<double>&,
                                         const double*, const double*, const double*, const double*,
                                         const double*, int64_t, int64_t, const AttentionConfig&);

}  // namespace moe::nn
