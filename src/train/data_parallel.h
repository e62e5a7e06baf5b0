// DataParallelGrads: what a data-parallel step does to the gradients between backward and
// the optimizer, over a group of ranks that each ran backward on their share of the batch.
//
// The model's losses are shares (ForwardOptions::loss_share and the routers' batch group),
// so the gradient of the whole batch is the SUM of the ranks' gradients:
//   - replicated tensors (everything but experts): summed over the ranks with one
//     all-reduce per run of consecutive replicated entries in the arena (a handful of calls
//     per step, not one per tensor);
//   - expert slices (expert parallelism): already complete on their owner, since every
//     rank's tokens went through the owner's backward; left alone.
// The global gradient norm for clipping counts each replicated value once and every
// rank's expert values once. With one process both are no-ops beyond plain clipping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "dist/comm.h"

namespace moe::train {

class DataParallelGrads {
  public:
    // sharded: names of the entries of `grads` that hold this rank's expert slices.
    DataParallelGrads(Arena& grads, const std::vector<std::string>& sharded, dist::Comm& comm);

    // Sums the replicated gradients over the ranks (collective).
    void sum_replicated();
    // Scales every gradient so that the global L2 norm is at most max_norm (max_norm <= 0:
    // no clipping); returns the norm before clipping. Collective. Same value on every rank.
    double clip_global_norm(double max_norm);

  private:
    struct Range {
        float* data;
        int64_t n;
    };
    Arena& grads_;
    dist::Comm& comm_;
    std::vector<Range> replicated_;  // coalesced runs of replicated entries
    std::vector<Range> sharded_;     // expert slices
};

}  // namespace moe::train
