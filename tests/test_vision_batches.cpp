// The vision batches: the validation split, normalisation statistics, augmentation (crop and
// flip), and the training batches' dependence on (seed, step) alone, so that a resumed run
// and every rank see the same pixels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "test_support.h"
#include "vision/image_batches.h"

namespace moe::vision {
namespace {

using Bytes = std::vector<uint8_t>;

TEST(VisionSplit, DeterministicDisjointCovering) {
    const Split a = split_train_val(1000, 150, 42), b = split_train_val(1000, 150, 42);
    EXPECT_EQ(a.train, b.train);
    EXPECT_EQ(a.val, b.val);
    EXPECT_EQ(a.train.size(), 850u);
    EXPECT_EQ(a.val.size(), 150u);
    EXPECT_TRUE(std::is_sorted(a.train.begin(), a.train.end()));
    EXPECT_TRUE(std::is_sorted(a.val.begin(), a.val.end()));
    std::vector<int64_t> all = a.train;
    all.insert(all.end(), a.val.begin(), a.val.end());
    std::sort(all.begin(), all.end());
    for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(all[size_t(i)], i);  // disjoint and covering
    EXPECT_NE(split_train_val(1000, 150, 43).val, a.val);
    // Not simply the first or last examples.
    EXPECT_LT(a.val.front(), 100);
    EXPECT_GT(a.val.back(), 900);
    EXPECT_TRUE(split_train_val(5, 0, 1).val.empty());
    EXPECT_TRUE(test::throws_error_with([] { split_train_val(5, 5, 1); }, {"5", "at least one"}));
    EXPECT_TRUE(test::throws_error_with([] { split_train_val(5, -1, 1); }, {"-1"}));
}

TEST(VisionNormalization, KnownStatistics) {
    ImageSet s;
    s.count = 2;
    s.height = 1;
    s.width = 2;
    s.channels = 1;
    s.pixels = {0, 255, 255, 255};  // values 0, 1, 1, 1
    s.labels = {0, 0};
    Normalization n = compute_normalization(s);
    ASSERT_EQ(n.mean.size(), 1u);
    EXPECT_NEAR(n.mean[0], 0.75, 1e-7);
    EXPECT_NEAR(n.std[0], std::sqrt(0.1875), 1e-7);
    // Only image 1: constant, so std falls back to 1.
    n = compute_normalization(s, {1});
    EXPECT_NEAR(n.mean[0], 1.0, 1e-7);
    EXPECT_EQ(n.std[0], 1.0f);

    // Three channels with different statistics.
    ImageSet c;
    c.count = 1;
    c.height = 1;
    c.width = 2;
    c.channels = 3;
    c.pixels = {0, 51, 255, 255, 51, 255};
    c.labels = {0};
    n = compute_normalization(c);
    ASSERT_EQ(n.mean.size(), 3u);
    EXPECT_NEAR(n.mean[0], 0.5, 1e-7);
    EXPECT_NEAR(n.std[0], 0.5, 1e-7);
    EXPECT_NEAR(n.mean[1], 0.2, 1e-7);
    EXPECT_EQ(n.std[1], 1.0f);
    EXPECT_NEAR(n.mean[2], 1.0, 1e-7);

    // Fill: (pixel / 255 - mean) / std.
    std::vector<float> x(6);
    int32_t label = -1;
    const int64_t idx = 0;
    fill_eval_batch(c, n, &idx, 1, x.data(), &label);
    EXPECT_EQ(label, 0);
    EXPECT_NEAR(x[0], -1.0, 1e-6);
    EXPECT_NEAR(x[3], 1.0, 1e-6);
    EXPECT_NEAR(x[1], 0.0, 1e-6);
}

// A 3 x 3 single-channel image 1..9, row-major.
TEST(VisionAugment, CropAndFlipOnAHandMadeImage) {
    const Bytes img = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    // mean 0, std 1/255: outputs are the pixel values themselves; background 0.
    const Normalization unit{{0.0f}, {1.0f / 255.0f}};
    std::vector<float> out(9);
    auto values = [&] {
        std::vector<int> v;
        for (float f : out) v.push_back(int(std::lround(f)));
        return v;
    };
    augment_image(img.data(), 3, 3, 1, unit, 0, 0, 0, false, out.data());
    EXPECT_EQ(values(), (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
    augment_image(img.data(), 3, 3, 1, unit, 0, 0, 0, true, out.data());
    EXPECT_EQ(values(), (std::vector<int>{3, 2, 1, 6, 5, 4, 9, 8, 7}));
    // pad 1, offset (0, 0): the window's top-left is the padding's corner, so the image
    // moves one pixel down and right.
    augment_image(img.data(), 3, 3, 1, unit, 1, 0, 0, false, out.data());
    EXPECT_EQ(values(), (std::vector<int>{0, 0, 0, 0, 1, 2, 0, 4, 5}));
    // Offset (1, 1) is the centre: unchanged. (2, 0): up one, right one.
    augment_image(img.data(), 3, 3, 1, unit, 1, 1, 1, false, out.data());
    EXPECT_EQ(values(), (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
    augment_image(img.data(), 3, 3, 1, unit, 1, 2, 0, false, out.data());
    EXPECT_EQ(values(), (std::vector<int>{0, 4, 5, 0, 7, 8, 0, 0, 0}));
    // Crop then mirror.
    augment_image(img.data(), 3, 3, 1, unit, 1, 0, 0, true, out.data());
    EXPECT_EQ(values(), (std::vector<int>{0, 0, 0, 2, 1, 0, 5, 4, 0}));
    // The padding is the normalised value of a 0 pixel, not 0.
    const Normalization n{{0.5f}, {0.25f}};
    augment_image(img.data(), 3, 3, 1, n, 1, 0, 0, false, out.data());
    EXPECT_FLOAT_EQ(out[0], -2.0f);
    EXPECT_FLOAT_EQ(out[4], (1.0f / 255.0f - 0.5f) / 0.25f);
}

// N images of 5 x 5, image i filled with the value i + 1 (so an image is known by any of
// its pixels), except a marker in its top-left corner that shows crops and flips.
ImageSet numbered_set(int64_t N) {
    ImageSet s;
    s.count = N;
    s.height = 5;
    s.width = 5;
    s.channels = 1;
    s.pixels.resize(size_t(N * 25));
    for (int64_t i = 0; i < N; ++i) {
        std::fill_n(s.pixels.begin() + i * 25, 25, uint8_t(i + 1));
        s.pixels[size_t(i * 25)] = 250;
        s.labels.push_back(int32_t(i % 4));
    }
    s.class_names = {"a", "b", "c", "d"};
    return s;
}

TEST(VisionTrainBatches, DependOnlyOnSeedAndStep) {
    const ImageSet s = numbered_set(23);
    const Split split = split_train_val(23, 3, 5);
    const Normalization norm = compute_normalization(s, split.train);
    const Augment aug{2, true};
    const int64_t B = 7, size = 25;
    TrainBatches a(s, split.train, B, 99, norm, aug), b(s, split.train, B, 99, norm, aug);
    std::vector<float> x1(static_cast<size_t>(B * size)), x2(x1.size());
    std::vector<int32_t> l1(static_cast<size_t>(B)), l2(static_cast<size_t>(B));
    // b walks steps 0..11 first; a jumps straight to step 11 (a resume).
    for (int64_t st = 0; st < 11; ++st) b.fill(st, 0, B, x2.data(), l2.data());
    a.fill(11, 0, B, x1.data(), l1.data());
    b.fill(11, 0, B, x2.data(), l2.data());
    EXPECT_EQ(std::memcmp(x1.data(), x2.data(), x1.size() * sizeof(float)), 0);
    EXPECT_EQ(l1, l2);
    // Another step differs; another seed differs.
    a.fill(12, 0, B, x2.data(), l2.data());
    EXPECT_NE(std::memcmp(x1.data(), x2.data(), x1.size() * sizeof(float)), 0);
    TrainBatches c(s, split.train, B, 100, norm, aug);
    c.fill(11, 0, B, x2.data(), l2.data());
    EXPECT_NE(std::memcmp(x1.data(), x2.data(), x1.size() * sizeof(float)), 0);

    // A rank's share is the matching slice of the whole batch, for 1 to 4 ranks (B = 7
    // splits unevenly: 3 + 4, 2 + 2 + 3, 1 + 2 + 2 + 2).
    for (int64_t st : {0, 2, 3, 40}) {
        std::vector<float> whole(static_cast<size_t>(B * size));
        std::vector<int32_t> whole_l(static_cast<size_t>(B));
        a.fill(st, 0, B, whole.data(), whole_l.data());
        for (int64_t R = 1; R <= 4; ++R) {
            int64_t covered = 0;
            for (int64_t r = 0; r < R; ++r) {
                const auto [first, n] = rank_share(B, r, R);
                EXPECT_EQ(first, covered);
                covered += n;
                TrainBatches fresh(s, split.train, B, 99, norm, aug);  // another process
                std::vector<float> part(static_cast<size_t>(n * size));
                std::vector<int32_t> part_l(static_cast<size_t>(n));
                fresh.fill(st, first, n, part.data(), part_l.data());
                EXPECT_EQ(std::memcmp(part.data(), whole.data() + first * size,
                                      part.size() * sizeof(float)),
                          0)
                    << "step " << st << " rank " << r << " of " << R;
                EXPECT_TRUE(std::equal(part_l.begin(), part_l.end(), whole_l.begin() + first));
            }
            EXPECT_EQ(covered, B);
        }
    }
}

TEST(VisionTrainBatches, EveryExampleOncePerEpoch) {
    const ImageSet s = numbered_set(23);
    const Split split = split_train_val(23, 3, 5);  // 20 training examples
    const Normalization norm = compute_normalization(s, split.train);
    const int64_t B = 6, N = 20;
    TrainBatches t(s, split.train, B, 3, norm);
    EXPECT_EQ(t.size(), N);
    // 10 steps = 60 positions = 3 epochs; batches 3 and 6 straddle epoch boundaries.
    std::vector<int64_t> stream;
    std::vector<float> x(static_cast<size_t>(B * 25));
    std::vector<int32_t> labels(static_cast<size_t>(B));
    for (int64_t st = 0; st < 10; ++st) {
        std::vector<int64_t> ex(static_cast<size_t>(B));
        t.examples(st, 0, B, ex.data());
        t.fill(st, 0, B, x.data(), labels.data());
        for (int64_t j = 0; j < B; ++j) {
            EXPECT_EQ(labels[size_t(j)], s.labels[size_t(ex[size_t(j)])]);
            // No augmentation: the image is exactly the example's.
            EXPECT_FLOAT_EQ(x[size_t(j * 25 + 12)],
                            (float(ex[size_t(j)] + 1) / 255.0f - norm.mean[0]) / norm.std[0]);
        }
        stream.insert(stream.end(), ex.begin(), ex.end());
    }
    for (int64_t e = 0; e < 3; ++e) {
        std::vector<int64_t> epoch(stream.begin() + e * N, stream.begin() + (e + 1) * N);
        std::sort(epoch.begin(), epoch.end());
        EXPECT_EQ(epoch, split.train) << "epoch " << e;
    }
    // Epochs are reshuffled, not repeated.
    EXPECT_FALSE(std::equal(stream.begin(), stream.begin() + N, stream.begin() + N));
    EXPECT_EQ(t.epoch(0), 0);
    EXPECT_EQ(t.epoch(3), 0);  // positions 18..23: starts in epoch 0
    EXPECT_EQ(t.epoch(4), 1);
    EXPECT_DOUBLE_EQ(t.epochs_done(9), 3.0);
}

TEST(VisionTrainBatches, AugmentationsAreCropsAndFlipsOfTheExample) {
    const ImageSet s = numbered_set(10);
    const std::vector<int64_t> all = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const Normalization norm = compute_normalization(s);
    const int64_t pad = 2, B = 10;
    TrainBatches t(s, all, B, 17, norm, Augment{pad, true});
    std::set<std::tuple<int64_t, int64_t, bool>> seen;
    std::vector<float> x(static_cast<size_t>(B * 25)), cand(25);
    for (int64_t st = 0; st < 20; ++st) {
        std::vector<int64_t> ex(static_cast<size_t>(B));
        t.examples(st, 0, B, ex.data());
        t.fill(st, 0, B, x.data(), nullptr);
        for (int64_t j = 0; j < B; ++j) {
            // Exactly one (dy, dx, flip) of the 50 possible reproduces it (the corner marker
            // makes them distinct, except when the crop pushes the marker out of view).
            bool found = false;
            for (int64_t dy = 0; dy <= 2 * pad && !found; ++dy)
                for (int64_t dx = 0; dx <= 2 * pad && !found; ++dx)
                    for (bool flip : {false, true}) {
                        augment_image(s.image(ex[size_t(j)]), 5, 5, 1, norm, pad, dy, dx, flip,
                                      cand.data());
                        if (std::memcmp(cand.data(), x.data() + j * 25, 25 * sizeof(float)) == 0) {
                            seen.insert({dy, dx, flip});
                            found = true;
                            break;
                        }
                    }
            EXPECT_TRUE(found) << "step " << st << " example " << j;
        }
    }
    // 200 draws cover many of the 50 choices, both flips included.
    EXPECT_GT(seen.size(), 30u);
    bool flipped = false, unflipped = false;
    for (const auto& [dy, dx, f] : seen) (f ? flipped : unflipped) = true;
    EXPECT_TRUE(flipped && unflipped);

    // Without augmentation the batch equals the evaluation batch of the same examples.
    TrainBatches plain(s, all, B, 17, norm);
    std::vector<int64_t> ex(static_cast<size_t>(B));
    plain.examples(5, 0, B, ex.data());
    std::vector<float> e(x.size());
    std::vector<int32_t> l1(static_cast<size_t>(B)), l2(static_cast<size_t>(B));
    plain.fill(5, 0, B, x.data(), l1.data());
    fill_eval_batch(s, norm, ex.data(), B, e.data(), l2.data());
    EXPECT_EQ(std::memcmp(x.data(), e.data(), x.size() * sizeof(float)), 0);
    EXPECT_EQ(l1, l2);
}

TEST(VisionTrainBatches, BadArguments) {
    const ImageSet s = numbered_set(4);
    const Normalization norm = compute_normalization(s);
    EXPECT_TRUE(test::throws_error_with([&] { TrainBatches(s, {}, 2, 1, norm); },
                                        {"no training examples"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            TrainBatches(s, {0, 1}, 0, 1, norm);
        },
        {"batch size 0"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            TrainBatches(s, {0, 1}, 2, 1, norm, Augment{6});
        },
        {"pad 6", "5 x 5"}));
    EXPECT_TRUE(test::throws_error_with([&] { TrainBatches(s, {0, 7}, 2, 1, norm); }, {"index 7"}));
}

}  // namespace
}  // namespace moe::vision
