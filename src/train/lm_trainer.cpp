#include "train/lm_trainer.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/threads.h"
#include "core/timer.h"
#include "data/text_corpus.h"
#include "data/window_sampler.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

namespace moe::train {

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

// Installs SIGINT/SIGTERM handlers for the scope of a run and restores the old ones.
struct SignalScope {
    struct sigaction old_int {}, old_term {};
    SignalScope() {
        g_stop.store(false);
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    ~SignalScope() {
        sigaction(SIGINT, &old_int, nullptr);
        sigaction(SIGTERM, &old_term, nullptr);
    }
};

std::string format_duration(double s) {
    const int64_t t = int64_t(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", long(t / 60), long(t % 60));
    return buf;
}

const int kFormatVersion = 1;

}  // namespace

std::string checkpoint_path(const std::string& out_dir) { return out_dir + "/checkpoint.safetensors"; }

TrainResult train_lm(const LmTrainConfig& cfg, bool resume, const TrainHooks& hooks) {
    const TrainOptions& opt = cfg.train;
    set_num_threads(int(opt.threads));
    std::filesystem::create_directories(cfg.out_dir);
    const std::string ckpt = checkpoint_path(cfg.out_dir);

    // Data: byte-level tokens of every domain, concatenated.
    const std::string data_path = cfg.data.path.empty() ? data::kDefaultCorpus : cfg.data.path;
    const data::TextCorpus corpus = data::TextCorpus::load(data_path, cfg.data.val_fraction);
    std::string train_text, val_text;
    for (const auto& d : corpus.domains) train_text += d.train, val_text += d.val;
    const std::vector<int32_t> train_tokens = data::bytes_to_tokens(train_text);
    const std::vector<int32_t> val_tokens = data::bytes_to_tokens(val_text);
    MOE_REQUIRE(cfg.model.vocab_size >= 256, "model.vocab_size must be >= 256 for byte-level text, got ",
                cfg.model.vocab_size);
    const int64_t T = cfg.model.seq_len, B = opt.batch_size;
    const data::WindowSampler train_sampler(train_tokens, T, uint64_t(opt.seed));
    const data::WindowSampler val_sampler(val_tokens, T, uint64_t(opt.seed));
    std::printf("data: %s, %zu domains, %ld train bytes, %ld validation bytes (every %.0fth record)\n",
                data_path.c_str(), corpus.domains.size(), long(corpus.train_bytes()),
                long(corpus.val_bytes()), 1.0 / cfg.data.val_fraction);

    models::TransformerLM model(cfg.model, B);
    model.init_weights(uint64_t(opt.seed));
    AdamW optim(model.params(), {float(opt.beta1), float(opt.beta2), 1e-8f, float(opt.weight_decay)});
    const LrSchedule schedule{float(opt.lr), float(opt.min_lr), opt.warmup_steps, opt.steps};
    std::printf("model: %ld parameters, %.1f MiB of activations for batch %ld x %ld, %d threads\n",
                long(model.num_params()), model.activation_bytes() / 1048576.0, long(B), long(T),
                num_threads());

    const std::vector<CheckpointGroup> groups = {
        {"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}};
    const std::vector<CheckpointTarget> targets_to_load = {
        {"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}};
    int64_t step = 0;
    if (resume) {
        MOE_REQUIRE(std::filesystem::exists(ckpt), ckpt, ": no checkpoint to resume from");
        const auto meta = load_checkpoint(ckpt, targets_to_load);
        auto it = meta.find("step");
        MOE_REQUIRE(it != meta.end(), ckpt, ": checkpoint metadata has no 'step'");
        step = std::stoll(it->second);
        optim.set_steps(step);
        std::printf("resumed from %s at step %ld\n", ckpt.c_str(), long(step));
    }
    auto save = [&](int64_t at_step) {
        const std::map<std::string, std::string> meta = {
            {"format", "moe.cpp/lm"},
            {"format_version", std::to_string(kFormatVersion)},
            {"config", to_json(cfg).dump()},
            {"tokenizer", "bytes"},
            {"step", std::to_string(at_step)}};
        save_checkpoint(ckpt, groups, meta);
    };

    std::ofstream metrics(cfg.out_dir + "/metrics.jsonl", resume ? std::ios::app : std::ios::trunc);
    MOE_REQUIRE(metrics.good(), cfg.out_dir, "/metrics.jsonl: cannot open for writing");

    std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T));
    auto evaluate = [&]() {
        const int64_t windows = std::min(opt.eval_windows, val_sampler.eval_windows());
        double total = 0;
        int64_t done = 0;
        while (done < windows) {
            const int64_t b = std::min(B, windows - done);
            val_sampler.eval_batch(done, b, inputs.data(), targets.data());
            total += model.forward(inputs.data(), targets.data(), b, T) * double(b);
            done += b;
        }
        return total / double(windows);
    };

    SignalScope signals;
    const bool tty = isatty(STDOUT_FILENO);
    TrainResult result;
    Timer clock, since_log;
    int64_t tokens_since_log = 0;
    const int64_t first_step = step;
    while (step < opt.steps) {
        train_sampler.train_batch(step, B, inputs.data(), targets.data());
        model.grads().zero();
        const double loss = model.forward(inputs.data(), targets.data(), B, T);
        MOE_REQUIRE(std::isfinite(loss), "training diverged: loss is ", loss, " at step ", step,
                    " (try a lower train.lr)");
        model.backward();
        const double grad_norm = clip_grad_norm(model.grads(), opt.grad_clip);
        const float lr = schedule.at(step);
        optim.step(model.params(), model.grads(), lr);
        ++step;
        tokens_since_log += B * T;
        if (step == first_step + 1) result.first_loss = loss;
        result.last_loss = loss;

        if (step % opt.log_every == 0 || step == opt.steps) {
            const double tps = tokens_since_log / std::max(1e-9, since_log.seconds());
            const double eta = double(opt.steps - step) * double(B * T) / tps;
            std::printf("%sstep %6ld/%ld | loss %.4f | lr %.2e | grad norm %.2f | %.0f tok/s | ETA %s%s",
                        tty ? "\r" : "", long(step), long(opt.steps), loss, double(lr), grad_norm,
                        tps, format_duration(eta).c_str(), tty ? "   " : "\n");
            std::fflush(stdout);
            metrics << nlohmann::json{{"step", step}, {"loss", loss}, {"lr", lr},
                                      {"grad_norm", grad_norm}, {"tokens_per_s", tps}}
                           .dump()
                    << '\n';
            metrics.flush();
            since_log.reset();
            tokens_since_log = 0;
        }
        const bool last = step == opt.steps;
        if ((opt.eval_every > 0 && step % opt.eval_every == 0) || last) {
            result.val_loss = evaluate();
            std::printf("%sstep %6ld/%ld | validation loss %.4f | %.2f bits/byte | elapsed %s\n",
                        tty ? "\n" : "", long(step), long(opt.steps), result.val_loss,
                        result.val_loss / std::log(2.0), format_duration(clock.seconds()).c_str());
            metrics << nlohmann::json{{"step", step}, {"val_loss", result.val_loss}}.dump() << '\n';
            metrics.flush();
        }
        const bool hook_stop = hooks.after_step && !hooks.after_step(step, loss);
        if (g_stop.load() || (hook_stop && !last)) {
            result.interrupted = true;
            break;
        }
        if (opt.checkpoint_every > 0 && step % opt.checkpoint_every == 0 && !last) save(step);
    }
    save(step);
    result.steps_done = step;
    result.checkpoint_path = ckpt;
    std::printf("%scheckpoint: %s (step %ld)\n", result.interrupted ? "\ninterrupted: " : "",
                ckpt.c_str(), long(step));
    return result;
}

}  // namespace moe::train
