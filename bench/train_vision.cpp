// build/bench/train_vision: training speed of a vision::VisionModel at a recipe's shape,
// against oneDNN's dense sgemm on the same products measured in the same run.
//
//   usage: train_vision [--json] [--config RECIPE.json] [--steps N] [--warmup N]
//                       [--threads N] [--profile]
//
// Shape: the model and train.batch_size of --config (default recipes/vision/conv_moe.json,
// looked up from the source tree). Images are random N(0, 1) pixels with random labels, the
// same batch every step (the data pipeline is not what is measured). A step is the
// Trainer's (train::StepRunner, what `moe train` runs): zero_grads, forward, backward, clip,
// AdamW, after_step. --warmup steps (default 2: first touch, oneDNN's primitive creation)
// are not timed; --steps (default 5) are, one by one. images_per_s = B / median step time.
//
// model_gflops counts the step's matrix-product FLOPs, 3 x the forward's (a gradient for
// the input and one for the weight per product; the first convolution needs no input
// gradient, so this counts ~1% more than is executed at the recipe's shape): VisionModel::
// forward_flops_per_image (convolutions as 2 * OH * OW * OC * IC * K^2, projections,
// attention, the k active experts per token and the router, the head).
// gemm_gflops: the same products as dense sgemm calls (each convolution as its im2col
// product [B*OH*OW, IC*K*K] x [IC*K*K, OC]; each expert with its mean share B*T*k/E rows),
// forward and both backward products, timed once after every timed step so that both see
// the same load from the other users of this shared machine. model_over_gemm is the
// fraction of that rate a whole training step delivers (target >= 0.5). Medians, with the
// 1-minute load average before and after.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "core/profile.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "io/config.h"
#include "kernels/gemm.h"
#include "train/trainable.h"
#include "train/trainer.h"
#include "vision/vision_config.h"
#include "vision/vision_model.h"

#include "bench_support.h"

#ifndef MOE_SOURCE_DIR
#define MOE_SOURCE_DIR "."
#endif

namespace {

using moe::Timer;
using moe::vision::VisionModel;
using moe::vision::VisionModelConfig;

using moe::bench::Linear;
using moe::bench::load_avg;
using moe::bench::median;
using moe::bench::Out;
using moe::bench::random_vec;

// Every product of the model's step as a dense GEMM (see the header comment).
std::vector<Linear> gemm_mix(const VisionModelConfig& c, int64_t B, int64_t T, int64_t Ts) {
    std::vector<Linear> v;
    uint64_t seed = 100;
    const int64_t d = c.d_model;
    if (c.stem == "conv") {
        int64_t h = c.height, w = c.width, in = c.channels;
        for (int64_t out : c.conv_channels) {
            for (int64_t j = 0; j < c.convs_per_stage; ++j, in = out)
                v.emplace_back(B * h * w, in * 9, out, seed += 10);
            h /= 2, w /= 2;
        }
        v.emplace_back(B * Ts, c.stem_channels(), d, seed += 10);
    } else {
        v.emplace_back(B * Ts, c.channels * c.patch * c.patch, d, seed += 10);
    }
    for (int64_t l = 0; l < c.n_layers; ++l) {
        if (c.attention)
            for (int i = 0; i < 4; ++i) v.emplace_back(B * T, d, d, seed += 10);
        if (!c.is_moe_block(l)) {
            v.emplace_back(B * T, d, c.d_ff, seed += 10);
            v.emplace_back(B * T, c.d_ff, d, seed += 10);
            continue;
        }
        const auto& m = c.moe;
        const int64_t E = m.n_experts;
        const int64_t rows = m.router == "soft" ? B * m.soft.slots_per_expert
                                                : std::max<int64_t>(1, B * T * m.top_k / E);
        for (int64_t e = 0; e < E; ++e) {
            v.emplace_back(rows, d, m.d_expert, seed += 10);
            if (m.expert == moe::sparse::ExpertKind::swiglu)
                v.emplace_back(rows, d, m.d_expert, seed += 10);
            v.emplace_back(rows, m.d_expert, d, seed += 10);
        }
    }
    v.emplace_back(B, d, c.n_classes, seed += 10);
    return v;
}

double gemm_gflops(std::vector<Linear>& mix) {
    double flops = 0;
    Timer t;
    for (auto& l : mix) l.run(), flops += l.flops();
    return flops / t.seconds() * 1e-9;
}

// The model on one fixed random batch, as the Trainer sees it.
class RandomImages : public moe::train::Trainable {
  public:
    RandomImages(VisionModel& m, int64_t B) : m_(m), B_(B) {
        const auto& c = m.config();
        x_ = random_vec(size_t(B * c.height * c.width * c.channels), 7, 1.0f);
        moe::Rng rng(8);
        for (int64_t i = 0; i < B; ++i) y_.push_back(int32_t(rng.below(uint64_t(c.n_classes))));
    }
    moe::Arena& params() override { return m_.params(); }
    moe::Arena& grads() override { return m_.grads(); }
    int64_t items_per_batch() const override { return B_; }
    double train_forward(int64_t step) override {
        moe::vision::VisionForwardOptions fo;
        fo.training = true;
        fo.seed = uint64_t(step);
        return m_.forward(x_.data(), y_.data(), B_, fo);
    }
    double aux_loss() const override { return m_.router_loss(); }
    void backward() override { m_.backward(); }
    void after_step() override { m_.after_step(); }
    moe::train::EvalReport evaluate() override { return {}; }

