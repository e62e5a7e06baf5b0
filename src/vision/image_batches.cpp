#include "vision/image_batches.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
#include "core/rng.h"

namespace moe::vision {

namespace {

// Independent streams under one seed: the epoch permutations and the augmentations.
constexpr uint64_t kShuffleStream = 1;
constexpr uint64_t kAugmentStream = 2;

// One pixel value, normalised. Every path (training, evaluation, padding) goes through
// this, so the same pixel gives the same float everywhere.
inline float normalised(uint8_t v, float mean, float std) {
    return (float(v) / 255.0f - mean) / std;
}

void check_norm(const Normalization& norm, int64_t C) {
    MOE_CHECK(int64_t(norm.mean.size()) == C && int64_t(norm.std.size()) == C, "normalisation has ",
              norm.mean.size(), " means and ", norm.std.size(), " stds for images of ", C,
              " channels");
}

void fisher_yates(std::vector<int64_t>& v, Rng& rng) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng.below(i))]);
}

}  // namespace

Normalization compute_normalization(const ImageSet& set, const std::vector<int64_t>& indices) {
    const int64_t C = set.channels, per_image = set.height * set.width;
    MOE_CHECK(C >= 1 && set.count >= 1, "compute_normalization: ", set.count, " images of ", C,
              " channels");
    std::vector<double> sum(size_t(C), 0.0), sum_sq(size_t(C), 0.0);
    auto add = [&](int64_t i) {
        MOE_CHECK(i >= 0 && i < set.count, "compute_normalization: index ", i, " out of ",
                  set.count);
        const uint8_t* p = set.image(i);
        // Integer sums per image are exact; the doubles only add up images.
        for (int64_t c = 0; c < C; ++c) {
            uint64_t s = 0, s2 = 0;
            for (int64_t k = 0; k < per_image; ++k) {
                const uint64_t v = p[k * C + c];
                s += v;
                s2 += v * v;
            }
            sum[size_t(c)] += double(s);
            sum_sq[size_t(c)] += double(s2);
        }
    };
    int64_t n = 0;
    if (indices.empty()) {
        for (int64_t i = 0; i < set.count; ++i) add(i);
        n = set.count;
    } else {
        for (int64_t i : indices) add(i);
        n = int64_t(indices.size());
    }
    Normalization norm;
    const double values = double(n) * double(per_image);
    for (int64_t c = 0; c < C; ++c) {
        const double mean = sum[size_t(c)] / values / 255.0;
        const double var =
            std::max(0.0, sum_sq[size_t(c)] / values / (255.0 * 255.0) - mean * mean);
        const double sd = std::sqrt(var);
        norm.mean.push_back(float(mean));
        norm.std.push_back(sd > 1e-12 ? float(sd) : 1.0f);
    }
    return norm;
}

Split split_train_val(int64_t count, int64_t val_count, uint64_t seed) {
    MOE_REQUIRE(count >= 1, "split_train_val: the training set is empty");
    MOE_REQUIRE(val_count >= 0 && val_count < count, "validation set of ", val_count,
                " examples asked from a training set of ", count,
                "; it must leave at least one for training");
    std::vector<int64_t> order(static_cast<size_t>(count));
    std::iota(order.begin(), order.end(), int64_t(0));
    Rng rng(seed);
    fisher_yates(order, rng);
    Split s;
    s.val.assign(order.begin(), order.begin() + val_count);
    s.train.assign(order.begin() + val_count, order.end());
    std::sort(s.val.begin(), s.val.end());
    std::sort(s.train.begin(), s.train.end());
    return s;
}

void augment_image(const uint8_t* src, int64_t H, int64_t W, int64_t C, const Normalization& norm,
                   int64_t pad, int64_t dy, int64_t dx, bool flip, float* dst) {
    check_norm(norm, C);
    MOE_CHECK(pad >= 0 && dy >= 0 && dy <= 2 * pad && dx >= 0 && dx <= 2 * pad,
              "augment_image: offset (", dy, ", ", dx, ") outside [0, ", 2 * pad, "]");
    for (int64_t y = 0; y < H; ++y) {
        const int64_t sy = y + dy - pad;  // row in the unpadded image
        for (int64_t x = 0; x < W; ++x) {
            const int64_t sx = (flip ? W - 1 - x : x) + dx - pad;
            float* out = dst + (y * W + x) * C;
            const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
            for (int64_t c = 0; c < C; ++c) {
                const uint8_t v = inside ? src[(sy * W + sx) * C + c] : uint8_t(0);
                out[c] = normalised(v, norm.mean[size_t(c)], norm.std[size_t(c)]);
            }
        }
    }
}

