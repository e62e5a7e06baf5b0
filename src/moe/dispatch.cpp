// Dispatch and combine (see dispatch.h). Memory-bound copies and axpys over rows of d
// values; at T=4096, k=2, d=512 each pass moves 16-32 MiB, a few ms against ~100 ms of
// expert GEMMs, so they are parallel over rows/tokens and otherwise kept plain.
#include "moe/dispatch.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/parallel_for.h"

namespace moe::sparse {

namespace {
// Below 32k elements (128 KiB of f32) a pass takes a few microseconds: one thread.
constexpr int64_t kParallelMin = 32768;

template <class R>
void check_plan(const RoutingPlan<R>& plan, int64_t d, const char* op) {
    MOE_CHECK(plan.offsets && plan.row_token && plan.token_offsets && plan.token_rows, op,
              ": plan not built");
    MOE_CHECK(d > 0, op, ": bad width d=", d);
}
}  // namespace

template <class R>
void dispatch_forward(R* xs, const R* x, const RoutingPlan<R>& plan, int64_t d) {
    // xs: [rows, d], x: [T, d]
    check_plan(plan, d, "dispatch_forward");
    const int64_t rows = plan.rows();
    parallel_for(rows, rows * d >= kParallelMin, [&](int64_t r) {
        std::memcpy(xs + r * d, x + int64_t(plan.row_token[r]) * d, size_t(d) * sizeof(R));
    });
}

template <class R>
void dispatch_backward(R* d_x, const R* d_xs, const RoutingPlan<R>& plan, int64_t d) {
    // d_x: [T, d] accumulated, d_xs: [rows, d]
    check_plan(plan, d, "dispatch_backward");
    const int64_t T = plan.T;
    parallel_for(T, plan.rows() * d >= kParallelMin, [&](int64_t t) {
        R* dst = d_x + t * d;
        for (int64_t i = plan.token_offsets[t]; i < plan.token_offsets[t + 1]; ++i) {
            const R* src = d_xs + int64_t(plan.token_rows[i]) * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
        }
    });
}

template <class R>
void combine_forward(R* out, const R* ys, const RoutingPlan<R>& plan, int64_t d) {
    // out: [T, d] written, ys: [rows, d]
    check_plan(plan, d, "combine_forward");
    const int64_t T = plan.T;
    parallel_for(T, T * d >= kParallelMin, [&](int64_t t) {
        R* dst = out + t * d;
        const int64_t begin = plan.token_offsets[t], end = plan.token_offsets[t + 1];
        if (begin == end) {
            std::fill(dst, dst + d, R(0));
            return;
        }
        // The first row writes, the others add: one pass less than zero-then-add.
        {
            const int64_t r = plan.token_rows[begin];
            const R w = plan.row_weight[r];
            const R* src = ys + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) dst[j] = w * src[j];
        }
        for (int64_t i = begin + 1; i < end; ++i) {
            const int64_t r = plan.token_rows[i];
            const R w = plan.row_weight[r];
            const R* src = ys + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) dst[j] += w * src[j];
        }
    });
}

template <class R>
void combine_backward(R* d_ys, R* d_row_weight, const R* d_out, const R* ys,
                      const RoutingPlan<R>& plan, int64_t d) {
    // d_ys: [rows, d] written, d_row_weight: [rows] written or null, d_out: [T, d],
    // ys: [rows, d]
    check_plan(plan, d, "combine_backward");
    const int64_t rows = plan.rows();
    parallel_for(rows, rows * d >= kParallelMin, [&](int64_t r) {
        const R* g = d_out + int64_t(plan.row_token[r]) * d;
        const R* y = ys + r * d;
        R* dy = d_ys + r * d;
        const R w = plan.row_weight[r];
        R acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < d; ++j) {
            dy[j] = w * g[j];
            acc += g[j] * y[j];
        }
        if (d_row_weight) d_row_weight[r] = acc;
    });
}

#define MOE_INSTANTIATE(R)                                                            \
    template void dispatch_forward<R>(R*, const R*, const RoutingPlan<R>&, int64_t);  \
    template void dispatch_backward<R>(R*, const R*, const RoutingPlan<R>&, int64_t); \
    template void combine_forward<R>(R*, const R*, const RoutingPlan<R>&, int64_t);   \
    template void combine_backward<R>(R*, R*, const R*, const R*, const RoutingPlan<R>&, int64_t);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::sparse
