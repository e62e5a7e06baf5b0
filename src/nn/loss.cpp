// Losses: softmax cross-entropy (the language-model head), BCE on logits, MSE.
//
// Cross-entropy is the only big one: at the real size (4096 tokens x 4096 vocab) it is 16M
// exponentials, so its float path splits rows over OpenMP threads and evaluates exp with a
// vectorisable polynomial (glibc's vector expf is only declared under -ffast-math, which we
// do not use, so a loop calling std::exp stays scalar). The softmax is computed here,
// inline, rather than through kernels/softmax.h: the loss needs each row's log-sum-exp
// too, and the softmax computes it on the way.
//
// Each row's loss goes into a buffer and the buffer is summed in row order, so the mean is
// the same bit for bit whatever the thread count.
#include "nn/loss.h"

#include "core/parallel_for.h"
#include "kernels/cpu/vec_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/check.h"

namespace moe::nn {

namespace {

// Rows are split over threads once there are at least this many logits: the float
// forward takes ~0.8 ns per logit on one core (13 ms at 4096 x 4096), so 32k logits are
// ~25 us of work, enough to pay for a fork/join (microseconds on idle cores).
constexpr int64_t kParallelMin = 32768;

// One row of softmax cross-entropy: probs[v] = exp(x[v] - max) / sum, and the row's loss
// log(sum) + max - x[target] in double. probs may alias x, so x[target] is read first.
template <class R>
double cross_entropy_row(R* probs, const R* x, int32_t target, int64_t V) {
    R max = x[0];
#pragma omp simd reduction(max : max)
    for (int64_t v = 1; v < V; ++v) max = x[v] > max ? x[v] : max;
    const double x_target = target >= 0 ? double(x[target]) : 0.0;
    double sum = 0.0;
    if constexpr (std::is_same_v<R, float>) {
        // Two loops, because GCC 12 does not vectorise the exp and a double reduction in one
        // loop ("control flow in loop"); the second pass reads the row from L1 (16 KiB at
        // V = 4096). The lanes sum in double: a float sum of 4096 terms may be off by up to
        // 4096 * 2^-24 = 2.4e-4 relative, which would show in the loss.
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) probs[v] = kernels::cpu::exp_nonpositive_f32(x[v] - max);
#pragma omp simd reduction(+ : sum)
        for (int64_t v = 0; v < V; ++v) sum += double(probs[v]);
    } else {
        for (int64_t v = 0; v < V; ++v) {
            const R e = std::exp(x[v] - max);
            probs[v] = e;
            sum += double(e);
        }
    }
    const R inv = R(1.0 / sum);
    for (int64_t v = 0; v < V; ++v) probs[v] *= inv;
    // sum >= 1 (the max contributes exp(0)), so the log is finite even for logits of 1e4.
    return target >= 0 ? std::log(sum) + double(max) - x_target : 0.0;
}

}  // namespace

int64_t count_targets(const int32_t* targets, int64_t N) {
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) count += targets[n] >= 0;
    return count;
}

template <class R>
double cross_entropy_forward(R* probs, const R* logits, const int32_t* targets, int64_t N,
                             int64_t V) {
    // probs: [N, V] (saved, may alias logits), logits: [N, V], targets: [N]
    MOE_CHECK(N >= 0 && V > 0, "cross_entropy_forward: bad sizes N=", N, " V=", V);
    // Checked before the parallel loop: an exception must not leave an OpenMP region.
    for (int64_t n = 0; n < N; ++n)
        MOE_CHECK(targets[n] >= -1 && targets[n] < V, "cross_entropy_forward: target ", targets[n],
                  " at row ", n, " is outside [-1, ", V, ") (V=", V, ")");
    // Reused across calls so a training step allocates nothing after the first.
    thread_local std::vector<double> row_loss;
    row_loss.assign(size_t(N), 0.0);
    double* rl = row_loss.data();
    parallel_for(N, N > 1 && N * V >= kParallelMin, [&](int64_t n) {
        rl[n] = cross_entropy_row(probs + n * V, logits + n * V, targets[n], V);
    });
    const int64_t count = count_targets(targets, N);
    if (count == 0) return 0.0;
    double total = 0.0;
    for (int64_t n = 0; n < N; ++n) total += rl[n];
    return total / double(count);
}

