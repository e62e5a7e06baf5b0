#include "tabular/row_batches.h"

#include <numeric>

#include "core/check.h"
#include "core/rng.h"

namespace moe::tabular {

RowBatches::RowBatches(int64_t n_rows, int64_t batch, uint64_t seed)
    : n_(n_rows), batch_(batch), seed_(seed) {
    MOE_REQUIRE(n_rows >= 1, "RowBatches: no training rows");
    MOE_REQUIRE(batch >= 1, "RowBatches: batch must be >= 1, got ", batch);
}

const std::vector<int64_t>& RowBatches::permutation(int64_t epoch) const {
    if (epoch == cached_epoch_) return perm_;
    perm_.resize(size_t(n_));
    std::iota(perm_.begin(), perm_.end(), int64_t(0));
    // Fisher-Yates from a generator of (seed, epoch) alone.
    Rng rng = Rng(seed_ ^ 0x7ab1e5eedull).fork(uint64_t(epoch));
    for (int64_t i = n_ - 1; i > 0; --i)
        std::swap(perm_[size_t(i)], perm_[rng.below(uint64_t(i + 1))]);
    cached_epoch_ = epoch;
    return perm_;
}

void RowBatches::rows_of(int64_t step, int64_t first, int64_t count, int64_t* rows) const {
    MOE_CHECK(step >= 0 && first >= 0 && count >= 0 && first + count <= batch_,
              "RowBatches::rows_of: rows [", first, ", ", first + count, ") of a batch of ",
              batch_);
    for (int64_t i = 0; i < count; ++i) {
        const int64_t pos = step * batch_ + first + i;
        rows[i] = permutation(pos / n_)[size_t(pos % n_)];
    }
}

}  // namespace moe::tabular
