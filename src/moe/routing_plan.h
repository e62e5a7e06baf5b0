// RoutingPlan: where every token goes, in the form dispatch and combine need.
//
// A router makes "rows": (token, expert, weight) assignments. The plan keeps them grouped
// by expert, in token order within each expert (a stable counting sort), so expert e's
// tokens are the contiguous rows [offsets[e], offsets[e+1]) and run through one GEMM.
// The token-major index (token_offsets / token_rows) lists each token's rows in ascending
// row order, so combine and the dispatch backward can run in parallel over tokens and
// still add in a fixed order (deterministic for any thread count).
//
// Buffers are views into the layer's activation arena, sized once for max_rows.
#pragma once

#include <cstdint>

namespace moe::sparse {

template <class R>
struct RoutingPlan {
    int64_t T = 0;         // tokens
    int64_t E = 0;         // experts
    int64_t max_rows = 0;  // capacity of the row buffers

    int64_t* offsets = nullptr;     // [E + 1]; offsets[E] = rows()
    int32_t* row_token = nullptr;   // [max_rows] token of each row
    int32_t* row_choice = nullptr;  // [max_rows] router-defined id of the choice behind
                                    // each row (e.g. t * k + j), to route gradients back
    R* row_weight = nullptr;        // [max_rows] combine weight

    int64_t* token_offsets = nullptr;  // [T + 1]
    int32_t* token_rows = nullptr;     // [max_rows] rows of token t at
                                       // [token_offsets[t], token_offsets[t + 1])

    int64_t dropped = 0;  // choices removed by a capacity limit

    int64_t rows() const { return offsets[E]; }
    int64_t count(int64_t e) const { return offsets[e + 1] - offsets[e]; }
};

// Token-major choices of a token-choice router: choice c = t * k + j is token t's j-th
// expert. expert[c] = -1 means no expert (already dropped).
template <class R>
struct Choices {
    int64_t T = 0, k = 0;
    const int32_t* expert = nullptr;  // [T, k]
    const R* weight = nullptr;        // [T, k] combine weights
    const R* priority = nullptr;      // [T, k] who keeps a seat when capacity is short
                                      // (the router probability); null = token order
};

// Builds the plan from token-major choices: counts, capacity drop, stable counting sort,
// token index. capacity < 0 means dropless. With a capacity, each expert keeps at most
// `capacity` rows: the highest priority ones (ties and null priority: lowest token first).
// row_choice[r] is the choice index c. Allocation-free: `scratch` holds E + T*k int64s.
template <class R>
void build_plan_from_choices(RoutingPlan<R>& plan, const Choices<R>& choices, int64_t E,
                             int64_t capacity, int64_t* scratch);

// Fills token_offsets / token_rows from row_token (after a router filled rows directly,
// e.g. expert choice). `scratch` holds T int64s.
template <class R>
void build_token_index(RoutingPlan<R>& plan, int64_t* scratch);

}  // namespace moe::sparse
