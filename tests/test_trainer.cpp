// The Trainer (src/train/trainer.h) with a model that is not the language model: a small MoE
// classifier on synthetic data, written here against the Trainable interface only. It shows
// the interface is enough for a second model family and checks what the Trainer promises any
// model: the loss falls, evaluation runs and is logged, the checkpoint holds the parameters,
// the AdamW moments, the step and the client's metadata, a resumed run ends bit for bit where
// an uninterrupted one does, frozen elements do not move, and a hook can stop the run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "moe/moe_layer.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "test_support.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace moe;

namespace {

constexpr int64_t kInputs = 12;  // features of an example
constexpr int64_t kClasses = 4;
constexpr int64_t kWidth = 16;  // the MoE layer's d_model

// Examples: class c's features are its centre plus N(0, 0.6^2) noise; centres ~ N(0, 1).
// Example i of a stream is drawn from (stream seed, i) alone, so training batch s is the
// same in a resumed run.
struct SyntheticClasses {
    std::vector<float> centres;  // [kClasses, kInputs]
    explicit SyntheticClasses(uint64_t seed) : centres(size_t(kClasses * kInputs)) {
        Rng rng(seed);
        for (float& c : centres) c = float(rng.normal());
    }
    // x: [n, kInputs], y: [n]
    void draw(uint64_t stream, int64_t first, int64_t n, float* x, int32_t* y) const {
        for (int64_t i = 0; i < n; ++i) {
            Rng rng(stream * 0x9e3779b97f4a7c15ull + uint64_t(first + i));
            const int64_t c = int64_t(rng.below(uint64_t(kClasses)));
            y[i] = int32_t(c);
            for (int64_t j = 0; j < kInputs; ++j)
                x[i * kInputs + j] = centres[size_t(c * kInputs + j)] + 0.6f * float(rng.normal());
        }
    }
};

// logits = W_out (h + moe(h)),  h = W_in x: an input projection, a residual MoE layer (4
// experts, top-2, softmax_topk with its load-balancing loss), a class head.
class MoeClassifier : public train::Trainable {
  public:
    MoeClassifier(const SyntheticClasses& data, int64_t batch, uint64_t seed)
        : data_(data), B_(batch), layer_(moe_config(), batch) {
        w_in_ = params_.add("in.w", {kWidth, kInputs});
        layer_.declare(params_, "moe.");
        w_out_ = params_.add("head.w", {kClasses, kWidth});
        params_.allocate();
        grads_ = params_.clone_layout();
        layer_.bind(params_, grads_);
        Rng rng(seed);
        layer_.init_weights(rng, 0.2);
        for (int id : {w_in_, w_out_}) {
            Tensor t = params_.get(id);
            for (int64_t i = 0; i < t.shape.numel(); ++i)
                t.ptr<float>()[i] = 0.3f * float(rng.normal());
        }
        for (auto* v : {&x_, &h_, &mid_, &d_h_, &d_mid_}) v->resize(size_t(B_ * kWidth));
        x_.resize(size_t(B_ * kInputs));
        y_.resize(size_t(B_));
        probs_.resize(size_t(B_ * kClasses));
        d_logits_.resize(size_t(B_ * kClasses));
    }

    static sparse::MoeConfig moe_config() {
        sparse::MoeConfig c;
        c.d_model = kWidth;
        c.d_expert = 32;
        c.n_experts = 4;
        c.top_k = 2;
        c.causal = false;
        c.aux_loss_coef = 0.01;
        return c;
    }

    Arena& params() override { return params_; }
    Arena& grads() override { return grads_; }
    const uint8_t* frozen() const override { return frozen_.empty() ? nullptr : frozen_.data(); }
    int64_t items_per_batch() const override { return B_; }
    const char* item_unit() const override { return "ex"; }
    const char* items_name() const override { return "examples"; }

