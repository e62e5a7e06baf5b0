// Float batches from an ImageSet: normalisation, a validation split, augmentation, and the
// batch of each training step.
//
// Batches are [n, H, W, C] floats (channels last, the layout of ImageSet's pixels), each
// value (pixel / 255 - mean[c]) / std[c]. As in lm/window_sampler.h, the training batch of
// step s depends only on (seed, s): which examples it holds and how each is augmented.
// A resumed run therefore sees exactly the batches an uninterrupted one would have, and a
// data-parallel rank that fills examples [first, first + n) of the global batch gets
// exactly the numbers one process would have put there.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "vision/image_set.h"

namespace moe::vision {

// Per-channel mean and standard deviation of pixel / 255 over the training images,
// computed once and saved with a model (as plain numbers), so inference normalises as
// training did.
struct Normalization {
    std::vector<float> mean;  // [channels]
    std::vector<float> std;   // [channels], each > 0
};

// Over the images `indices` of `set` (every image when indices is empty), in double
// precision. Population std; a channel with no variation (std 0) gets std 1, so it is
// centred but not divided by zero.
Normalization compute_normalization(const ImageSet& set, const std::vector<int64_t>& indices = {});

// A deterministic validation split of a training set of `count` examples: val_count of
// them chosen by a permutation seeded with `seed`, the rest for training. Both lists are
// sorted and together hold 0 .. count - 1 once each. The test set is never used for this.
struct Split {
    std::vector<int64_t> train, val;
};
Split split_train_val(int64_t count, int64_t val_count, uint64_t seed);

// Training augmentation suited to Fashion-MNIST's centred, upright items.
struct Augment {
    // Random crop with padding: the image is padded by `pad` pixels on every side with
    // background (a 0 pixel, which normalises to -mean/std), then an H x W window is taken
    // at an offset drawn uniformly in [0, 2 pad] on each axis. 0 = no crop.
    int64_t pad = 0;
    // Mirror left-right with probability 1/2. (Never up-down: shoes do not stand on
    // their heads in the test set.)
    bool flip = false;
};

// One image [H, W, C] normalised into dst [H, W, C], shifted and mirrored: dst(y, x) =
// padded(y + dy, x' + dx) with x' = W - 1 - x when flip, else x, where padded is the image
// with `pad` background pixels on every side. dy, dx in [0, 2 pad]. pad = 0, dy = dx = 0,
// flip = false is plain normalisation.
void augment_image(const uint8_t* src, int64_t H, int64_t W, int64_t C, const Normalization& norm,
                   int64_t pad, int64_t dy, int64_t dx, bool flip, float* dst);

// Evaluation batch, no augmentation: x [n, H, W, C] holds images indices[0 .. n), labels
// [n] their labels (labels may be null).
void fill_eval_batch(const ImageSet& set, const Normalization& norm,
                     const int64_t* indices /* [n] */, int64_t n, float* x, int32_t* labels);

// Rank `rank` of `ranks` holds examples [first, first + n) of a global batch of B:
// [rank * B / ranks, (rank + 1) * B / ranks).
std::pair<int64_t, int64_t> rank_share(int64_t B, int64_t rank, int64_t ranks);

// The training batches: examples are visited in epochs, each a fresh permutation of the
// training indices (epoch e's drawn from a stream of (seed, e) alone); the batch of step s
// is positions [s B, (s + 1) B) of the concatenated epochs, so when B does not divide the
// set a batch runs over into the next epoch, and every example is seen exactly once per
// epoch. Example j of batch s is augmented from a stream of (seed, s, j) alone.
//
// fill() keeps the permutations of the last two epochs it needed (so it allocates only at
// an epoch change): calls on one object must not run concurrently.
class TrainBatches {
  public:
    // set must outlive this object; indices (into set) are the training examples, e.g.
    // split_train_val(...).train.
    TrainBatches(const ImageSet& set, std::vector<int64_t> indices, int64_t batch, uint64_t seed,
                 Normalization norm, Augment augment = {});

    // Examples [first, first + n) of the batch of `step` (0 <= first, first + n <= batch()):
    // x [n, H, W, C], labels [n] (labels may be null).
    void fill(int64_t step, int64_t first, int64_t n, float* x, int32_t* labels) const;
    // The indices into the set of those examples: out [n].
    void examples(int64_t step, int64_t first, int64_t n, int64_t* out) const;

    // The epoch the first example of batch `step` belongs to (0-based), and the number of
    // epochs completed after that step, fractional (for the progress line).
    int64_t epoch(int64_t step) const;
    double epochs_done(int64_t step) const;

    int64_t batch() const { return batch_; }
    int64_t size() const { return int64_t(indices_.size()); }  // examples per epoch
    const Normalization& normalization() const { return norm_; }

  private:
    const std::vector<int64_t>& permutation(int64_t epoch) const;

    const ImageSet& set_;
    std::vector<int64_t> indices_;
    int64_t batch_;
    uint64_t seed_;
    Normalization norm_;
    Augment augment_;
    // Epochs e and e + 1 live in slots e % 2 and (e + 1) % 2: a batch spanning an epoch
    // boundary needs both, and neither evicts the other.
    mutable std::vector<int64_t> perm_[2];
    mutable int64_t perm_epoch_[2] = {-1, -1};
};

}  // namespace moe::vision
