// MoeStats: what one MoE layer did in its last forward, for the trainer's logs and the
// routing report: tokens per expert, load, drops, router entropy and every router loss.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "moe/router.h"
#include "moe/routing_plan.h"

namespace moe::sparse {

struct MoeStats {
    int64_t tokens = 0;                      // T of the last forward
    int64_t rows = 0;                        // (token, expert) pairs computed
    std::vector<int64_t> tokens_per_expert;  // [E] rows of each expert
    double max_load = 0;                     // max_i tokens_per_expert[i]
    double mean_load = 0;                    // mean_i tokens_per_expert[i]
    double load_imbalance = 0;               // max_load / mean_load (1 = perfectly even)
    double dropped_fraction = 0;             // dropped / (rows + dropped) choices
    double router_entropy = -1;              // mean_t -sum_e p log p (nats); -1 if no probs
    RouterLosses losses;                     // the router's losses (unweighted + total)
    std::vector<double> sums;                // scratch for summing over a batch group
};

// Fills `s` from a built plan, the router's probabilities probs [T, E] (null: entropy
// -1) and its losses. With a group (expert/data parallelism), counts, tokens and entropy
// are those of every rank's tokens together. Allocates only on the first call.
template <class R>
void update_stats(MoeStats& s, const RoutingPlan<R>& plan, const R* probs,
                  const RouterLosses& losses, comm::Comm* group = nullptr);

// Mean over tokens of the entropy -sum_e p log p of each row of probs [T, E] (terms with
// p <= 0 count 0), in nats. Summed in fixed chunks, so the same for any thread count.
template <class R>
double mean_row_entropy(const R* probs, int64_t T, int64_t E);

}  // namespace moe::sparse
