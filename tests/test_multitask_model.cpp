// MultitaskModel (shared bottom, OMoE, MMoE, PLE): loss, predictions and every parameter
// gradient against PyTorch (gen_multitask_model.py) on the double path (MultitaskNet<double>)
// and the float model; the whole model's gradient by finite differences on a sample of
// every kind of parameter; a short training run on two learnable tasks; gates for
// inspection; and the errors (bad category index, bad configuration).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "moe_reference.h"
#include "tabular/multitask_model.h"
#include "tabular/multitask_net.h"
#include "test_support.h"
#include "train/adamw.h"

namespace moe {
namespace {

using tabular::MultitaskInputs;
using tabular::MultitaskModel;
using tabular::MultitaskModelConfig;
using tabular::MultitaskNet;
using tabular::TargetKind;

// The fixture's data: two categorical columns, two numbers, a binary and a regression task.
MultitaskInputs fixture_inputs() {
    MultitaskInputs in;
    in.table_rows = {5, 3};
    in.embed_dims = {3, 2};
    in.n_numeric = 2;
    in.task_kinds = {TargetKind::binary, TargetKind::regression};
    in.task_weights = {1.0, 0.5};
    in.task_names = {"click", "value"};
    return in;
}

const char* const kCases[] = {"shared_bottom", "omoe", "mmoe", "mmoe_top2", "ple1", "ple2", "ple3"};

// The model of a fixture's "config" (see gen_multitask_model.py).
MultitaskModelConfig config_of(const std::vector<int64_t>& c) {
    static const char* const archs[] = {"shared_bottom", "omoe", "mmoe", "ple"};
    MultitaskModelConfig m;
    m.arch = archs[c[0]];
    m.expert = c[1] ? "gelu" : "relu";
    m.d_model = c[2];
    m.expert_hidden = c[3];
    m.n_experts = std::max<int64_t>(c[4], 1);
    m.gate_top_k = c[5];
    m.ple_levels = std::max<int64_t>(c[6], 1);
    m.ple_shared_experts = c[7];
    m.ple_task_experts = c[8];
    m.tower_hidden = c[9];
    return m;
}

// A fixture's batch, in the model's input types.
struct Batch {
    int64_t B = 0;
    std::vector<int32_t> cats;
    std::vector<float> nums, targets;
};
Batch batch_of(const test::Fixture& fx) {
    Batch b;
    for (int64_t v : fx.get_int("cats")) b.cats.push_back(int32_t(v));
    for (double v : fx.get("nums")) b.nums.push_back(float(v));
    for (double v : fx.get("targets")) b.targets.push_back(float(v));
    b.B = int64_t(b.targets.size()) / 2;
    return b;
}

// Copies the fixture's weights into the arena by name; every arena tensor must be there.
template <class R>
void load_weights(Arena& params, const test::Fixture& fx) {
    for (const auto& e : params.entries()) {
        const auto v = fx.get("param." + e.name);
        ASSERT_EQ(int64_t(v.size()), e.shape.numel()) << e.name;
        R* p = params.get(e.name).template ptr<R>();
        for (size_t i = 0; i < v.size(); ++i) p[i] = R(v[i]);
    }
}

TEST(MultitaskModel, DoubleMatchesPyTorchLossAndEveryGradient) {
    for (const char* name : kCases) {
        SCOPED_TRACE(name);
        test::Fixture fx(std::string("multitask_model_") + name);
        const Batch b = batch_of(fx);
        MultitaskNet<double> net(config_of(fx.get_int("config")), fixture_inputs(), b.B + 2);
        load_weights<double>(net.params(), fx);
        const double loss = net.forward(b.cats.data(), b.nums.data(), b.targets.data(), b.B);
        EXPECT_NEAR(loss, fx.get("loss")[0], 1e-12);
        EXPECT_TRUE(test::all_close(net.task_losses(), fx.get("task_losses"), 1e-12, 1e-12));
        const std::vector<double> pred(net.predictions(), net.predictions() + b.B * 2);
        EXPECT_TRUE(test::all_close(pred, fx.get("predictions"), 1e-12, 1e-12));
        net.grads().zero();
        net.backward();
        int64_t n = 0;
        for (const auto& e : net.params().entries()) {
            EXPECT_TRUE(test::all_close(sparse::reference::tensor_as_f64(net.grads(), e.name),
                                        fx.get("grad." + e.name), 1e-12, 1e-10))
                << e.name;
            ++n;
        }
        EXPECT_EQ(n, int64_t(fx.file().names().size() - 7) / 2)
            << "fixture tensors not in the model";
    }
}

// The float model on the same weights: loss and gradients within float rounding, scaled
// by each tensor's largest gradient.
TEST(MultitaskModel, FloatMatchesPyTorch) {
    for (const char* name : kCases) {
        SCOPED_TRACE(name);
        test::Fixture fx(std::string("multitask_model_") + name);
        const Batch b = batch_of(fx);
        MultitaskModel model(config_of(fx.get_int("config")), fixture_inputs(), b.B);
        load_weights<float>(model.params(), fx);
        const double loss = model.forward(b.cats.data(), b.nums.data(), b.targets.data(), b.B);
        const double eps = std::numeric_limits<float>::epsilon();
        EXPECT_NEAR(loss, fx.get("loss")[0], 100 * eps * std::max(1.0, std::abs(loss)));
        model.grads().zero();
        model.backward();
        for (const auto& e : model.params().entries()) {
            const auto want = fx.get("grad." + e.name);
            double scale = 1e-3;
            for (double v : want) scale = std::max(scale, std::abs(v));
            EXPECT_TRUE(test::all_close(sparse::reference::tensor_as_f64(model.grads(), e.name),
                                        want, 300 * eps * scale, 0))
                << e.name;
        }
    }
}

// Up to n elements of a tensor, spread over it (first, last and between).
std::vector<int64_t> sample(int64_t numel, int64_t n) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < std::min(n, numel); ++i)
        idx.push_back(n >= numel ? i : i * (numel - 1) / (n - 1));
    return idx;
}

