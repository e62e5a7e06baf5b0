#include "train/lm_trainer.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/stop_signals.h"
#include "core/threads.h"
#include "core/timer.h"
#include "data/lm_dataset.h"
#include "data/text_corpus.h"
#include "data/window_sampler.h"
#include "io/safetensors.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/tensorboard.h"

namespace moe::train {

namespace {

std::string format_duration(double s) {
    const int64_t t = int64_t(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", long(t / 60), long(t % 60));
    return buf;
}

const int kFormatVersion = 1;

}  // namespace

std::string checkpoint_path(const std::string& out_dir) {
    return out_dir + "/checkpoint.safetensors";
}

TrainResult train_lm(const LmTrainConfig& cfg, bool resume, const TrainHooks& hooks) {
    const TrainOptions& opt = cfg.train;
    set_num_threads(int(opt.threads));
    std::filesystem::create_directories(cfg.out_dir);
    const std::string ckpt = checkpoint_path(cfg.out_dir);
    MOE_REQUIRE(!resume || std::filesystem::exists(ckpt), ckpt, ": no checkpoint to resume from");

    // Data and tokenizer. A resumed run takes the tokenizer saved with the checkpoint, so it
    // reads exactly the tokens the interrupted run did.
    const std::string data_path = cfg.data.path.empty() ? data::kDefaultCorpus : cfg.data.path;
    const data::TextCorpus corpus = data::TextCorpus::load(data_path, cfg.data.val_fraction);
    Timer tok_clock;
    const data::BpeTokenizer tokenizer =
        resume ? data::BpeTokenizer::from_json(io::SafetensorsFile(ckpt).metadata("tokenizer"))
               : data::train_tokenizer(corpus, cfg.model.vocab_size);
    MOE_REQUIRE(tokenizer.vocab_size() <= cfg.model.vocab_size, "the tokenizer has ",
                tokenizer.vocab_size(),
                " tokens, more than model.vocab_size = ", cfg.model.vocab_size);
    const data::LmDataset ds = data::LmDataset::build(corpus, tokenizer);
    const int64_t T = cfg.model.seq_len, B = opt.batch_size;
    const data::WindowSampler train_sampler(ds.train_tokens, T, uint64_t(opt.seed),
                                            ds.train_labels);
    const data::WindowSampler val_sampler(ds.val_tokens, T, uint64_t(opt.seed), ds.val_labels);
    const int64_t eval_count = std::min(opt.eval_windows, val_sampler.eval_windows());
    std::printf("data: %s, %zu domains, %ld train / %ld validation bytes (every %.0fth record)\n",
                data_path.c_str(), corpus.domains.size(), long(corpus.train_bytes()),
                long(corpus.val_bytes()), 1.0 / cfg.data.val_fraction);
    std::printf(
        "tokens: vocabulary %ld, %ld train / %ld validation tokens (%.2f bytes/token, %.1fs)\n",
        long(tokenizer.vocab_size()), long(ds.train_tokens.size()), long(ds.val_tokens.size()),
        double(corpus.train_bytes()) / double(std::max<size_t>(1, ds.train_tokens.size())),
        tok_clock.seconds());

    models::TransformerLM model(cfg.model, B);
    model.init_weights(uint64_t(opt.seed));
    AdamW optim(model.params(),
                {float(opt.beta1), float(opt.beta2), 1e-8f, float(opt.weight_decay)});
    const LrSchedule schedule{float(opt.lr), float(opt.min_lr), opt.warmup_steps, opt.steps};
    std::printf(
        "model: %s, %ld parameters, %.1f MiB of activations for batch %ld x %ld, %d threads\n",
        cfg.model.ffn == "moe" ? (std::to_string(cfg.model.moe.n_experts) + " experts top-" +
                                  std::to_string(cfg.model.moe.top_k) + " " + cfg.model.moe.router)
                                     .c_str()
                               : "dense",
        long(model.num_params()), model.activation_bytes() / 1048576.0, long(B), long(T),
        num_threads());

    const std::vector<CheckpointGroup> groups = {
        {"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}};
    int64_t step = 0;
    if (resume) {
        const auto meta = load_checkpoint(
            ckpt, {{"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}});
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
            {"tokenizer", tokenizer.to_json()},
            {"domains", nlohmann::json(ds.domains).dump()},
            {"step", std::to_string(at_step)}};
        save_checkpoint(ckpt, groups, meta);
    };

    std::ofstream metrics(cfg.out_dir + "/metrics.jsonl", resume ? std::ios::app : std::ios::trunc);
    MOE_REQUIRE(metrics.good(), cfg.out_dir, "/metrics.jsonl: cannot open for writing");
    std::unique_ptr<TensorBoardWriter> tb;
    if (opt.tensorboard) tb = std::make_unique<TensorBoardWriter>(cfg.out_dir);

    std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T)), labels(size_t(B * T));
    auto evaluate = [&]() {
        double total = 0;
        for (int64_t done = 0; done < eval_count;) {
            const int64_t b = std::min(B, eval_count - done);
            val_sampler.eval_batch(done, b, eval_count, inputs.data(), targets.data(),
                                   labels.data());
            models::ForwardOptions fo;
            fo.domains = labels.data();
            total += model.forward(inputs.data(), targets.data(), b, T, fo) * double(b);
            done += b;
        }
        return total / double(eval_count);
    };

    // Ctrl-C / SIGTERM stop the loop between steps (see core/stop_signals.h for why no
    // handler runs on the compute threads).
    const StopScope stop_signal;
    const bool tty = isatty(STDOUT_FILENO);
    TrainResult result;
    Timer clock, since_log;
    int64_t tokens_since_log = 0;
    const int64_t first_step = step;
    while (step < opt.steps) {
        train_sampler.train_batch(step, B, inputs.data(), targets.data(), labels.data());
        model.grads().zero();
        models::ForwardOptions fo;
        fo.domains = labels.data();
        fo.training = true;
        fo.seed = uint64_t(opt.seed) * 0x9e3779b97f4a7c15ull + uint64_t(step);
        const double loss = model.forward(inputs.data(), targets.data(), B, T, fo);
        const double router_loss = model.router_loss();
        MOE_REQUIRE(std::isfinite(loss) && std::isfinite(router_loss),
                    "training diverged: loss is ", loss, " (router loss ", router_loss,
                    ") at step ", step, " (try a lower train.lr)");
        model.backward();
        const double grad_norm = clip_grad_norm(model.grads(), opt.grad_clip);
        const float lr = schedule.at(step);
        optim.step(model.params(), model.grads(), lr);
        model.after_step();
        ++step;
        tokens_since_log += B * T;
        if (step == first_step + 1) result.first_loss = loss;
        result.last_loss = loss;

        if (step % opt.log_every == 0 || step == opt.steps) {
            const RoutingSummary rs = summarize_routing(model);
            const double tps = tokens_since_log / std::max(1e-9, since_log.seconds());
            const double eta = double(opt.steps - step) * double(B * T) / tps;
            std::string moe_part;
            if (rs.moe_layers > 0) {
                char buf[96];
                std::snprintf(
                    buf, sizeof buf, " | router %.3f | load max/mean %.2f%s", router_loss,
                    rs.load_imbalance,
                    rs.dropped > 0
                        ? (" | dropped " + std::to_string(int(rs.dropped * 100)) + "%").c_str()
                        : "");
                moe_part = buf;
            }
            std::printf("%sstep %6ld/%ld | loss %.4f%s | lr %.2e | %.0f tok/s | ETA %s%s",
                        tty ? "\r" : "", long(step), long(opt.steps), loss, moe_part.c_str(),
                        double(lr), tps, format_duration(eta).c_str(), tty ? "   " : "\n");
            std::fflush(stdout);
            nlohmann::json rec = {
                {"step", step}, {"loss", loss},           {"router_loss", router_loss},
                {"lr", lr},     {"grad_norm", grad_norm}, {"tokens_per_s", tps}};
            if (rs.moe_layers > 0) {
                rec["load_imbalance"] = rs.load_imbalance;
                rec["dropped_fraction"] = rs.dropped;
            }
            metrics << rec.dump() << '\n';
            metrics.flush();
            if (tb) {
                tb->add_scalar("train/loss", loss, step);
                tb->add_scalar("train/lr", lr, step);
                tb->add_scalar("train/tokens_per_s", tps, step);
                if (rs.moe_layers > 0) {
                    tb->add_scalar("train/router_loss", router_loss, step);
                    tb->add_scalar("train/load_imbalance", rs.load_imbalance, step);
                    tb->add_scalar("train/dropped_fraction", rs.dropped, step);
                }
                tb->flush();
            }
            since_log.reset();
            tokens_since_log = 0;
        }
        const bool last = step == opt.steps;
        if ((opt.eval_every > 0 && step % opt.eval_every == 0) || last) {
            result.val_loss = evaluate();
            const RoutingSummary rs = summarize_routing(model);
            std::string acc;
            if (rs.assign_accuracy >= 0)
                acc = " | gate accuracy " + std::to_string(rs.assign_accuracy).substr(0, 5);
            std::printf("%sstep %6ld/%ld | validation loss %.4f | perplexity %.2f%s | elapsed %s\n",
                        tty ? "\n" : "", long(step), long(opt.steps), result.val_loss,
                        std::exp(result.val_loss), acc.c_str(),
                        format_duration(clock.seconds()).c_str());
            nlohmann::json rec = {{"step", step}, {"val_loss", result.val_loss}};
            if (rs.assign_accuracy >= 0) rec["val_gate_accuracy"] = rs.assign_accuracy;
            metrics << rec.dump() << '\n';
            metrics.flush();
            if (tb) {
                tb->add_scalar("val/loss", result.val_loss, step);
                if (rs.assign_accuracy >= 0)
                    tb->add_scalar("val/gate_accuracy", rs.assign_accuracy, step);
                tb->flush();
            }
        }
        const bool hook_stop = hooks.after_step && !hooks.after_step(step, loss);
        if (stop_signal.requested() || (hook_stop && !last)) {
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

RoutingSummary summarize_routing(const models::TransformerLM& model) {
    RoutingSummary r;
    double acc = 0;
    int acc_layers = 0;
    for (int64_t l = 0; l < model.config().n_layers; ++l) {
        const auto* m = model.moe_layer(l);
        if (!m) continue;
        ++r.moe_layers;
        r.load_imbalance += m->stats().load_imbalance;
        r.dropped += m->stats().dropped_fraction;
        if (m->stats().losses.assign_accuracy >= 0)
            acc += m->stats().losses.assign_accuracy, ++acc_layers;
    }
    if (r.moe_layers > 0) r.load_imbalance /= r.moe_layers, r.dropped /= r.moe_layers;
    if (acc_layers > 0) r.assign_accuracy = acc / acc_layers;
    return r;
}

}  // namespace moe::train
