#include "train/lm_trainer.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/parse_number.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "core/timer.h"
#include "lm/lm_dataset.h"
#include "lm/text_corpus.h"
#include "lm/window_sampler.h"
#include "io/safetensors.h"
#include "kernels/grouped_reduce.h"
#include "lm/lm_memory.h"
#include "nn/loss.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
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

// train.threads = 0 under mpirun: the cores this rank may run on (mpirun binds a rank to
// one core when it starts 2 or fewer), shared with the other ranks on this host when it is
// not bound. All cores for every rank would oversubscribe the machine R times over.
int default_rank_threads() {
    cpu_set_t set;
    CPU_ZERO(&set);
    const int usable =
        sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : hardware_threads();
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const int on_host = local ? std::max(1, std::atoi(local)) : 1;
    return std::max(1, usable < hardware_threads() ? usable : usable / on_host);
}

// Communication since the counters were last reset, over `steps` steps.
struct CommReport {
    double bytes_per_step = 0;      // this rank
    double max_bytes_per_step = 0;  // the busiest rank
    double comm_seconds_per_step = 0, compute_seconds_per_step = 0, comm_fraction = 0;
};

// `excluded`: communication of validation and checkpoint saves in the window, which is
// not training (their compute is not counted either).
CommReport comm_report(comm::Comm& group, int64_t steps, double compute_seconds,
                       const comm::CommCounters& excluded) {
    CommReport r;
    if (group.size() == 1 || steps <= 0) return r;
    comm::CommCounters c = group.counters();  // before the all-reduce below
    c.bytes_sent -= excluded.bytes_sent;
    c.seconds -= excluded.seconds;
    int64_t bytes = c.bytes_sent;
    group.allreduce_max(&bytes, 1);
    r.bytes_per_step = double(c.bytes_sent) / double(steps);
    r.max_bytes_per_step = double(bytes) / double(steps);
    r.comm_seconds_per_step = c.seconds / double(steps);
    r.compute_seconds_per_step = compute_seconds / double(steps);
    const double total = c.seconds + compute_seconds;
    r.comm_fraction = total > 0 ? c.seconds / total : 0.0;
    return r;
}

}  // namespace

std::string checkpoint_path(const std::string& out_dir) {
    return out_dir + "/checkpoint.safetensors";
}

