// Routing statistics (see stats.h).
#include "moe/stats.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/parallel_for.h"

namespace moe::sparse {

template <class R>
double mean_row_entropy(const R* probs, int64_t T, int64_t E) {
    // probs: [T, E]. 64 fixed chunks of tokens, summed in order afterwards: the result does
    // not depend on how OpenMP spreads the chunks. (T*E logs: 262k at T=4096, E=64, ~1 ms
    // on one core, so the loop is worth splitting.)
    constexpr int64_t kChunks = 64;
    double partial[kChunks] = {};
    parallel_for(kChunks, T * E >= 65536, [&](int64_t c) {
        const int64_t begin = T * c / kChunks, end = T * (c + 1) / kChunks;
        double h = 0;
        for (int64_t t = begin; t < end; ++t)
            for (int64_t e = 0; e < E; ++e) {
                const double p = double(probs[t * E + e]);
                if (p > 0) h -= p * std::log(p);
            }
        partial[c] = h;
    });
    double h = 0;
    for (double p : partial) h += p;
    return T > 0 ? h / double(T) : 0.0;
}

template <class R>
void update_stats(MoeStats& s, const RoutingPlan<R>& plan, const R* probs,
                  const RouterLosses& losses, comm::Comm* group) {
    const int64_t E = plan.E;
    if (int64_t(s.tokens_per_expert.size()) != E) s.tokens_per_expert.assign(size_t(E), 0);
    // [count per expert, tokens, rows, dropped, entropy * tokens], summed over the group.
    s.sums.resize(size_t(E + 4));
    for (int64_t e = 0; e < E; ++e) s.sums[size_t(e)] = double(plan.count(e));
    const double entropy = probs ? mean_row_entropy(probs, plan.T, E) : -1.0;
    s.sums[size_t(E)] = double(plan.T);
    s.sums[size_t(E + 1)] = double(plan.rows());
    s.sums[size_t(E + 2)] = double(plan.dropped);
    s.sums[size_t(E + 3)] = entropy * double(plan.T);
    if (group && group->size() > 1) group->allreduce_sum(s.sums.data(), E + 4);

    s.tokens = int64_t(s.sums[size_t(E)]);
    s.rows = int64_t(s.sums[size_t(E + 1)]);
    const int64_t dropped = int64_t(s.sums[size_t(E + 2)]);
    double mx = 0;
    for (int64_t e = 0; e < E; ++e) {
        s.tokens_per_expert[size_t(e)] = int64_t(s.sums[size_t(e)]);
        mx = std::max(mx, s.sums[size_t(e)]);
    }
    s.max_load = mx;
    s.mean_load = double(s.rows) / double(E);
    s.load_imbalance = s.mean_load > 0 ? s.max_load / s.mean_load : 0.0;
    const int64_t total = s.rows + dropped;
    s.dropped_fraction = total > 0 ? double(dropped) / double(total) : 0.0;
    s.router_entropy =
        probs ? (s.tokens > 0 ? s.sums[size_t(E + 3)] / double(s.tokens) : 0.0) : -1.0;
    s.losses = losses;
}

template void update_stats<float>(MoeStats&, const RoutingPlan<float>&, const float*,
                                  const RouterLosses&, comm::Comm*);
template void update_stats<double>(MoeStats&, const RoutingPlan<double>&, const double*,
                                   const RouterLosses&, comm::Comm*);
template double mean_row_entropy<float>(const float*, int64_t, int64_t);
template double mean_row_entropy<double>(const double*, int64_t, int64_t);

}  // namespace moe::sparse