void fill_eval_batch(const ImageSet& set, const Normalization& norm, const int64_t* indices,
                     int64_t n, float* x, int32_t* labels) {
    const int64_t size = set.image_size();
    for (int64_t b = 0; b < n; ++b) {
        const int64_t i = indices[b];
        MOE_CHECK(i >= 0 && i < set.count, "fill_eval_batch: index ", i, " out of ", set.count);
        augment_image(set.image(i), set.height, set.width, set.channels, norm, 0, 0, 0, false,
                      x + b * size);
        if (labels) labels[b] = set.labels[size_t(i)];
    }
}

std::pair<int64_t, int64_t> rank_share(int64_t B, int64_t rank, int64_t ranks) {
    MOE_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "rank_share: rank ", rank, " of ", ranks);
    const int64_t first = rank * B / ranks, last = (rank + 1) * B / ranks;
    return {first, last - first};
}

TrainBatches::TrainBatches(const ImageSet& set, std::vector<int64_t> indices, int64_t batch,
                           uint64_t seed, Normalization norm, Augment augment)
    : set_(set),
      indices_(std::move(indices)),
      batch_(batch),
      seed_(seed),
      norm_(std::move(norm)),
      augment_(augment) {
    MOE_REQUIRE(!indices_.empty(), "no training examples");
    MOE_REQUIRE(batch_ >= 1, "batch size ", batch_, ", expected at least 1");
    MOE_REQUIRE(augment_.pad >= 0 && augment_.pad <= std::min(set.height, set.width),
                "augmentation pad ", augment_.pad, " for ", set.height, " x ", set.width,
                " images: expected 0 to ", std::min(set.height, set.width));
    check_norm(norm_, set.channels);
    for (int64_t i : indices_)
        MOE_CHECK(i >= 0 && i < set.count, "TrainBatches: index ", i, " out of ", set.count);
    MOE_CHECK(int64_t(set.labels.size()) == set.count, "TrainBatches: ", set.labels.size(),
              " labels for ", set.count, " images");
}

const std::vector<int64_t>& TrainBatches::permutation(int64_t epoch) const {
    const size_t slot = size_t(epoch % 2);
    if (perm_epoch_[slot] != epoch) {
        std::vector<int64_t>& p = perm_[slot];
        p.resize(indices_.size());
        std::iota(p.begin(), p.end(), int64_t(0));
        Rng rng = Rng(seed_).fork(kShuffleStream).fork(uint64_t(epoch));
        fisher_yates(p, rng);
        perm_epoch_[slot] = epoch;
    }
    return perm_[slot];
}

void TrainBatches::examples(int64_t step, int64_t first, int64_t n, int64_t* out) const {
    MOE_CHECK(step >= 0 && first >= 0 && n >= 0 && first + n <= batch_, "TrainBatches: examples [",
              first, ", ", first + n, ") of step ", step, " with batch ", batch_);
    const int64_t N = size();
    for (int64_t j = 0; j < n; ++j) {
        const int64_t pos = step * batch_ + first + j;
        out[j] = indices_[size_t(permutation(pos / N)[size_t(pos % N)])];
    }
}

void TrainBatches::fill(int64_t step, int64_t first, int64_t n, float* x, int32_t* labels) const {
    MOE_CHECK(step >= 0 && first >= 0 && n >= 0 && first + n <= batch_, "TrainBatches: examples [",
              first, ", ", first + n, ") of step ", step, " with batch ", batch_);
    const int64_t N = size(), size = set_.image_size(), pad = augment_.pad;
    const Rng step_rng = Rng(seed_).fork(kAugmentStream).fork(uint64_t(step));
    for (int64_t k = 0; k < n; ++k) {
        const int64_t j = first + k;  // position in the global batch: names the stream
        const int64_t pos = step * batch_ + j;
        const int64_t i = indices_[size_t(permutation(pos / N)[size_t(pos % N)])];
        Rng rng = step_rng.fork(uint64_t(j));
        // Always drawn in this order, whatever is enabled, so turning one augmentation on
        // does not change the other's draws.
        const int64_t dy = int64_t(rng.below(uint64_t(2 * pad + 1)));
        const int64_t dx = int64_t(rng.below(uint64_t(2 * pad + 1)));
        const bool flip = (rng.next_u64() >> 63) != 0;
        augment_image(set_.image(i), set_.height, set_.width, set_.channels, norm_, pad, dy, dx,
                      augment_.flip && flip, x + k * size);
        if (labels) labels[k] = set_.labels[size_t(i)];
    }
}

int64_t TrainBatches::epoch(int64_t step) const {
    return step * batch_ / size();
}

double TrainBatches::epochs_done(int64_t step) const {
    return double((step + 1) * batch_) / double(size());
}

}  // namespace moe::vision