TrainResult train_lm(const LmTrainConfig& cfg, StartMode mode, const TrainHooks& hooks,
                     comm::Comm* comm) {
    const bool resume = mode == StartMode::resume;
    const TrainOptions& opt = cfg.train;
    // Ctrl-C / SIGTERM stop the loop between steps (see core/stop_signals.h for why no
    // handler runs on the compute threads). From the start: a signal during set-up (corpus,
    // tokenizer) stops the run after its first step, with a checkpoint.
    const StopScope stop_signal;
    std::unique_ptr<comm::Comm> single;
    if (!comm) single = comm::make_single_process_comm();
    comm::Comm& group = comm ? *comm : *single;
    const int64_t ranks = group.size(), rank = group.rank();
    set_num_threads(opt.threads > 0 || ranks == 1 ? opt.threads : default_rank_threads());
    const bool root = rank == 0;  // prints and writes files
    MOE_REQUIRE(opt.batch_size % ranks == 0, "train.batch_size = ", opt.batch_size,
                " is not divisible by the ", ranks,
                " ranks: every rank takes the same share of each batch");
    // Before anything is written, the data read, or anything sized by the config allocated.
    lm::require_lm_memory(cfg.model, opt.batch_size / ranks, /*training=*/true, "training");
    const std::string ckpt = checkpoint_path(cfg.out_dir);
    // The run directory is this run's alone from here to the end (rank 0 writes it).
    std::unique_ptr<RunDirLock> dir_lock;
    if (root) {
        dir_lock = std::make_unique<RunDirLock>(cfg.out_dir);
        prepare_run_dir(cfg.out_dir, ckpt, mode);
    } else {
        MOE_REQUIRE(!resume || std::filesystem::exists(ckpt), ckpt,
                    ": no checkpoint to resume from (every rank must see the run directory)");
    }

    // Data and tokenizer. A resumed run takes the tokenizer saved with the checkpoint, so it
    // reads exactly the tokens the interrupted run did.
    const std::string data_path = cfg.data.path.empty() ? lm::kDefaultCorpus : cfg.data.path;
    const lm::TextCorpus corpus = lm::TextCorpus::load(data_path, cfg.data.val_fraction);
    Timer tok_clock;
    // Distributed: rank 0 trains it and sends it to the others (the same result, once).
    auto make_tokenizer = [&] {
        if (resume)
            return lm::BpeTokenizer::from_json(io::SafetensorsFile(ckpt).metadata("tokenizer"),
                                                 ckpt + ": metadata 'tokenizer'");
        if (ranks == 1) return lm::train_tokenizer(corpus, cfg.model.vocab_size);
        std::string json =
            root ? lm::train_tokenizer(corpus, cfg.model.vocab_size).to_json() : "";
        int64_t size = int64_t(json.size());
        group.broadcast(&size, sizeof size, 0);
        json.resize(size_t(size));
        group.broadcast(json.data(), size, 0);
        return lm::BpeTokenizer::from_json(json);
    };
    const lm::BpeTokenizer tokenizer = make_tokenizer();
    MOE_REQUIRE(tokenizer.vocab_size() <= cfg.model.vocab_size, "the tokenizer has ",
                tokenizer.vocab_size(),
                " tokens, more than model.vocab_size = ", cfg.model.vocab_size);
    const lm::LmDataset ds = lm::LmDataset::build(corpus, tokenizer);
    const int64_t T = cfg.model.seq_len, B = opt.batch_size;
    const lm::WindowSampler train_sampler(ds.train_tokens, T, uint64_t(opt.seed),
                                            ds.train_labels);
    const lm::WindowSampler val_sampler(ds.val_tokens, T, uint64_t(opt.seed), ds.val_labels);
    const int64_t eval_count = std::min(opt.eval_windows, val_sampler.eval_windows());
    if (root)
        std::printf(
            "data: %s, %zu domains, %ld train / %ld validation bytes (every %.0fth record)\n",
            data_path.c_str(), corpus.domains.size(), long(corpus.train_bytes()),
            long(corpus.val_bytes()), 1.0 / cfg.data.val_fraction);
    if (root)
        std::printf(
            "tokens: vocabulary %ld, %ld train / %ld validation tokens (%.2f bytes/token, %.1fs)\n",
            long(tokenizer.vocab_size()), long(ds.train_tokens.size()), long(ds.val_tokens.size()),
            double(corpus.train_bytes()) / double(std::max<size_t>(1, ds.train_tokens.size())),
            tok_clock.seconds());

    // Each rank runs Bl sequences of every batch: [rank * Bl, (rank + 1) * Bl).
    const int64_t Bl = B / ranks;
    lm::TransformerLM model(cfg.model, Bl, ranks > 1 ? &group : nullptr);
    model.init_weights(uint64_t(opt.seed));
    std::vector<RowShard> shards;
    for (const lm::ShardedParam& p : model.sharded_params())
        shards.push_back({p.name, p.global_rows, p.first_row});
    // Exact sums (train.reduction_groups > 1): this rank's share of the canonical groups.
    const int64_t reduce_groups = opt.reduction_groups;
    MOE_REQUIRE(reduce_groups == 1 || reduce_groups % ranks == 0,
                "train.reduction_groups = ", reduce_groups,
                " must be a multiple of the number of ranks (", ranks, ")");
    const int64_t local_groups = reduce_groups == 1 ? 1 : reduce_groups / ranks;
    MOE_REQUIRE((Bl * T) % local_groups == 0, "train.reduction_groups = ", reduce_groups, ": the ",
                Bl * T, " tokens of a rank's batch do not split into ", local_groups, " groups");
    DataParallelGrads dp(model.grads(), shards, group, reduce_groups > 1);
    AdamW optim(model.params(),
                {float(opt.beta1), float(opt.beta2), 1e-8f, float(opt.weight_decay)});
    const LrSchedule schedule{float(opt.lr), float(opt.min_lr), opt.warmup_steps, opt.steps};
    if (root)
        std::printf(
            "model: %s, %ld parameters, %.1f MiB of activations for batch %ld x %ld, %d threads\n",
            cfg.model.ffn == "moe"
                ? (std::to_string(cfg.model.moe.n_experts) + " experts top-" +
                   std::to_string(cfg.model.moe.top_k) + " " + cfg.model.moe.router)
                      .c_str()
                : "dense",
            long(model.num_params()), model.activation_bytes() / 1048576.0, long(Bl), long(T),
            num_threads());
    if (root && ranks > 1)
        std::printf("distributed: %s; each rank runs %ld of the %ld sequences of a batch%s\n",
                    group.describe(), long(Bl), long(B),
                    shards.empty()
                        ? ""
                        : (" and " + std::to_string(cfg.model.moe.n_experts / ranks) + " of the " +
                           std::to_string(cfg.model.moe.n_experts) + " experts of each MoE layer")
                              .c_str());

    const std::vector<CheckpointGroup> groups = {
        {"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}};
    int64_t step = 0;
    if (resume) {
        const auto meta = load_checkpoint(
            ckpt, {{"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}}, {},
            shards);
        auto it = meta.find("step");
        MOE_REQUIRE(it != meta.end(), ckpt, ": checkpoint metadata has no 'step'");
        step = parse_int64(it->second, ckpt + ": metadata 'step'", 0);
        optim.set_steps(step);
        if (root) std::printf("resumed from %s at step %ld\n", ckpt.c_str(), long(step));
    }
    // Everything a save writes but the step, encoded now: a value that cannot be stored
    // (text that is not UTF-8) fails here, before training, not after the last step.
    std::map<std::string, std::string> save_meta;
    try {
        save_meta = {{"format", "moe.cpp/lm"},
                     {"format_version", std::to_string(kFormatVersion)},
                     {"config", to_json(cfg).dump()},
                     {"tokenizer", tokenizer.to_json()},
                     {"domains", nlohmann::json(ds.domains).dump()}};
    } catch (const nlohmann::json::exception& e) {
        MOE_FAIL(cfg.out_dir,
                 ": the config or the domain names cannot be stored in a checkpoint: ", e.what());
    }
    auto save = [&](int64_t at_step) {
        std::map<std::string, std::string> meta = save_meta;
        meta["step"] = std::to_string(at_step);
        save_checkpoint(ckpt, groups, meta, shards, &group);
    };

    // Files: rank 0 only (the other ranks write into a stream that goes nowhere).
    std::ofstream metrics;
    if (root) {
        metrics.open(cfg.out_dir + "/metrics.jsonl", resume ? std::ios::app : std::ios::trunc);
        MOE_REQUIRE(metrics.good(), cfg.out_dir, "/metrics.jsonl: cannot open for writing");
    }
    std::unique_ptr<TensorBoardWriter> tb;
    if (opt.tensorboard && root) tb = std::make_unique<TensorBoardWriter>(cfg.out_dir);

    // The whole batch: every rank fills it (cheap) and runs its own rows.
    std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T)), labels(size_t(B * T));
    std::vector<int32_t> eval_targets(size_t(Bl * T));
    // Validation in chunks of up to B windows; each rank takes up to Bl windows of a chunk.
    // Every rank runs a forward for every chunk (expert parallelism needs all of them), a
    // rank short of real windows repeats one with its targets masked (-1), and the mean is
    // over the real targets of all ranks.
    auto evaluate = [&]() {
        double sums[2] = {0, 0};  // [sum of cross-entropy, targets]
        for (int64_t done = 0; done < eval_count;) {
            const int64_t b = std::min(B, eval_count - done);
            val_sampler.eval_batch(done, b, eval_count, inputs.data(), targets.data(),
                                   labels.data());
            const int64_t per_rank = (b + ranks - 1) / ranks;
            const int64_t first = std::min(rank * per_rank, b - 1);
            const int64_t real = std::clamp<int64_t>(b - rank * per_rank, 0, per_rank);
            int32_t* tg = targets.data() + first * T;
            std::vector<int32_t>& masked = eval_targets;
            std::copy(tg, tg + per_rank * T, masked.begin());
            std::fill(masked.begin() + real * T, masked.begin() + per_rank * T, -1);
            lm::ForwardOptions fo;
            fo.domains = labels.data() + first * T;
            const double mean =
                model.forward(inputs.data() + first * T, masked.data(), per_rank, T, fo);
            const double n = double(nn::count_targets(masked.data(), per_rank * T));
            sums[0] += mean * n;
            sums[1] += n;
            done += b;
        }
        group.allreduce_sum(sums, 2);
        return sums[0] / std::max(1.0, sums[1]);
    };

    const bool tty = isatty(STDOUT_FILENO);
    TrainResult result;
    Timer clock, since_log;
    int64_t tokens_since_log = 0, last_log_step = step;
    double compute_seconds = 0;  // since the last log, this rank's step time outside comm
    group.reset_counters();
    comm::CommCounters not_training;  // validation and saves since the last log
    // Runs f and books its communication under not_training.
    auto outside_training = [&](auto&& f) {
        const comm::CommCounters before = group.counters();
        f();
        not_training.bytes_sent += group.counters().bytes_sent - before.bytes_sent;
        not_training.seconds += group.counters().seconds - before.seconds;
    };
    const int64_t first_step = step;
    while (step < opt.steps) {
        train_sampler.train_batch(step, B, inputs.data(), targets.data(), labels.data());
        model.grads().zero();
        Timer step_clock;
        const double comm_before = group.counters().seconds;
        const size_t mine = size_t(rank * Bl * T), n_mine = size_t(Bl * T);
        lm::ForwardOptions fo;
        fo.domains = labels.data() + mine;
        fo.training = true;
        fo.seed = uint64_t(opt.seed) * 0x9e3779b97f4a7c15ull + uint64_t(step);
        // This rank's share of the batch's targets, so the ranks' losses add up.
        fo.loss_share = ranks == 1
                            ? 1.0
                            : double(nn::count_targets(targets.data() + mine, int64_t(n_mine))) /
                                  std::max(1.0, double(nn::count_targets(targets.data(), B * T)));
        double loss = model.forward(inputs.data() + mine, targets.data() + mine, Bl, T, fo);
        if (ranks > 1) group.allreduce_sum(&loss, 1);
        const double router_loss = model.router_loss();  // the whole batch's already
        MOE_REQUIRE(std::isfinite(loss) && std::isfinite(router_loss),
                    "training diverged: loss is ", loss, " (router loss ", router_loss,
                    ") at step ", step, " (try a lower train.lr)");
        {
            const kernels::ReductionGroups canonical(local_groups);
            model.backward();
        }
        dp.sum_replicated();
        const double grad_norm = dp.clip_global_norm(opt.grad_clip);
        const float lr = schedule.at(step);
        optim.step(model.params(), model.grads(), lr);
        model.after_step();
        ++step;
        tokens_since_log += B * T;
        compute_seconds += step_clock.seconds() - (group.counters().seconds - comm_before);
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
            const CommReport cr =
                comm_report(group, step - last_log_step, compute_seconds, not_training);
            if (ranks > 1) {
                char buf[96];
                std::snprintf(buf, sizeof buf, " | comm %.2f MB/step/rank, %.0f%% of time",
                              cr.max_bytes_per_step / 1e6, 100 * cr.comm_fraction);
                moe_part += buf;
            }
            if (root) {
                std::printf("%sstep %6ld/%ld | loss %.4f%s | lr %.2e | %.0f tok/s | ETA %s%s",
                            tty ? "\r" : "", long(step), long(opt.steps), loss, moe_part.c_str(),
                            double(lr), tps, format_duration(eta).c_str(), tty ? "   " : "\n");
                std::fflush(stdout);
            }
            nlohmann::json rec = {
                {"step", step}, {"loss", loss},           {"router_loss", router_loss},
                {"lr", lr},     {"grad_norm", grad_norm}, {"tokens_per_s", tps}};
            if (rs.moe_layers > 0) {
                rec["load_imbalance"] = rs.load_imbalance;
                rec["dropped_fraction"] = rs.dropped;
                char hash[24];
                std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)rs.counts_hash);
                rec["routing_hash"] = hash;
            }
            if (ranks > 1) {
                rec["ranks"] = ranks;
                rec["comm_bytes_per_step"] = cr.bytes_per_step;          // rank 0
                rec["comm_bytes_per_step_max"] = cr.max_bytes_per_step;  // busiest rank
                rec["comm_seconds_per_step"] = cr.comm_seconds_per_step;
                rec["compute_seconds_per_step"] = cr.compute_seconds_per_step;
                rec["comm_fraction"] = cr.comm_fraction;
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
            compute_seconds = 0;
            last_log_step = step;
            group.reset_counters();
            not_training = {};
        }
        const bool last = step == opt.steps;
        if ((opt.eval_every > 0 && step % opt.eval_every == 0) || last) {
            outside_training([&] { result.val_loss = evaluate(); });
            const RoutingSummary rs = summarize_routing(model);
            std::string acc;
            if (rs.assign_accuracy >= 0)
                acc = " | gate accuracy " + std::to_string(rs.assign_accuracy).substr(0, 5);
            if (root)
                std::printf(
                    "%sstep %6ld/%ld | validation loss %.4f | perplexity %.2f%s | elapsed %s\n",
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
        // Every rank stops at the same step (a signal may reach them at different times).
        int64_t stop = stop_signal.requested() || (hook_stop && !last) ? 1 : 0;
        if (ranks > 1) group.allreduce_max(&stop, 1);
        if (stop) {
            result.interrupted = true;
            break;
        }
        if (opt.checkpoint_every > 0 && step % opt.checkpoint_every == 0 && !last)
            outside_training([&] { save(step); });
    }
    save(step);
    result.steps_done = step;
    result.checkpoint_path = ckpt;
    if (root)
        std::printf("%scheckpoint: %s (step %ld)\n", result.interrupted ? "\ninterrupted: " : "",
                    ckpt.c_str(), long(step));
    return result;
}

RoutingSummary summarize_routing(const lm::TransformerLM& model) {
    RoutingSummary r;
    double acc = 0;
    int acc_layers = 0;
    r.counts_hash = 1469598103934665603ull;
    for (int64_t l = 0; l < model.config().n_layers; ++l) {
        const auto* m = model.moe_layer(l);
        if (!m) continue;
        ++r.moe_layers;
        r.load_imbalance += m->stats().load_imbalance;
        r.dropped += m->stats().dropped_fraction;
        for (int64_t c : m->stats().tokens_per_expert)
            r.counts_hash = (r.counts_hash ^ uint64_t(c)) * 1099511628211ull;
        if (m->stats().losses.assign_accuracy >= 0)
            acc += m->stats().losses.assign_accuracy, ++acc_layers;
    }
    if (r.moe_layers > 0) r.load_imbalance /= r.moe_layers, r.dropped /= r.moe_layers;
    if (acc_layers > 0) r.assign_accuracy = acc / acc_layers;
    return r;
}

}  // namespace moe::train
