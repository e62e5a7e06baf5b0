// build/bench/train_lm: training and batch-1 generation of lm::TransformerLM on the
// reference shape of issue 4, against oneDNN's dense sgemm measured in the same run.
//
//   usage: train_lm [--json] [--steps N] [--warmup N] [--threads N] [--small] [--profile]
//                   [--decode-tokens N] [--no-decode]
//
// Reference shape: d_model=384, 6 layers, 6 heads, every feed-forward an MoE layer
// (softmax_topk, E=8, k=2, SwiGLU experts of hidden 768, dropless), vocabulary 4096,
// untied lm_head, sequence 256, batch 16, 2 threads. --small: d=64, 2 layers, 2 heads, E=4,
// k=2, h=128, V=256, T=32, B=4, for a smoke run of a second.
//
// Training. Tokens are uniform random (Rng(1234)), the same batch every step; targets are the
// inputs shifted by one.
// A step is the Trainer's (train::StepRunner, what `moe train` runs): grads.zero, forward
// (training, a seed per step), backward, clip at global norm 1.0, AdamW (constant lr 3e-4),
// after_step. --warmup steps
// (default 2: first touch of every buffer, oneDNN's kernel selection) are not timed; then --steps
// (default 5) are timed one by one. tokens_per_s = B*T / median step time.
//
// model_gflops counts the matrix-product FLOPs of the step (2 per multiply-add), per token:
//   forward, each layer:  attention projections q, k, v, o       4 * 2 d^2
//                         scores q k^T and weighted sum att v     2 * 2 T_avg d
//                         router logits                           2 d E
//                         routed experts (w1, w3, w2 for k rows)  k * 3 * 2 d h
//   forward, once:        lm_head                                 2 d V
//   backward = 2 x forward (a gradient for the input and one for the weight per product).
// T_avg = (T + 1) / 2, the mean causal context: src/nn/attention.cpp skips masked key blocks
// (query block [i0, i1) of 32 rows multiplies keys [0, i1) only), so the executed context is
// the mean of i1 = 144 at T=256, 12% above the 128.5 counted here; counting the useful
// FLOPs rather than the executed ones keeps the figure honest. At the reference shape the
// forward is 32.7 MFLOP per token: experts 65%, projections 22%, lm_head 10%, attention
// scores 3.6%, router 0.1%. Elementwise work (norms, softmax, SwiGLU, RoPE, cross-entropy,
// AdamW) is not counted: it is the overhead the ratio shows.
//
// gemm_gflops: the same FLOP mix as dense oneDNN sgemm calls with the model's own operand
// shapes and transposes (out = in w^T forward; d_in = d_out w and d_w = d_out^T in
// backward): per layer the four [B*T, d] x [d, d] projections and, for each of the E
// experts, its mean share B*T*k/E rows through w1, w3 ([d -> h]) and w2 ([h -> d]); then
// the [B*T, d] x [d, V] lm_head. One layer's set and the lm_head are timed and combined as
// 6 layers + 1 head, so gemm_gflops weighs each shape by its share of the model's FLOPs.
// The small attention-score products ([32, <=256] x [256, 64] blocks) are left out: they are
// the attention kernel's own choice, and a reference made slower by them would flatter the
// ratio. So model_gflops / gemm_gflops is the fraction of the achievable sgemm rate, on
// this model's shapes, that a whole training step delivers (target >= 0.55). Each timed
// step is followed by one timing of the GEMM mix, so both see the same load from the
// other users of this shared machine; figures are medians, with the best also given.
//
// Generation, batch 1, at context 256: the last --decode-tokens (default 32) positions of a
// 256-token sequence whose first positions are a random prompt, timed token by token.
//   "kv_cache": TransformerLM::decode (start_generation, then one token at a time through
//   every layer with a KV cache per layer), at --threads and, when that is not 1, also on
//   one thread: decode's products are matrix-vector (M = 1), each a fork/join of the team,
//   ~70 per token, so on a shared machine the thread count matters more than in training.
//   Its logits are compared with those of the full forward on the same tokens.
//   "no_kv_cache" (printed last, measured first): the full forward on the growing prefix for
//   each new token (the cost of generating without the cache; it also produces the greedy
//   tokens both runs use).
// weight_bandwidth_gbs = active weight bytes per token x tokens/s, active = every
// non-expert weight (the embedding as one row: a lookup reads one row) + k of the E experts
// of each MoE layer, f32: 60.1 MiB at the reference shape, more than the 32 MiB L3 here, so
// decode streams its weights from memory (a triad-like loop reaches ~40-50 GB/s on 2 cores).
//
// --profile runs --steps more steps with a moe::PhaseProfile installed (core/profile.h): the
// MOE_PROFILE_SCOPE marks in the Trainer's step, TransformerLM and MoeLayer time the code users
// run, and the bench prints where the time goes.
//
// Every figure comes with the 1-minute load average before and after it: the 2 cores are
// shared. The bench's own 2 threads push it towards 2; above that another process took part
// of the cores, and every OpenMP fork/join may then wait for a descheduled thread (figures
// drop by factors, not percent: run again when the load is low).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "core/profile.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/gemm.h"
#include "lm/transformer_lm.h"
#include "train/trainable.h"
#include "train/trainer.h"