  private:
    VisionModel& m_;
    int64_t B_;
    std::vector<float> x_;
    std::vector<int32_t> y_;
};

const char* const kPhases[] = {
    "zero_grads",      "batch",          "conv_fwd",      "conv_bwd",      "stem_norm_act",
    "pool_fwd",        "pool_bwd",       "stem_proj_fwd", "stem_proj_bwd", "patch_embed_fwd",
    "patch_embed_bwd", "norms_residual", "attention_fwd", "attention_bwd", "dense_ffn_fwd",
    "dense_ffn_bwd",   "router_fwd",     "router_bwd",    "dispatch_fwd",  "dispatch_bwd",
    "experts_fwd",     "experts_bwd",    "combine_fwd",   "combine_bwd",   "moe_stats",
    "head_fwd",        "head_bwd",       "grad_sum",      "clip",          "adamw"};

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--json] [--config RECIPE.json] [--steps N] [--warmup N] "
                 "[--threads N] [--profile]\n",
                 argv0);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false, profile = false;
    int steps = 5, warmup = 2, threads = 2;
    std::string config = std::string(MOE_SOURCE_DIR) + "/recipes/vision/conv_moe.json";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--json")
            json = true;
        else if (a == "--profile")
            profile = true;
        else if (a == "--config" && has_value)
            config = argv[++i];
        else if (a == "--steps" && has_value)
            steps = std::max(1, std::atoi(argv[++i]));
        else if (a == "--warmup" && has_value)
            warmup = std::max(0, std::atoi(argv[++i]));
        else if (a == "--threads" && has_value)
            threads = std::atoi(argv[++i]);
        else
            return usage(argv[0]);
    }
    try {
        moe::set_num_threads(threads);
        moe::io::Config cfg = moe::io::Config::from_file(config);
        const moe::vision::VisionTrainConfig vc = moe::vision::read_vision_train_config(cfg);
        const VisionModelConfig& c = vc.model;
        const int64_t B = vc.train.batch_size;
        VisionModel model(c, B);
        model.init_weights(1);
        RandomImages trainable(model, B);
        moe::train::TrainOptions topt = vc.train;
        topt.lr = topt.min_lr = 3e-4;
        topt.warmup_steps = 0;
        topt.steps = 1 << 30;
        const auto single = moe::comm::make_single_process_comm();
        moe::train::StepRunner runner(trainable, topt, *single);
        auto mix = gemm_mix(c, B, model.tokens_per_image(), c.stem_tokens());

        int64_t next = 0;
        const double load0 = load_avg();
        double loss = 0;
        for (int s = 0; s < warmup; ++s) loss = runner.run(next++).loss;
        gemm_gflops(mix);
        std::vector<double> step_s, gemm_gf;
        for (int s = 0; s < steps; ++s) {
            Timer t;
            loss = runner.run(next++).loss;
            step_s.push_back(t.seconds());
            gemm_gf.push_back(gemm_gflops(mix));
        }
        const double load1 = load_avg();
        const double step_flops = 3.0 * model.forward_flops_per_image() * double(B);
        const double t_med = median(step_s);
        const double model_gf = step_flops / t_med * 1e-9, gemm_gf_med = median(gemm_gf);
        Out out;
        out.json = json;
        out.begin();
        out.add("bench", std::string("train_vision"));
        out.add("config", config);
        out.add("threads", moe::num_threads(), "%.0f");
        out.add("batch", double(B), "%.0f");
        out.add("params", double(model.num_params()), "%.0f");
        out.add("steps", steps, "%.0f");
        out.add("step_ms", t_med * 1e3, "%.1f");
        out.add("images_per_s", double(B) / t_med, "%.0f");
        out.add("model_gflops", model_gf, "%.1f");
        out.add("gemm_gflops", gemm_gf_med, "%.1f");
        out.add("model_over_gemm", model_gf / gemm_gf_med, "%.3f");
        out.add("gflop_per_step", step_flops * 1e-9, "%.3f");
        out.add("loss", loss, "%.4f");
        out.add("load_before", load0, "%.2f");
        out.add("load_after", load1, "%.2f");
        out.end();

        if (profile) {
            moe::PhaseProfile prof;
            Timer total;
            {
                const moe::ProfileInstall install(&prof);
                for (int s = 0; s < steps; ++s) runner.run(next++);
            }
            const double per_step = total.seconds() / steps;
            out.begin();
            out.add("bench", std::string("profile"));
            out.add("step_ms", per_step * 1e3, "%.1f");
            double listed = 0;
            for (const char* p : kPhases) {
                const double s = prof.seconds(p) / steps;
                listed += s;
                out.add((std::string(p) + "_ms").c_str(), s * 1e3, "%.2f");
            }
            out.add("other_phases_ms", (prof.total_seconds() / steps - listed) * 1e3, "%.2f");
            out.end();
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "train_vision: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
