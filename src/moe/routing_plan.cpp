// Building a RoutingPlan from token-major choices: a stable counting sort by expert, the
// capacity limit, and the token-major index. See routing_plan.h.
//
// The work is O(T*k + E) with serial loops: at T=4096, k=8 that is 32k choices, about
// 0.1 ms, against ~300 ms of expert GEMMs forward and backward, so threads would not pay
// and a serial pass keeps the plan trivially deterministic.
#include "moe/routing_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"

namespace moe::sparse {

namespace {
template <class R>
void check_bound(const RoutingPlan<R>& plan, const char* op) {
    MOE_CHECK(plan.offsets && plan.row_token && plan.row_choice && plan.row_weight &&
                  plan.token_offsets && plan.token_rows,
              op, ": the plan's buffers are not bound");
}
}  // namespace

template <class R>
void build_plan_from_choices(RoutingPlan<R>& plan, const Choices<R>& ch, int64_t E,
                             int64_t capacity, int64_t* scratch) {
    // ch.expert, ch.weight, ch.priority: [T, k]; scratch: [E + T*k]
    check_bound(plan, "build_plan_from_choices");
    const int64_t T = ch.T, k = ch.k, n = T * k;
    MOE_CHECK(T >= 0 && k >= 1 && E >= 1, "build_plan_from_choices: bad sizes T=", T, " k=", k,
              " E=", E);
    MOE_CHECK(n <= plan.max_rows, "build_plan_from_choices: T*k=", n,
              " choices but the plan holds ", plan.max_rows, " rows");
    MOE_CHECK(n < int64_t(std::numeric_limits<int32_t>::max()), "build_plan_from_choices: T*k=", n,
              " does not fit the int32 row ids");
    plan.T = T;
    plan.E = E;
    int64_t* cursor = scratch;     // [E] counts, then write positions
    int64_t* order = scratch + E;  // [T*k] valid choices grouped by expert, in choice order
    int64_t dropped = 0;

    // 1. Count each expert's choices; expert -1 is a choice the router already dropped.
    std::fill(cursor, cursor + E, int64_t(0));
    for (int64_t c = 0; c < n; ++c) {
        const int32_t e = ch.expert[c];
        if (e < 0) {
            ++dropped;
            continue;
        }
        MOE_CHECK(e < E, "build_plan_from_choices: choice ", c, " names expert ", e, " of ", E);
        ++cursor[e];
    }
    // 2. Offsets of every valid choice (before capacity) and the stable scatter: choice
    //    order is token order, so each expert's segment lists its tokens ascending.
    plan.offsets[0] = 0;
    for (int64_t e = 0; e < E; ++e) plan.offsets[e + 1] = plan.offsets[e] + cursor[e];
    for (int64_t e = 0; e < E; ++e) cursor[e] = plan.offsets[e];
    for (int64_t c = 0; c < n; ++c)
        if (ch.expert[c] >= 0) order[cursor[ch.expert[c]]++] = c;

    // 3. Capacity, then the rows. New offsets never run ahead of the old ones, so they are
    //    written over the old in the same pass (old_end is read before it is replaced).
    const R* prio = ch.priority;
    auto key = [prio](int64_t c) {  // NaN priority sorts last, so the order stays total
        const double p = double(prio[c]);
        return std::isnan(p) ? -std::numeric_limits<double>::infinity() : p;
    };
    int64_t r = 0, old_begin = 0;
    for (int64_t e = 0; e < E; ++e) {
        const int64_t old_end = plan.offsets[e + 1];
        plan.offsets[e] = r;
        int64_t* seg = order + old_begin;
        int64_t cnt = old_end - old_begin;
        if (capacity >= 0 && cnt > capacity) {
            if (prio) {
                // The `capacity` highest priorities, ties to the lower choice (= token):
                // a strict total order, so the kept set is unique. Then back to token order.
                std::nth_element(seg, seg + capacity, seg + cnt, [&](int64_t a, int64_t b) {
                    const double ka = key(a), kb = key(b);
                    return ka != kb ? ka > kb : a < b;
                });
                std::sort(seg, seg + capacity);
            }
            dropped += cnt - capacity;
            cnt = capacity;
        }
        for (int64_t i = 0; i < cnt; ++i, ++r) {
            const int64_t c = seg[i];
            plan.row_token[r] = int32_t(c / k);
            plan.row_choice[r] = int32_t(c);
            plan.row_weight[r] = ch.weight[c];
        }
        old_begin = old_end;
    }
    plan.offsets[E] = r;
    plan.dropped = dropped;
    build_token_index(plan, scratch);
}

template <class R>
void build_token_index(RoutingPlan<R>& plan, int64_t* scratch) {
    // scratch: [T]
    check_bound(plan, "build_token_index");
    const int64_t T = plan.T, rows = plan.rows();
    MOE_CHECK(rows <= plan.max_rows, "build_token_index: ", rows, " rows but the plan holds ",
              plan.max_rows);
    std::fill(scratch, scratch + T, int64_t(0));
    for (int64_t r = 0; r < rows; ++r) {
        const int32_t t = plan.row_token[r];
        MOE_CHECK(t >= 0 && t < T, "build_token_index: row ", r, " names token ", t, " of ", T);
        ++scratch[t];
    }
    plan.token_offsets[0] = 0;
    for (int64_t t = 0; t < T; ++t) {
        plan.token_offsets[t + 1] = plan.token_offsets[t] + scratch[t];
        scratch[t] = plan.token_offsets[t];
    }
    // Ascending r, so each token's rows are listed in row order: combine adds in that order.
    for (int64_t r = 0; r < rows; ++r) plan.token_rows[scratch[plan.row_token[r]]++] = int32_t(r);
}

template void build_plan_from_choices<float>(RoutingPlan<float>&, const Choices<float>&, int64_t,
                                             int64_t, int64_t*);
template void build_plan_from_choices<double>(RoutingPlan<double>&, const Choices<double>&, int64_t,
                                              int64_t, int64_t*);
template void build_token_index<float>(RoutingPlan<float>&, int64_t*);
template void build_token_index<double>(RoutingPlan<double>&, int64_t*);

}  // namespace moe::sparse
