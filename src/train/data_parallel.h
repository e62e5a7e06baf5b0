// DataParallelGrads: what a data-parallel step does to the gradients between backward and
// the optimizer, over a group of ranks that each ran backward on their share of the batch.
//
// The model's losses are shares (ForwardOptions::loss_share and the routers' batch group),
// so the gradient of the whole batch is the SUM of the ranks' gradients:
//   - replicated tensors (everything but experts): summed over the ranks, with one
//     all-reduce per run of consecutive replicated entries in the arena;
//   - expert slices (expert parallelism): already complete on their owner, since every
//     rank's tokens went through the owner's backward; left alone.
// The global gradient norm for clipping counts each replicated value once and every
// expert's values once.
//
// Exact mode (train.reduction_groups > 1, see kernels/grouped_reduce.h): each rank's
// replicated gradients are the subtree sums of a canonical tree; the ranks' subtrees are
// gathered on rank 0, combined by the top of the same tree and broadcast, and the norm is
// summed per tensor and per expert in a fixed order, so that R ranks and one process get
// the same bits. It needs a power-of-two number of ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "comm/comm.h"
#include "train/checkpoint.h"

namespace moe::train {

class DataParallelGrads {
  public:
    // experts: the entries of `grads` that hold rows [first_row, first_row + rows) of an
    // expert tensor with global_rows rows (all of them in one process).
    DataParallelGrads(Arena& grads, const std::vector<RowShard>& experts, comm::Comm& comm,
                      bool exact);

    // Sums the replicated gradients over the ranks (collective).
    void sum_replicated();
    // Scales every gradient so that the global L2 norm is at most max_norm (max_norm <= 0:
    // no clipping); returns the norm before clipping. Collective. Same value on every rank.
    double clip_global_norm(double max_norm);

  private:
    struct Entry {
        float* data;
        int64_t n;
        int64_t rows;            // first dimension
        const RowShard* expert;  // null: replicated
    };
    struct Range {
        float* data;
        int64_t n;
    };
    double exact_norm_squared();

    comm::Comm& comm_;
    bool exact_;
    std::vector<RowShard> experts_;
    std::vector<Entry> entries_;     // arena order
    std::vector<Range> replicated_;  // coalesced runs of replicated entries
    int64_t replicated_count_ = 0;
    std::vector<float> send_;        // exact mode: [replicated values] this rank's
    std::vector<float> staging_;     // exact mode: [ranks, replicated values] (rank 0)
    std::vector<double> expert_sq_;  // exact mode: per-expert sums of squares
};

}  // namespace moe::train