#include "bench_support.h"

namespace {

using moe::Timer;
using moe::bench::Linear;
using moe::bench::load_avg;
using moe::bench::median;
using moe::bench::Out;
using moe::bench::random_vec;
using moe::lm::LmConfig;
using moe::lm::TransformerLM;

struct Options {
    bool json = false, small = false, profile = false, decode = true;
    int steps = 5, warmup = 2, threads = 2, decode_tokens = 32;
};

struct Shape {
    LmConfig cfg;
    int64_t B;
};

Shape reference_shape(bool small) {
    LmConfig c;
    c.ffn = "moe";
    c.moe.router = "softmax_topk";
    c.moe.capacity_factor = 0;  // dropless
    c.moe.top_k = 2;
    if (small) {
        c.vocab_size = 256, c.d_model = 64, c.n_layers = 2, c.n_heads = 2, c.seq_len = 32;
        c.moe.n_experts = 4, c.moe.d_expert = 128;
        c.d_ff = 128;
        return {c, 4};
    }
    c.vocab_size = 4096, c.d_model = 384, c.n_layers = 6, c.n_heads = 6, c.seq_len = 256;
    c.moe.n_experts = 8, c.moe.d_expert = 768;
    c.d_ff = 768;  // unused: every layer is MoE
    return {c, 16};
}

// ---- FLOP counts (see the header comment) ------------------------------------------------

struct Flops {
    double proj = 0, scores = 0, router = 0, experts = 0, dense_ffn = 0, head = 0;
    double total() const { return proj + scores + router + experts + dense_ffn + head; }
};

// Forward FLOPs per token of a length-T sequence.
Flops forward_flops_per_token(const LmConfig& c, int64_t T) {
    const double d = double(c.d_model), V = double(c.vocab_size), t_avg = 0.5 * double(T + 1);
    Flops f;
    for (int64_t l = 0; l < c.n_layers; ++l) {
        f.proj += 4 * 2 * d * d;
        f.scores += 2 * 2 * t_avg * d;
        if (c.is_moe_layer(l)) {
            f.router += 2 * d * double(c.moe.n_experts);
            f.experts += double(c.moe.top_k) * 3 * 2 * d * double(c.moe.d_expert);
        } else {
            f.dense_ffn += 3 * 2 * d * double(c.d_ff);
        }
    }
    f.head = 2 * d * V;
    return f;
}

// ---- The dense GEMM reference (see the header comment) -----------------------------------

struct GemmMix {
    std::vector<Linear> layer;  // one layer's products
    std::vector<Linear> head;
    int64_t n_layers;
    GemmMix(const LmConfig& c, int64_t N) : n_layers(c.n_layers) {
        const int64_t d = c.d_model, h = c.moe.d_expert, E = c.moe.n_experts;
        const int64_t rows = std::max<int64_t>(1, N * c.moe.top_k / E);
        uint64_t seed = 100;
        for (int i = 0; i < 4; ++i) layer.emplace_back(N, d, d, seed += 10);
        for (int64_t e = 0; e < E; ++e) {
            layer.emplace_back(rows, d, h, seed += 10);  // w1
            layer.emplace_back(rows, d, h, seed += 10);  // w3
            layer.emplace_back(rows, h, d, seed += 10);  // w2
        }
        head.emplace_back(N, d, c.vocab_size, seed += 10);
    }
    static double flops_of(const std::vector<Linear>& v) {
        double f = 0;
        for (const auto& l : v) f += l.flops();
        return f;
    }
    // Seconds to run the products [first, first + count) of v (all by default).
    static double time_of(std::vector<Linear>& v, size_t first = 0, size_t count = SIZE_MAX) {
        const size_t end = std::min(v.size(), count == SIZE_MAX ? v.size() : first + count);
        Timer t;
        for (size_t i = first; i < end; ++i) v[i].run();
        return t.seconds();
    }
    // GFLOP/s of n_layers layer sets plus one head.
    double gflops() {
        const double t = double(n_layers) * time_of(layer) + time_of(head);
        return (double(n_layers) * flops_of(layer) + flops_of(head)) / t * 1e-9;
    }
};

// ---- One training step: the Trainer's own (train::StepRunner) --------------------------

// The model as a Trainable on a fixed random batch: the same step the Trainer runs for the
// language recipe (zero_grads, forward, backward, grad_sum, clip, AdamW, after_step), with
// the batch drawn once instead of from the corpus.
class RandomBatchLm : public moe::train::Trainable {
  public:
    RandomBatchLm(TransformerLM& m, const int32_t* in, const int32_t* tgt, int64_t B, int64_t T)
        : m_(m), in_(in), tgt_(tgt), B_(B), T_(T) {}
    moe::Arena& params() override { return m_.params(); }
    moe::Arena& grads() override { return m_.grads(); }
    int64_t items_per_batch() const override { return B_ * T_; }
    double train_forward(int64_t step) override {
        moe::lm::ForwardOptions fo;
        fo.training = true;
        fo.seed = uint64_t(step);  // no domain labels: softmax_topk ignores them
        return m_.forward(in_, tgt_, B_, T_, fo);
    }
    double aux_loss() const override { return m_.router_loss(); }
    void backward() override { m_.backward(); }
    void after_step() override { m_.after_step(); }
    moe::train::EvalReport evaluate() override {
        return {{{"loss", m_.forward(in_, tgt_, B_, T_)}}, ""};
    }

