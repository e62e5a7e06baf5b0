#include "nn/linear.h"

#include "core/check.h"
#include "kernels/gemm.h"
#include "kernels/grouped_reduce.h"

namespace moe::nn {

template <class R>
void linear_forward(R* out, const R* in, const R* weight, const R* bias, int64_t N, int64_t C,
                    int64_t OC) {
    MOE_CHECK(N >= 0 && C > 0 && OC > 0, "linear_forward: bad sizes N=", N, " C=", C, " OC=", OC);
    if (bias) {
        for (int64_t n = 0; n < N; ++n)
            for (int64_t o = 0; o < OC; ++o) out[n * OC + o] = bias[o];
    }
    kernels::gemm(false, true, N, OC, C, R(1), in, C, weight, C, bias ? R(1) : R(0), out, OC);
}

template <class R>
void linear_backward(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in, const R* weight,
                     int64_t N, int64_t C, int64_t OC) {
    MOE_CHECK(N >= 0 && C > 0 && OC > 0, "linear_backward: bad sizes N=", N, " C=", C, " OC=", OC);
    if (d_in) kernels::gemm(false, false, N, C, OC, R(1), d_out, OC, weight, C, R(1), d_in, C);
    // Sums over the N rows, in the canonical order of kernels/grouped_reduce.h.
    kernels::grouped_rows_reduce(d_weight, OC * C, N, [&](R* dw, int64_t first, int64_t rows) {
        kernels::gemm(true, false, OC, C, rows, R(1), d_out + first * OC, OC, in + first * C, C,
                      R(1), dw, C);
    });
    if (d_bias) {
        kernels::grouped_rows_reduce(d_bias, OC, N, [&](R* db, int64_t first, int64_t rows) {
            for (int64_t n = first; n < first + rows; ++n)
                for (int64_t o = 0; o < OC; ++o) db[o] += d_out[n * OC + o];
        });
    }
}

template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t,
                                    int64_t, int64_t);
template void linear_forward<double>(double*, const double*, const double*, const double*, int64_t,
                                     int64_t, int64_t);
template void linear_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int64_t, int64_t, int64_t);
template void linear_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int64_t, int64_t, int64_t);

}  // namespace moe::nn