TEST(MultitaskModel, GradientsMatchFiniteDifferences) {
    for (const char* name : kCases) {
        SCOPED_TRACE(name);
        test::Fixture fx(std::string("multitask_model_") + name);
        const Batch b = batch_of(fx);
        MultitaskNet<double> net(config_of(fx.get_int("config")), fixture_inputs(), b.B);
        load_weights<double>(net.params(), fx);
        auto loss = [&] {
            return net.forward(b.cats.data(), b.nums.data(), b.targets.data(), b.B);
        };
        loss();
        net.grads().zero();
        net.backward();
        for (const auto& e : net.params().entries()) {
            double* p = net.params().get(e.name).ptr<double>();
            const double* g = net.grads().get(e.name).ptr<double>();
            for (int64_t i : sample(e.shape.numel(), 5)) {
                const double h = 1e-6, keep = p[i];
                p[i] = keep + h;
                const double up = loss();
                p[i] = keep - h;
                const double down = loss();
                p[i] = keep;
                EXPECT_NEAR(g[i], (up - down) / (2 * h), 1e-7 + 1e-6 * std::abs(g[i]))
                    << e.name << "[" << i << "]";
            }
        }
    }
}

// Under data parallelism the loss and every gradient scale by loss_share; the task losses
// do not.
TEST(MultitaskModel, LossShareScalesLossAndGradients) {
    test::Fixture fx("multitask_model_ple2");
    const Batch b = batch_of(fx);
    MultitaskNet<double> net(config_of(fx.get_int("config")), fixture_inputs(), b.B);
    load_weights<double>(net.params(), fx);
    const double loss =
        net.forward(b.cats.data(), b.nums.data(), b.targets.data(), b.B, /*loss_share=*/0.25);
    EXPECT_NEAR(loss, 0.25 * fx.get("loss")[0], 1e-12);
    EXPECT_TRUE(test::all_close(net.task_losses(), fx.get("task_losses"), 1e-12, 1e-12));
    net.grads().zero();
    net.backward();
    for (const auto& e : net.params().entries()) {
        auto want = fx.get("grad." + e.name);
        for (double& v : want) v *= 0.25;
        EXPECT_TRUE(test::all_close(sparse::reference::tensor_as_f64(net.grads(), e.name), want,
                                    1e-12, 1e-10))
            << e.name;
    }
}