  private:
    TransformerLM& m_;
    const int32_t *in_, *tgt_;  // [B, T] each
    int64_t B_, T_;
};

// Constant learning rate 3e-4, AdamW (0.9, 0.95, weight decay 0.1), clip at norm 1.
moe::train::TrainOptions bench_train_options(int64_t B) {
    moe::train::TrainOptions t;
    t.batch_size = B;
    t.lr = t.min_lr = 3e-4;
    t.warmup_steps = 0;
    t.steps = 1 << 30;
    return t;
}

// The phases a step's time is split into (core/profile.h marks in the Trainer, the model and
// the MoE layer), in print order; a phase the step did not enter prints 0.
const char* const kPhases[] = {
    "zero_grads",  "embedding",         "norms_residual",    "attention_fwd", "attention_bwd",
    "router_fwd",  "router_bwd",        "dispatch_fwd",      "dispatch_bwd",  "experts_fwd",
    "experts_bwd", "combine_fwd",       "combine_bwd",       "moe_stats",     "lm_head_fwd",
    "lm_head_bwd", "cross_entropy_fwd", "cross_entropy_bwd", "grad_sum",      "clip",
    "adamw"};

// ---- Generation ---------------------------------------------------------------------------

int32_t argmax(const float* x, int64_t n) {
    return int32_t(std::max_element(x, x + n) - x);
}

// Bytes of weights one decoded token reads (see the header comment).
double active_weight_bytes(const TransformerLM& m) {
    const LmConfig& c = m.config();
    const double expert_share = double(c.moe.top_k) / double(c.moe.n_experts);
    double n = 0;
    for (const auto& e : m.params().entries()) {
        const double numel = double(e.shape.numel());
        if (e.name == "tok_emb")
            n += double(c.d_model) * (c.tie_embeddings ? double(c.vocab_size) : 1.0);
        else if (e.name.find(".moe.experts.") != std::string::npos)
            n += numel * expert_share;
        else
            n += numel;
    }
    return n * sizeof(float);
}

// ---- Output -------------------------------------------------------------------------------

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--json] [--steps N] [--warmup N] [--threads N] [--small] "
                 "[--profile] [--decode-tokens N] [--no-decode]\n",
                 argv0);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--json")
            o.json = true;
        else if (a == "--small")
            o.small = true;
        else if (a == "--profile")
            o.profile = true;
        else if (a == "--no-decode")
            o.decode = false;
        else if (a == "--steps" && has_value)
            o.steps = std::max(1, std::atoi(argv[++i]));
        else if (a == "--warmup" && has_value)
            o.warmup = std::max(0, std::atoi(argv[++i]));
        else if (a == "--threads" && has_value)
            o.threads = std::atoi(argv[++i]);
        else if (a == "--decode-tokens" && has_value)
            o.decode_tokens = std::max(1, std::atoi(argv[++i]));
        else
            return usage(argv[0]);
    }
    moe::set_num_threads(o.threads);
    const Shape shape = reference_shape(o.small);
    const LmConfig& c = shape.cfg;
    const int64_t B = shape.B, T = c.seq_len, N = B * T, V = c.vocab_size;
    char shape_name[160];
    std::snprintf(shape_name, sizeof shape_name,
                  "d=%ld L=%ld heads=%ld E=%ld k=%ld h=%ld V=%ld T=%ld B=%ld", long(c.d_model),
                  long(c.n_layers), long(c.n_heads), long(c.moe.n_experts), long(c.moe.top_k),
                  long(c.moe.d_expert), long(V), long(T), long(B));

    TransformerLM model(c, B);
    model.init_weights(1);
    std::vector<int32_t> stream(size_t(N + 1));
    moe::Rng rng(1234);
    for (auto& t : stream) t = int32_t(rng.below(uint64_t(V)));
    RandomBatchLm trainable(model, stream.data(), stream.data() + 1, B, T);
    const auto single = moe::comm::make_single_process_comm();
    moe::train::StepRunner runner(trainable, bench_train_options(B), *single);
    int64_t next_step = 0;

    // ---- Training -----------------------------------------------------------------------
    GemmMix mix(c, N);
    const double load0 = load_avg();
    double loss = 0;
    for (int s = 0; s < o.warmup; ++s) loss = runner.run(next_step++).loss;
    mix.gflops();  // warm-up of the reference too
    std::vector<double> step_s, gemm_gf;
    for (int s = 0; s < o.steps; ++s) {
        Timer t;
        loss = runner.run(next_step++).loss;
        step_s.push_back(t.seconds());
        gemm_gf.push_back(mix.gflops());
    }
    const double load1 = load_avg();
    const Flops f = forward_flops_per_token(c, T);
    const double step_flops = 3.0 * f.total() * double(N);
    const double t_med = median(step_s), t_best = *std::min_element(step_s.begin(), step_s.end());
    const double model_gf = step_flops / t_med * 1e-9;
    const double gemm_med = median(gemm_gf);
    const double gemm_best = *std::max_element(gemm_gf.begin(), gemm_gf.end());
    Out out;
    out.json = o.json;
    out.begin();
    out.add("bench", std::string("train"));
    out.add("shape", std::string(shape_name));
    out.add("threads", moe::num_threads(), "%.0f");
    const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
    out.add("omp_wait_policy", std::string(wait_policy ? wait_policy : "default"));
    out.add("params", double(model.num_params()), "%.0f");
    out.add("steps", o.steps, "%.0f");
    out.add("step_ms", t_med * 1e3, "%.1f");
    out.add("tokens_per_s", double(N) / t_med, "%.0f");
    out.add("model_gflops", model_gf, "%.1f");
    out.add("gemm_gflops", gemm_med, "%.1f");
    out.add("model_over_gemm", model_gf / gemm_med, "%.3f");
    out.add("best_tokens_per_s", double(N) / t_best, "%.0f");
    out.add("best_model_gflops", step_flops / t_best * 1e-9, "%.1f");
    out.add("best_gemm_gflops", gemm_best, "%.1f");
    out.add("gflop_per_step", step_flops * 1e-9, "%.2f");
    out.add("loss", loss, "%.4f");
    out.add("load_before", load0, "%.2f");
    out.add("load_after", load1, "%.2f");
    out.end();

    // ---- Profile ------------------------------------------------------------------------
    // The same steps again with a PhaseProfile installed: the marks in the real code say
    // where the time goes (exclusive: nested phases are not counted twice).
    if (o.profile) {
        moe::PhaseProfile profile;
        const double pload0 = load_avg();
        Timer total;
        {
            const moe::ProfileInstall install(&profile);
            for (int s = 0; s < o.steps; ++s) runner.run(next_step++);
        }
        const double per_step = total.seconds() / o.steps;
        const double pload1 = load_avg();
        // The attention projections alone (the same products as GemmMix's first four), so
        // the attention phases split into projections and the per-head core.
        double proj_s = 0;
        for (int s = 0; s < o.steps; ++s)
            proj_s += double(c.n_layers) * GemmMix::time_of(mix.layer, 0, 4);
        proj_s /= o.steps;
        auto phase_s = [&](const char* name) { return profile.seconds(name) / o.steps; };
        out.begin();
        out.add("bench", std::string("profile"));
        out.add("step_ms", per_step * 1e3, "%.1f");
        double listed = 0;
        for (const char* p : kPhases) {
            listed += phase_s(p);
            out.add((std::string(p) + "_ms").c_str(), phase_s(p) * 1e3, "%.2f");
        }
        // Phases outside the list above (none at this shape; a new mark shows up here).
        out.add("other_phases_ms", (profile.total_seconds() / o.steps - listed) * 1e3, "%.2f");
        out.add("phases_sum_ms", profile.total_seconds() / o.steps * 1e3, "%.1f");
        out.add("attn_projection_gemms_ms", proj_s * 1e3, "%.2f");
        // Rates of the big phases in GFLOP/s of the counted FLOPs.
        const double att_s = phase_s("attention_fwd") + phase_s("attention_bwd");
        const double exp_s = phase_s("experts_fwd") + phase_s("experts_bwd");
        const double head_s = phase_s("lm_head_fwd") + phase_s("lm_head_bwd");
        out.add("attention_gflops", 3 * (f.proj + f.scores) * double(N) / att_s * 1e-9, "%.1f");
        // -1 when the projections timed alone took longer than the whole attention phases
        // (tiny shapes, noise).
        out.add("attention_core_gflops",
                att_s > proj_s ? 3 * f.scores * double(N) / (att_s - proj_s) * 1e-9 : -1.0, "%.1f");
        out.add("experts_gflops", 3 * f.experts * double(N) / exp_s * 1e-9, "%.1f");
        out.add("lm_head_gflops", 3 * f.head * double(N) / head_s * 1e-9, "%.1f");
        out.add("load_before", pload0, "%.2f");
        out.add("load_after", pload1, "%.2f");
        out.end();
    }

    // ---- Generation ---------------------------------------------------------------------
    if (o.decode) {
        const int64_t n = std::min<int64_t>(o.decode_tokens, T - 1);
        std::vector<int32_t> seq(size_t(T + 1));
        moe::Rng prng(99);
        for (auto& t : seq) t = int32_t(prng.below(uint64_t(V)));
        const double bytes = active_weight_bytes(model);
        auto report = [&](const char* mode, double tps, double load_a, double load_b,
                          double max_diff, double max_abs) {
            out.begin();
            out.add("bench", std::string("decode"));
            out.add("mode", std::string(mode));
            out.add("threads", moe::num_threads(), "%.0f");
            out.add("context", double(T), "%.0f");
            out.add("tokens", double(n), "%.0f");
            out.add("decode_tokens_per_s", tps, "%.2f");
            out.add("ms_per_token", 1e3 / tps, "%.2f");
            out.add("active_weight_mb", bytes / 1048576.0, "%.1f");
            out.add("weight_bandwidth_gbs", bytes * tps * 1e-9, "%.2f");
            if (max_abs >= 0) {
                out.add("logits_max_abs_diff", max_diff, "%.3g");
                out.add("logits_max_abs", max_abs, "%.3g");
            }
            out.add("load_before", load_a, "%.2f");
            out.add("load_after", load_b, "%.2f");
            out.end();
        };

        // No KV cache: the full forward of the prefix [0, Lc) gives the token at Lc.
        model.forward(seq.data(), nullptr, 1, T - n);  // warm-up
        double load_a = load_avg();
        Timer t;
        for (int64_t Lc = T - n + 1; Lc <= T; ++Lc) {
            model.forward(seq.data(), nullptr, 1, Lc);
            seq[size_t(Lc)] = argmax(model.logits() + (Lc - 1) * V, V);
        }
        const double tps_full = double(n) / t.seconds();
        const double load_full_a = load_a, load_full_b = load_avg();
        const std::vector<float> full(model.logits(), model.logits() + T * V);

        // TransformerLM::decode (KV cache), on the tokens the run above produced: the prompt
        // [0, T - n) untimed, the last n positions timed. A first pass warms up and compares
        // each position's logits with the full forward's.
        auto run_kv = [&](int threads) {
            moe::set_num_threads(threads);
            double max_diff = 0, max_abs = 0, tps_kv = 0;
            for (int pass = 0; pass < 2; ++pass) {
                model.start_generation(T);
                for (int64_t p = 0; p < T - n; ++p) model.decode(seq[size_t(p)]);
                load_a = load_avg();
                t.reset();
                for (int64_t p = T - n; p < T; ++p) {
                    const float* lg = model.decode(seq[size_t(p)]);
                    if (pass == 1) continue;
                    for (int64_t v = 0; v < V; ++v) {
                        const double ref = full[size_t(p * V + v)];
                        max_diff = std::max(max_diff, std::fabs(double(lg[v]) - ref));
                        max_abs = std::max(max_abs, std::fabs(ref));
                    }
                }
                tps_kv = double(n) / t.seconds();
            }
            report("kv_cache", tps_kv, load_a, load_avg(), max_diff, max_abs);
        };
        run_kv(o.threads);
        if (moe::num_threads() != 1) run_kv(1);
        moe::set_num_threads(o.threads);
        report("no_kv_cache", tps_full, load_full_a, load_full_b, 0, -1);
    }
    return 0;
}
