// Sums over rows (tokens) whose result does not depend on how a batch is split over ranks.
//
// A weight gradient is a sum over the batch's rows. One process sums all N rows in one
// GEMM; R data-parallel ranks each sum N/R rows and then add their results: the same
// numbers in another order, so the two differ in the last bits (about 1e-7 relative).
// Top-k routing turns such a difference into a different choice sooner or later, and the
// runs part. With reduction groups g > 1 every such sum is taken in one canonical order:
// the rows are split into g equal chunks, each chunk is summed on its own, and the chunk
// sums are combined by a pairwise tree, ((c0 + c1) + (c2 + c3)) for g = 4. A rank of an
// R-rank run (R dividing g, both powers of two) uses g / R groups on its N / R rows: its
// tree is a subtree of the single process's, and the trainer combines the ranks' results
// by the top of the same tree (DataParallelGrads), so both give the same bits.
//
// The setting is per thread (the thread that runs backward) and scoped; the expert bank
// switches it off for the experts, whose rows are the same on one or R ranks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/check.h"

namespace moe::kernels {

// Row groups of the reductions below on this thread (1: a plain sum).
int64_t reduction_groups();

// Sets reduction_groups() for its lifetime. g must be a power of two.
class ReductionGroups {
  public:
    explicit ReductionGroups(int64_t g);
    ~ReductionGroups();
    ReductionGroups(const ReductionGroups&) = delete;
    ReductionGroups& operator=(const ReductionGroups&) = delete;

  private:
    int64_t saved_;
};

// Combines `parts` equal blocks of n values (block p: values [p * n, (p + 1) * n)) by the
// same pairwise tree, in place; the result is in block 0. parts must be a power of two.
// values: [parts, n]
template <class R>
void pairwise_tree_sum(R* values, int64_t parts, int64_t n) {
    for (int64_t stride = 1; stride < parts; stride *= 2)
        for (int64_t c = 0; c + stride < parts; c += 2 * stride) {
            R* a = values + c * n;
            const R* b = values + (c + stride) * n;
            for (int64_t i = 0; i < n; ++i) a[i] += b[i];
        }
}

// dst[0, n) += the sum over rows [0, N) that `partial(buf, first_row, rows)` computes,
// where partial ADDS the sum over rows [first_row, first_row + rows) into buf[0, n).
// With g = reduction_groups() > 1: N % g must be 0; each chunk goes into its own zeroed
// buffer, the buffers are combined pairwise, and the root is added to dst.
template <class R, class Partial>
void grouped_rows_reduce(R* dst, int64_t n, int64_t N, const Partial& partial) {
    const int64_t g = reduction_groups();
    if (g == 1) {
        partial(dst, int64_t(0), N);
        return;
    }
    MOE_CHECK(N % g == 0, "grouped_rows_reduce: ", N, " rows do not split into ", g,
              " reduction groups");
    // One buffer per chunk, kept between calls (grown on first use: no allocation per step).
    thread_local std::vector<R> scratch;
    if (scratch.size() < size_t(g * n)) scratch.resize(size_t(g * n));
    std::fill(scratch.begin(), scratch.begin() + g * n, R(0));
    const int64_t rows = N / g;
    for (int64_t c = 0; c < g; ++c) partial(scratch.data() + c * n, c * rows, rows);
    pairwise_tree_sum(scratch.data(), g, n);
    for (int64_t i = 0; i < n; ++i) dst[i] += scratch[size_t(i)];
}

// grouped_rows_reduce for two sums over the same rows that one pass computes together
// (LayerNorm's gain and bias): `partial(buf_a, buf_b, first_row, rows)` ADDS into buf_a[0, n)
// and, unless dst_b is null (then buf_b is null too), buf_b[0, n). Each sum gets the same
// canonical order as grouped_rows_reduce would give it alone.
template <class R, class Partial>
void grouped_rows_reduce_pair(R* dst_a, R* dst_b, int64_t n, int64_t N, const Partial& partial) {
    const int64_t g = reduction_groups();
    if (g == 1) {
        partial(dst_a, dst_b, int64_t(0), N);
        return;
    }
    MOE_CHECK(N % g == 0, "grouped_rows_reduce: ", N, " rows do not split into ", g,
              " reduction groups");
    // [g, n] chunks of a, then [g, n] chunks of b; kept between calls like the one above.
    thread_local std::vector<R> scratch;
    const int64_t sums = dst_b ? 2 : 1;
    if (scratch.size() < size_t(sums * g * n)) scratch.resize(size_t(sums * g * n));
    std::fill(scratch.begin(), scratch.begin() + sums * g * n, R(0));
    R* a = scratch.data();
    R* b = dst_b ? a + g * n : nullptr;
    const int64_t rows = N / g;
    for (int64_t c = 0; c < g; ++c) partial(a + c * n, b ? b + c * n : nullptr, c * rows, rows);
    pairwise_tree_sum(a, g, n);
    for (int64_t i = 0; i < n; ++i) dst_a[i] += a[i];
    if (b) {
        pairwise_tree_sum(b, g, n);
        for (int64_t i = 0; i < n; ++i) dst_b[i] += b[i];
    }
}

}  // namespace moe::kernels