template <class R>
void cross_entropy_backward(R* d_logits, const R* probs, const int32_t* targets, int64_t N,
                            int64_t V, R d_loss) {
    // d_logits: [N, V], probs: [N, V] (from the forward), targets: [N]
    MOE_CHECK(N >= 0 && V > 0, "cross_entropy_backward: bad sizes N=", N, " V=", V);
    for (int64_t n = 0; n < N; ++n)
        MOE_CHECK(targets[n] >= -1 && targets[n] < V, "cross_entropy_backward: target ", targets[n],
                  " at row ", n, " is outside [-1, ", V, ") (V=", V, ")");
    const int64_t count = count_targets(targets, N);
    if (count == 0) return;
    const R scale = R(double(d_loss) / double(count));
    parallel_for(N, N > 1 && N * V >= kParallelMin, [&](int64_t n) {
        const int32_t t = targets[n];
        if (t < 0) return;
        R* d = d_logits + n * V;
        const R* p = probs + n * V;
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) d[v] += scale * p[v];
        d[t] -= scale;
    });
}

template <class R>
double bce_with_logits_forward(const R* logits, const R* targets, int64_t N) {
    // logits, targets: [N]
    MOE_CHECK(N >= 0, "bce_with_logits_forward: bad size N=", N);
    if (N == 0) return 0.0;
    double total = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const double z = logits[n], y = targets[n];
        // log(1 + exp(z)) - z y without overflow: exp only ever sees -|z|.
        total += std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::fabs(z)));
    }
    return total / double(N);
}

template <class R>
void bce_with_logits_backward(R* d_logits, const R* logits, const R* targets, int64_t N, R d_loss) {
    // d_logits, logits, targets: [N]
    MOE_CHECK(N >= 0, "bce_with_logits_backward: bad size N=", N);
    if (N == 0) return;
    const double scale = double(d_loss) / double(N);
    for (int64_t n = 0; n < N; ++n) {
        const double z = logits[n];
        // sigmoid(z) from exp(-|z|), which cannot overflow.
        const double e = std::exp(-std::fabs(z));
        const double s = z >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        d_logits[n] += R(scale * (s - double(targets[n])));
    }
}

template <class R>
double mse_forward(const R* pred, const R* target, int64_t N) {
    // pred, target: [N]
    MOE_CHECK(N >= 0, "mse_forward: bad size N=", N);
    if (N == 0) return 0.0;
    double total = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const double d = double(pred[n]) - double(target[n]);
        total += d * d;
    }
    return total / double(N);
}

template <class R>
void mse_backward(R* d_pred, const R* pred, const R* target, int64_t N, R d_loss) {
    // d_pred, pred, target: [N]
    MOE_CHECK(N >= 0, "mse_backward: bad size N=", N);
    if (N == 0) return;
    const double scale = 2.0 * double(d_loss) / double(N);
    for (int64_t n = 0; n < N; ++n) d_pred[n] += R(scale * (double(pred[n]) - double(target[n])));
}

#define MOE_INSTANTIATE(R)                                                                      \
    template double cross_entropy_forward<R>(R*, const R*, const int32_t*, int64_t, int64_t);   \
    template void cross_entropy_backward<R>(R*, const R*, const int32_t*, int64_t, int64_t, R); \
    template double bce_with_logits_forward<R>(const R*, const R*, int64_t);                    \
    template void bce_with_logits_backward<R>(R*, const R*, const R*, int64_t, R);              \
    template double mse_forward<R>(const R*, const R*, int64_t);                                \
    template void mse_backward<R>(R*, const R*, const R*, int64_t, R);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::nn