TEST(MultitaskModel, ParametersAndGatesAreNamed) {
    const MultitaskInputs in = fixture_inputs();
    MultitaskModelConfig c;
    c.arch = "ple";
    c.ple_levels = 2;
    c.ple_shared_experts = 1;
    c.ple_task_experts = 2;
    MultitaskModel ple(c, in, 4);
    for (const char* n :
         {"embed.0.weight", "embed.1.weight", "input.weight", "input.bias", "ple.0.task.1.gate.w",
          "ple.0.shared.gate.w", "ple.1.experts.w1", "tower.1.w2", "tower.0.b2"})
        EXPECT_GE(ple.params().find(n), 0) << n;
    EXPECT_LT(ple.params().find("ple.1.shared.gate.w"), 0);  // the last level has none
    EXPECT_EQ(ple.params().get("input.weight").shape, (Shape{32, 3 + 2 + 2}));
    const auto g = ple.gates();
    ASSERT_EQ(g.size(), 5u);  // level 0: two tasks and shared; level 1: two tasks
    EXPECT_EQ(g[0].label, "level 0 task click");
    EXPECT_EQ(g[0].experts, (std::vector<std::string>{"click 0", "click 1", "shared 0"}));
    EXPECT_EQ(g[2].label, "level 0 shared");
    EXPECT_EQ(g[2].task, -1);
    EXPECT_EQ(g[2].experts.size(), 5u);
    EXPECT_EQ(g[4].level, 1);
    EXPECT_EQ(g[4].task, 1);

    ple.init_weights(3);
    const std::vector<int32_t> cats = {1, 2, 4, 0};
    const std::vector<float> nums = {0.5f, -1.0f, 2.0f, 0.0f};
    ple.forward(cats.data(), nums.data(), nullptr, 2);
    for (size_t i = 0; i < g.size(); ++i)
        for (int64_t r = 0; r < 2; ++r) {
            const float* w = ple.gate_weights(int64_t(i)) + r * int64_t(g[i].experts.size());
            double sum = 0;
            for (size_t j = 0; j < g[i].experts.size(); ++j) sum += w[j];
            EXPECT_NEAR(sum, 1.0, 1e-5) << g[i].label;
        }
    const float* p = ple.predictions();
    EXPECT_TRUE(p[0] > 0 && p[0] < 1 && p[2] > 0 && p[2] < 1);  // click is a probability

    c.arch = "shared_bottom";
    EXPECT_TRUE(MultitaskModel(c, in, 2).gates().empty());
    c.arch = "omoe";
    const auto og = MultitaskModel(c, in, 2).gates();
    ASSERT_EQ(og.size(), 1u);
    EXPECT_EQ(og[0].experts.size(), 8u);
    c.arch = "mmoe";
    const MultitaskModel mm(c, in, 2);
    const auto mg = mm.gates();
    ASSERT_EQ(mg.size(), 2u);
    EXPECT_EQ(mg[1].label, "task value");
    // d_in = 3 + 2 + 2 numbers; 8 experts of 2 d x H; two gates of 8 x d; two towers.
    const double d = 32, H = 32, Ht = 16;
    EXPECT_DOUBLE_EQ(mm.forward_flops_per_row(),
                     2 * (7 * d + 8 * 2 * d * H + 2 * 8 * d + 2 * (d * Ht + Ht)));
    EXPECT_EQ(mm.num_params(), 5 * 3 + 3 * 2 + 7 * d + d + 2 * (8 * d + 8) + 8 * 2 * d * H +
                                   2 * (Ht * d + Ht + Ht + 1));
}

