// Dispatch and combine: moving token rows between the token-major layer input/output and
// the expert-major blocks the experts run on (the plan's rows).
//
//   dispatch: xs[r, :] = x[row_token[r], :]                     (gather, one copy per row)
//   combine:  out[t, :] = sum over t's rows r of row_weight[r] * ys[r, :]
//
// A token whose choices were all dropped has no rows: combine gives it 0, and the caller's
// residual carries it. Combine and the dispatch backward run in parallel over tokens
// using the plan's token index, each token adding its rows in ascending row order, so the
// sums are the same for any thread count. Templated on R, instantiated for float and
// double; the loops are plain and vectorise over d (the same code is the reference).
#pragma once

#include <cstdint>

#include "moe/routing_plan.h"

namespace moe::sparse {

// xs: [rows, d] written; x: [T, d].
template <class R>
void dispatch_forward(R* xs, const R* x, const RoutingPlan<R>& plan, int64_t d);

// d_x: [T, d] accumulated: d_x[t] += sum over t's rows of d_xs[r]. d_xs: [rows, d].
template <class R>
void dispatch_backward(R* d_x, const R* d_xs, const RoutingPlan<R>& plan, int64_t d);

// out: [T, d] written (0 for tokens without rows); ys: [rows, d].
template <class R>
void combine_forward(R* out, const R* ys, const RoutingPlan<R>& plan, int64_t d);

// From d_out [T, d] and the expert outputs ys [rows, d]:
//   d_ys[r] = row_weight[r] * d_out[row_token[r]]          ([rows, d], written)
//   d_row_weight[r] = dot(d_out[row_token[r]], ys[r])      ([rows], written)
// Both are the layer's intermediates, so they are written rather than accumulated (no
// zeroing pass over [rows, d]). d_row_weight may be null (a router without a gradient).
template <class R>
void combine_backward(R* d_ys, R* d_row_weight, const R* d_out, const R* ys,
                      const RoutingPlan<R>& plan, int64_t d);

}  // namespace moe::sparse
