// AdamW, gradient clipping and the learning-rate schedule. The optimizer's agreement with
// torch.optim.AdamW is checked end to end in test_model_transformer_lm.cpp; these tests
// pin the individual rules.
#include <cmath>

#include "test_support.h"
#include "train/adamw.h"

namespace moe {
namespace {

struct Params {
    Arena p, g;
    Params() {
        p.add("w", {2, 3});
        p.add("gain", {3});
        p.allocate();
        g = p.clone_layout();
        for (int i = 0; i < 6; ++i) p.get("w").ptr<float>()[i] = 1.0f + float(i);
        for (int i = 0; i < 3; ++i) p.get("gain").ptr<float>()[i] = 1.0f;
    }
};

TEST(AdamW, FirstStepMovesEachValueByLrTimesSignPlusDecay) {
    Params s;
    float* g = s.g.get("w").ptr<float>();
    for (int i = 0; i < 6; ++i) g[i] = (i % 2 ? -1.0f : 1.0f) * float(i + 1);
    s.g.get("gain").ptr<float>()[0] = 0.5f;
    train::AdamW opt(s.p, {0.9f, 0.95f, 1e-8f, 0.1f});
    opt.step(s.p, s.g, 0.01f);
    // After one step m/(1-b1) = g and sqrt(v/(1-b2)) = |g|: the Adam update is sign(g).
    const float* w = s.p.get("w").ptr<float>();
    for (int i = 0; i < 6; ++i) {
        const float p0 = 1.0f + float(i), sign = i % 2 ? -1.0f : 1.0f;
        EXPECT_NEAR(w[i], p0 - 0.01f * (sign + 0.1f * p0), 1e-6) << i;
    }
    // Rank-1 tensors get no weight decay: a zero gradient leaves them unchanged.
    EXPECT_NEAR(s.p.get("gain").ptr<float>()[0], 1.0f - 0.01f, 1e-6);
    EXPECT_EQ(s.p.get("gain").ptr<float>()[1], 1.0f);
    EXPECT_EQ(opt.steps(), 1);
}

TEST(AdamW, FrozenElementsDoNotChange) {
    Params s;
    for (int i = 0; i < 6; ++i) s.g.get("w").ptr<float>()[i] = 1.0f;
    std::vector<uint8_t> frozen(s.p.f32_count(), 0);
    frozen[0] = frozen[1] = 1;
    train::AdamW opt(s.p, {});
    for (int k = 0; k < 3; ++k) opt.step(s.p, s.g, 0.1f, frozen.data());
    EXPECT_EQ(s.p.get("w").ptr<float>()[0], 1.0f);
    EXPECT_EQ(s.p.get("w").ptr<float>()[1], 2.0f);
    EXPECT_LT(s.p.get("w").ptr<float>()[2], 3.0f);
}

TEST(ClipGradNorm, ScalesToMaxNormAndReportsTheNormBefore) {
    Params s;
    float* g = s.g.get("w").ptr<float>();
    g[0] = 3.0f;
    s.g.get("gain").ptr<float>()[2] = 4.0f;  // global norm 5 across tensors
    EXPECT_NEAR(train::clip_grad_norm(s.g, 1.0), 5.0, 1e-6);
    EXPECT_NEAR(g[0], 0.6f, 1e-6);
    EXPECT_NEAR(s.g.get("gain").ptr<float>()[2], 0.8f, 1e-6);
    EXPECT_NEAR(train::clip_grad_norm(s.g, 10.0), 1.0, 1e-5);  // below the limit: unchanged
    EXPECT_NEAR(g[0], 0.6f, 1e-6);
    EXPECT_NEAR(train::clip_grad_norm(s.g, 0.0), 1.0, 1e-5);  // 0 disables
}

TEST(LrSchedule, WarmupThenCosineToMin) {
    const train::LrSchedule s{1.0f, 0.1f, 10, 110};
    EXPECT_FLOAT_EQ(s.at(0), 0.1f);
    EXPECT_FLOAT_EQ(s.at(9), 1.0f);
    EXPECT_FLOAT_EQ(s.at(10), 1.0f);
    EXPECT_NEAR(s.at(60), 0.55f, 1e-6);  // halfway through the decay
    EXPECT_FLOAT_EQ(s.at(110), 0.1f);
    EXPECT_FLOAT_EQ(s.at(500), 0.1f);
    for (int t = 11; t < 110; ++t) EXPECT_LE(s.at(t), s.at(t - 1));
}

}  // namespace
}  // namespace moe