TEST(MultitaskModel, ErrorsNameTheColumnAndTheKey) {
    const MultitaskInputs in = fixture_inputs();
    MultitaskModelConfig c;
    MultitaskModel m(c, in, 4);
    m.init_weights(1);
    std::vector<int32_t> cats = {1, 2, 4, 3};  // row 1, column 1: 3 of a 3-row table
    const std::vector<float> nums(4, 0.0f), targets = {1, 0.5f, 0, 1};
    EXPECT_TRUE(test::throws_error_with(
        [&] { m.forward(cats.data(), nums.data(), targets.data(), 2); },
        {"MultitaskModel::forward", "categorical column 1", "row 1", "embedding row 3", "[0, 3)"}));
    cats[3] = -1;
    EXPECT_TRUE(
        test::throws_error_with([&] { m.forward(cats.data(), nums.data(), targets.data(), 2); },
                                {"categorical column 1", "embedding row -1"}));
    EXPECT_TRUE(
        test::throws_error_with([&] { m.forward(cats.data(), nums.data(), targets.data(), 5); },
                                {"MultitaskModel::forward", "B=5", "max_batch=4"}));
    EXPECT_TRUE(test::throws_error_with([&] { m.backward(); }, {"MultitaskModel::backward"}));
    auto bad = [&](auto edit, std::initializer_list<std::string> parts) {
        MultitaskModelConfig b;
        edit(b);
        return test::throws_error_with([&] { b.validate(); }, parts);
    };
    EXPECT_TRUE(bad([](auto& b) { b.arch = "moe"; }, {"model.arch", "\"moe\""}));
    EXPECT_TRUE(bad([](auto& b) { b.expert = "swish"; }, {"model.expert", "swish"}));
    EXPECT_TRUE(bad([](auto& b) { b.gate_top_k = 9; }, {"model.gate_top_k", "9", "n_experts=8"}));
    EXPECT_TRUE(bad(
        [](auto& b) {
            b.arch = "ple";
            b.ple_levels = 0;
        },
        {"model.ple_levels", "0"}));
}

// Two learnable tasks: click = [num0 + (cat0 is odd) > 0.5], value = 2 num1 - num0 + (cat1
// == 2). Adam on the float model brings the loss well below its start.
TEST(MultitaskModel, TrainingLowersTheLoss) {
    for (const char* arch : {"mmoe", "ple"}) {
        SCOPED_TRACE(arch);
        MultitaskModelConfig c;
        c.arch = arch;
        c.d_model = 16;
        c.expert_hidden = 16;
        c.n_experts = 4;
        c.tower_hidden = 8;
        const int64_t B = 64;
        const MultitaskInputs in = fixture_inputs();
        MultitaskModel m(c, in, B);
        m.init_weights(7);
        train::AdamW opt(m.params(), {});
        Rng rng(11);
        std::vector<int32_t> cats(size_t(B * 2));
        std::vector<float> nums(size_t(B * 2)), targets(size_t(B * 2));
        auto draw = [&] {
            for (int64_t r = 0; r < B; ++r) {
                cats[size_t(2 * r)] = int32_t(rng.below(5));
                cats[size_t(2 * r + 1)] = int32_t(rng.below(3));
                nums[size_t(2 * r)] = rng.normal();
                nums[size_t(2 * r + 1)] = rng.normal();
                const float x = nums[size_t(2 * r)] + float(cats[size_t(2 * r)] % 2);
                targets[size_t(2 * r)] = x > 0.5f ? 1.0f : 0.0f;
                targets[size_t(2 * r + 1)] = 2 * nums[size_t(2 * r + 1)] - nums[size_t(2 * r)] +
                                             (cats[size_t(2 * r + 1)] == 2 ? 1.0f : 0.0f);
            }
        };
        double first = 0, last = 0;
        for (int step = 0; step < 200; ++step) {
            draw();
            const double loss = m.forward(cats.data(), nums.data(), targets.data(), B);
            if (step < 10) first += loss / 10;
            if (step >= 190) last += loss / 10;
            m.grads().zero();
            m.backward();
            opt.step(m.params(), m.grads(), 3e-3f);
        }
        std::cout << arch << ": loss " << first << " -> " << last << " (click "
                  << m.task_losses()[0] << ", value " << m.task_losses()[1] << ")\n";
        EXPECT_LT(last, 0.3 * first);
    }
}

}  // namespace
}  // namespace moe