    double train_forward(int64_t step) override {
        data_.draw(/*stream=*/1, step * B_, B_, x_.data(), y_.data());
        sparse::RouterInput<float> in;
        in.training = true;
        in.seed = uint64_t(step);
        return forward(in);
    }
    double aux_loss() const override { return router_loss_; }
    void backward() override {
        float* gw_in = grads_.get(w_in_).ptr<float>();
        float* gw_out = grads_.get(w_out_).ptr<float>();
        std::fill(d_logits_.begin(), d_logits_.end(), 0.0f);
        nn::cross_entropy_backward(d_logits_.data(), probs_.data(), y_.data(), B_, kClasses);
        std::fill(d_mid_.begin(), d_mid_.end(), 0.0f);
        nn::linear_backward(d_mid_.data(), gw_out, static_cast<float*>(nullptr), d_logits_.data(),
                            mid_.data(), p(w_out_), B_, kWidth, kClasses);
        d_h_ = d_mid_;  // the residual path
        layer_.backward(d_mid_.data(), d_h_.data());
        nn::linear_backward(static_cast<float*>(nullptr), gw_in, static_cast<float*>(nullptr),
                            d_h_.data(), x_.data(), p(w_in_), B_, kInputs, kWidth);
    }
    void after_step() override { layer_.after_step(); }
    void report_step(train::StepReport& r) const override {
        r.scalars = {{"load_imbalance", layer_.stats().load_imbalance}};
    }
    train::EvalReport evaluate() override {
        // 4 batches of held-out examples (stream 2): mean loss and accuracy.
        double loss = 0, correct = 0;
        const int64_t batches = 4;
        for (int64_t b = 0; b < batches; ++b) {
            data_.draw(/*stream=*/2, b * B_, B_, x_.data(), y_.data());
            loss += forward({}) / double(batches);
            for (int64_t i = 0; i < B_; ++i) {
                const float* pr = probs_.data() + i * kClasses;
                correct += double(std::max_element(pr, pr + kClasses) - pr == y_[size_t(i)]);
            }
        }
        const double accuracy = correct / double(batches * B_);
        evals_++;
        last_accuracy_ = accuracy;
        return {
            {{"loss", loss}, {"accuracy", accuracy}},
            "validation loss " + std::to_string(loss) + " | accuracy " + std::to_string(accuracy)};
    }

    // Freezes the input projection (every element of "in.w").
    void freeze_input_projection() {
        frozen_.assign(params_.f32_count(), 0);
        const Tensor t = params_.get(w_in_);
        const size_t first = size_t(t.ptr<float>() - params_.f32_data());
        std::fill(frozen_.begin() + first, frozen_.begin() + first + size_t(t.shape.numel()), 1);
    }
    std::vector<float> values(const std::string& name) const {
        const Tensor t = params_.get(name);
        return {t.ptr<float>(), t.ptr<float>() + t.shape.numel()};
    }
    int evals_ = 0;
    double last_accuracy_ = 0;

  private:
    const float* p(int id) const { return params_.get(id).ptr<float>(); }
    // Forward of x_ with targets y_: the mean cross-entropy plus the router's loss.
    double forward(const sparse::RouterInput<float>& in) {
        nn::linear_forward(h_.data(), x_.data(), p(w_in_), static_cast<const float*>(nullptr), B_,
                           kInputs, kWidth);
        router_loss_ = layer_.forward(mid_.data(), h_.data(), B_, in);
        for (size_t i = 0; i < mid_.size(); ++i) mid_[i] += h_[i];
        nn::linear_forward(probs_.data(), mid_.data(), p(w_out_),
                           static_cast<const float*>(nullptr), B_, kWidth, kClasses);
        return nn::cross_entropy_forward(probs_.data(), probs_.data(), y_.data(), B_, kClasses);
    }

