// RowBatches: which rows of a training table make up training batch s.
//
// The rows are visited epoch by epoch, each epoch in its own permutation drawn from
// (seed, epoch) alone; batch s takes positions [s * B, (s + 1) * B) of the endless sequence
// of epochs (a batch may straddle two epochs). So the rows of batch s depend only on
// (seed, s): a resumed run draws exactly the batches an uninterrupted one would.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::tabular {

class RowBatches {
  public:
    // n_rows >= 1 training rows, batch >= 1.
    RowBatches(int64_t n_rows, int64_t batch, uint64_t seed);

    // rows: [count] the table rows at positions [s * B + first, s * B + first + count) of
    // batch s (first + count <= B; data parallelism gives each rank its part).
    void rows_of(int64_t step, int64_t first, int64_t count, int64_t* rows) const;
    double epochs_done(int64_t step) const { return double((step + 1) * batch_) / double(n_); }

  private:
    const std::vector<int64_t>& permutation(int64_t epoch) const;

    int64_t n_, batch_;
    uint64_t seed_;
    mutable int64_t cached_epoch_ = -1;  // the last permutation drawn (batches go in order)
    mutable std::vector<int64_t> perm_;
};

}  // namespace moe::tabular
