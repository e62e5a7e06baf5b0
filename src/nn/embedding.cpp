// Token embedding: row gather forward, row scatter-add backward.
//
// Both are copies of N rows of C values (a few MiB at the real size), far cheaper than
// the gemms of the first layer, so they stay on one thread: splitting the backward's rows
// over threads would also race on repeated ids.
#include "nn/embedding.h"

#include <cstring>

#include "core/check.h"
#include "kernels/grouped_reduce.h"

namespace moe::nn {

namespace {
// Every id in [0, V), checked before anything is written, so a bad batch leaves the
// outputs untouched. The error names the first bad position and its id.
void check_ids(const char* op, const int32_t* ids, int64_t N, int64_t V, int64_t C) {
    MOE_CHECK(N >= 0 && V > 0 && C > 0, op, ": bad sizes N=", N, " V=", V, " C=", C);
    for (int64_t n = 0; n < N; ++n)
        MOE_CHECK(ids[n] >= 0 && ids[n] < V, op, ": id ", ids[n], " at position ", n,
                  " is outside the vocabulary [0, ", V, ")");
}
}  // namespace

template <class R>
void embedding_forward(R* out, const int32_t* ids, const R* table, int64_t N, int64_t V,
                       int64_t C) {
    // out: [N, C], ids: [N], table: [V, C]
    check_ids("embedding_forward", ids, N, V, C);
    for (int64_t n = 0; n < N; ++n)
        std::memcpy(out + n * C, table + int64_t(ids[n]) * C, size_t(C) * sizeof(R));
}

template <class R>
void embedding_backward(R* d_table, const R* d_out, const int32_t* ids, int64_t N, int64_t V,
                        int64_t C) {
    // d_table: [V, C], d_out: [N, C], ids: [N]
    check_ids("embedding_backward", ids, N, V, C);
    // Over the N rows in the canonical order of kernels/grouped_reduce.h.
    kernels::grouped_rows_reduce(d_table, V * C, N, [&](R* dt, int64_t first, int64_t rows) {
        for (int64_t n = first; n < first + rows; ++n) {
            R* dst = dt + int64_t(ids[n]) * C;
            const R* src = d_out + n * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
        }
    });
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t,
                                       int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t,
                                         int64_t);

}  // namespace moe::nn