    const SyntheticClasses& data_;
    int64_t B_;
    Arena params_, grads_;
    int w_in_ = -1, w_out_ = -1;
    sparse::MoeLayer<float> layer_;
    std::vector<uint8_t> frozen_;
    double router_loss_ = 0;
    std::vector<float> x_, h_, mid_, d_h_, d_mid_, probs_, d_logits_;  // [B, ...]
    std::vector<int32_t> y_;                                           // [B]
};

struct TrainerTest : ::testing::Test {
    fs::path dir;
    SyntheticClasses data{17};
    void SetUp() override {
        dir = fs::temp_directory_path() /
              ("moe_trainer_" + std::to_string(::getpid()) + "_" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir);
    }
    void TearDown() override { fs::remove_all(dir); }
    train::TrainOptions options(int64_t steps) const {
        train::TrainOptions o;
        o.steps = steps;
        o.batch_size = 32;
        o.lr = 1e-2;
        o.min_lr = 1e-3;
        o.warmup_steps = 5;
        o.log_every = 10;
        o.eval_every = 50;
        o.threads = 2;
        o.tensorboard = false;
        return o;
    }
    std::string run_dir(const std::string& name) const { return (dir / name).string(); }
};

const std::map<std::string, std::string> kMetadata = {{"format", "test/moe-classifier"}};

TEST_F(TrainerTest, TrainsAnMoeClassifierLogsAndCheckpoints) {
    const train::TrainOptions opt = options(150);
    train::Trainer trainer(opt, run_dir("a"), train::StartMode::fresh);
    MoeClassifier model(data, opt.batch_size, 3);
    const train::TrainResult r = trainer.run(model, kMetadata);

    EXPECT_EQ(r.steps_done, 150);
    EXPECT_FALSE(r.interrupted);
    EXPECT_LT(r.last_loss, 0.5 * r.first_loss)
        << "first " << r.first_loss << " last " << r.last_loss;
    EXPECT_EQ(model.evals_, 3);            // steps 50, 100, 150
    EXPECT_GT(model.last_accuracy_, 0.9);  // 4 well-separated classes
    EXPECT_DOUBLE_EQ(r.val_loss, model.evaluate().scalars[0].second);

    // metrics.jsonl: a record per logged step (with the model's own field) and per evaluation.
    std::ifstream metrics(run_dir("a") + "/metrics.jsonl");
    int train_records = 0, val_records = 0;
    for (std::string line; std::getline(metrics, line);) {
        const auto j = nlohmann::json::parse(line);
        if (j.contains("loss")) {
            ++train_records;
            EXPECT_TRUE(j.contains("examples_per_s") && j.contains("load_imbalance")) << line;
        }
        if (j.contains("val_loss")) {
            ++val_records;
            EXPECT_TRUE(j.contains("val_accuracy")) << line;
        }
    }
    EXPECT_EQ(train_records, 15);
    EXPECT_EQ(val_records, 3);

    // The checkpoint: every parameter under its name, the AdamW moments, step and metadata.
    io::SafetensorsFile f(r.checkpoint_path);
    EXPECT_EQ(f.metadata("step"), "150");
    EXPECT_EQ(f.metadata("format"), "test/moe-classifier");
    for (const Arena::Entry& e : model.params().entries()) {
        EXPECT_TRUE(f.contains(e.name)) << e.name;
        EXPECT_TRUE(f.contains("optim.m." + e.name)) << e.name;
        EXPECT_TRUE(f.contains("optim.v." + e.name)) << e.name;
    }
}

TEST_F(TrainerTest, ResumeEndsBitForBitWhereTheUninterruptedRunDoes) {
    const train::TrainOptions opt = options(60);
    MoeClassifier straight(data, opt.batch_size, 3);
    {
        train::Trainer t(opt, run_dir("straight"), train::StartMode::fresh);
        t.run(straight, kMetadata);
    }
    MoeClassifier first_half(data, opt.batch_size, 3);
    {
        train::Trainer t(opt, run_dir("halves"), train::StartMode::fresh);
        train::TrainHooks stop_at_25;
        stop_at_25.after_step = [](int64_t step, double) { return step < 25; };
        const train::TrainResult r = t.run(first_half, kMetadata, stop_at_25);
        EXPECT_TRUE(r.interrupted);
        EXPECT_EQ(r.steps_done, 25);
    }
    MoeClassifier resumed(data, opt.batch_size, 99);  // other initial weights: all are loaded
    {
        train::Trainer t(opt, run_dir("halves"), train::StartMode::resume);
        EXPECT_EQ(t.run(resumed, kMetadata).steps_done, 60);
    }
    for (const Arena::Entry& e : straight.params().entries()) {
        const std::vector<float> a = straight.values(e.name), b = resumed.values(e.name);
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << e.name;
    }
}

TEST_F(TrainerTest, FrozenElementsDoNotMove) {
    const train::TrainOptions opt = options(20);
    MoeClassifier model(data, opt.batch_size, 3);
    model.freeze_input_projection();
    const std::vector<float> w_in = model.values("in.w"), head = model.values("head.w");
    train::Trainer t(opt, run_dir("frozen"), train::StartMode::fresh);
    t.run(model, kMetadata);
    EXPECT_EQ(model.values("in.w"), w_in);
    EXPECT_NE(model.values("head.w"), head);
}

TEST_F(TrainerTest, BatchThatDoesNotSplitOverTheGroupsIsRefusedByKey) {
    train::TrainOptions opt = options(5);
    opt.reduction_groups = 64;  // 32 examples do not make 64 groups
    train::Trainer t(opt, run_dir("groups"), train::StartMode::fresh);
    MoeClassifier model(data, opt.batch_size, 3);
    EXPECT_TRUE(test::throws_error_with([&] { t.run(model, kMetadata); },
                                        {"train.reduction_groups = 64", "32 items"}));
}

}  // namespace
