#include "train/trainer.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/parse_number.h"
#include "core/profile.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/grouped_reduce.h"
#include "train/tensorboard.h"

namespace moe::train {

namespace {

std::string format_duration(double s) {
    const int64_t t = int64_t(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", long(t / 60), long(t % 60));
    return buf;
}

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

// Exact sums (train.reduction_groups > 1): this rank's share of the canonical groups.
int64_t local_reduction_groups(const TrainOptions& opt, int64_t ranks, int64_t items_per_rank) {
    const int64_t groups = opt.reduction_groups;
    MOE_REQUIRE(groups == 1 || groups % ranks == 0, "train.reduction_groups = ", groups,
                " must be a multiple of the number of ranks (", ranks, ")");
    const int64_t local = groups == 1 ? 1 : groups / ranks;
    MOE_REQUIRE(items_per_rank % local == 0, "train.reduction_groups = ", groups, ": the ",
                items_per_rank, " items of a rank's batch do not split into ", local, " groups");
    return local;
}

}  // namespace

std::string checkpoint_path(const std::string& out_dir) {
    return out_dir + "/checkpoint.safetensors";
}

// ---- StepRunner ---------------------------------------------------------------------------

StepRunner::StepRunner(Trainable& model, const TrainOptions& opt, comm::Comm& group)
    : model_(model),
      opt_(opt),
      group_(group),
      shards_(model.sharded_params()),
      local_groups_(
          local_reduction_groups(opt, group.size(), model.items_per_batch() / group.size())),
      dp_(model.grads(), shards_, group, opt.reduction_groups > 1),
      optim_(model.params(), {float(opt.beta1), float(opt.beta2), 1e-8f, float(opt.weight_decay)}),
      schedule_{float(opt.lr), float(opt.min_lr), opt.warmup_steps, opt.steps} {}

StepOutcome StepRunner::run(int64_t step) {
    StepOutcome out;
    {
        MOE_PROFILE_SCOPE("zero_grads");
        model_.grads().zero();
    }
    out.loss = model_.train_forward(step);
    if (group_.size() > 1) group_.allreduce_sum(&out.loss, 1);
    out.aux_loss = model_.aux_loss();  // the whole batch's already
    MOE_REQUIRE(std::isfinite(out.loss) && std::isfinite(out.aux_loss),
                "training diverged: loss is ", out.loss, " (router loss ", out.aux_loss,
                ") at step ", step, " (try a lower train.lr)");
    {
        const kernels::ReductionGroups canonical(local_groups_);
        model_.backward();
    }
    {
        MOE_PROFILE_SCOPE("grad_sum");
        dp_.sum_replicated();
    }
    {
        MOE_PROFILE_SCOPE("clip");
        out.grad_norm = dp_.clip_global_norm(opt_.grad_clip);
    }
    out.lr = schedule_.at(step);
    {
        MOE_PROFILE_SCOPE("adamw");
        optim_.step(model_.params(), model_.grads(), out.lr, model_.frozen());
    }
    model_.after_step();
    return out;
}

// ---- Trainer ------------------------------------------------------------------------------

Trainer::Trainer(const TrainOptions& opt, std::string out_dir, StartMode mode, comm::Comm* comm)
    : opt_(opt), out_dir_(std::move(out_dir)), ckpt_(checkpoint_path(out_dir_)), mode_(mode) {
    if (!comm) single_ = comm::make_single_process_comm();
    group_ = comm ? comm : single_.get();
    const int64_t ranks = group_->size();
    set_num_threads(opt_.threads > 0 || ranks == 1 ? opt_.threads : default_rank_threads());
    MOE_REQUIRE(opt_.batch_size % ranks == 0, "train.batch_size = ", opt_.batch_size,
                " is not divisible by the ", ranks,
                " ranks: every rank takes the same share of each batch");
    // The run directory is this run's alone from here to the end (rank 0 writes it).
    if (root()) {
        dir_lock_ = std::make_unique<RunDirLock>(out_dir_);
        prepare_run_dir(out_dir_, ckpt_, mode_);
    } else {
        MOE_REQUIRE(!resuming() || std::filesystem::exists(ckpt_), ckpt_,
                    ": no checkpoint to resume from (every rank must see the run directory)");
    }
}

Trainer::~Trainer() = default;

TrainResult Trainer::run(Trainable& model, const std::map<std::string, std::string>& metadata,
                         const TrainHooks& hooks) {
    comm::Comm& group = *group_;
    const int64_t ranks = group.size();
    const bool is_root = root();
    StepRunner runner(model, opt_, group);
    const std::vector<RowShard> shards = model.sharded_params();
    AdamW& optim = runner.optimizer();
    const std::vector<CheckpointGroup> groups = {
        {"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}};

    int64_t step = 0;
    if (resuming()) {
        const auto meta = load_checkpoint(
            ckpt_, {{"", &model.params()}, {"optim.m.", &optim.m()}, {"optim.v.", &optim.v()}}, {},
            shards);
        auto it = meta.find("step");
        MOE_REQUIRE(it != meta.end(), ckpt_, ": checkpoint metadata has no 'step'");
        step = parse_int64(it->second, ckpt_ + ": metadata 'step'", 0);
        optim.set_steps(step);
        if (is_root) std::printf("resumed from %s at step %ld\n", ckpt_.c_str(), long(step));
    }
    // Everything a save writes but the step, checked now: a value that cannot be stored
    // (text that is not UTF-8) fails here, before training, not after the last step.
    for (const auto& [key, value] : metadata) {
        try {
            (void)nlohmann::json(value).dump();
        } catch (const nlohmann::json::exception& e) {
            MOE_FAIL(out_dir_, ": checkpoint metadata '", key, "' cannot be stored: ", e.what());
        }
    }
    auto save = [&](int64_t at_step) {
        std::map<std::string, std::string> meta = metadata;
        meta["step"] = std::to_string(at_step);
        save_checkpoint(ckpt_, groups, meta, shards, &group);
    };

    // Files: rank 0 only (the other ranks write into a stream that goes nowhere).
    std::ofstream metrics;
    if (is_root) {
        metrics.open(out_dir_ + "/metrics.jsonl", resuming() ? std::ios::app : std::ios::trunc);
        MOE_REQUIRE(metrics.good(), out_dir_, "/metrics.jsonl: cannot open for writing");
    }
    std::unique_ptr<TensorBoardWriter> tb;
    if (opt_.tensorboard && is_root) tb = std::make_unique<TensorBoardWriter>(out_dir_);

    const bool tty = isatty(STDOUT_FILENO);
    const int64_t items = model.items_per_batch();
    const std::string speed_key = std::string(model.items_name()) + "_per_s";
    TrainResult result;
    Timer clock, since_log;
    int64_t items_since_log = 0, last_log_step = step;
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
    while (step < opt_.steps) {
        Timer step_clock;
        const double comm_before = group.counters().seconds;
        const StepOutcome so = runner.run(step);
        ++step;
        items_since_log += items;
        compute_seconds += step_clock.seconds() - (group.counters().seconds - comm_before);
        if (step == first_step + 1) result.first_loss = so.loss;
        result.last_loss = so.loss;

        if (step % opt_.log_every == 0 || step == opt_.steps) {
            StepReport report;
            model.report_step(report);
            const double speed = double(items_since_log) / std::max(1e-9, since_log.seconds());
            const double eta = double(opt_.steps - step) * double(items) / speed;
            std::string extra = report.progress;
            const CommReport cr =
                comm_report(group, step - last_log_step, compute_seconds, not_training);
            if (ranks > 1) {
                char buf[96];
                std::snprintf(buf, sizeof buf, " | comm %.2f MB/step/rank, %.0f%% of time",
                              cr.max_bytes_per_step / 1e6, 100 * cr.comm_fraction);
                extra += buf;
            }
            if (is_root) {
                std::printf("%sstep %6ld/%ld | loss %.4f%s | lr %.2e | %.0f %s/s | ETA %s%s",
                            tty ? "\r" : "", long(step), long(opt_.steps), so.loss, extra.c_str(),
                            double(so.lr), speed, model.item_unit(), format_duration(eta).c_str(),
                            tty ? "   " : "\n");
                std::fflush(stdout);
            }
            nlohmann::json rec = {{"step", step},     {"loss", so.loss},
                                  {"lr", so.lr},      {"grad_norm", so.grad_norm},
                                  {speed_key, speed}, {"router_loss", so.aux_loss}};
            for (const auto& [k, v] : report.scalars) rec[k] = v;
            for (const auto& [k, v] : report.strings) rec[k] = v;
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
                tb->add_scalar("train/loss", so.loss, step);
                tb->add_scalar("train/lr", so.lr, step);
                tb->add_scalar("train/" + speed_key, speed, step);
                for (const auto& [k, v] : report.scalars) tb->add_scalar("train/" + k, v, step);
                tb->flush();
            }
            since_log.reset();
            items_since_log = 0;
            compute_seconds = 0;
            last_log_step = step;
            group.reset_counters();
            not_training = {};
        }
        const bool last = step == opt_.steps;
        if ((opt_.eval_every > 0 && step % opt_.eval_every == 0) || last) {
            EvalReport ev;
            outside_training([&] { ev = model.evaluate(); });
            MOE_CHECK(!ev.scalars.empty() && ev.scalars[0].first == "loss",
                      "Trainable::evaluate must report \"loss\" first");
            result.val_loss = ev.scalars[0].second;
            if (is_root)
                std::printf("%sstep %6ld/%ld | %s | elapsed %s\n", tty ? "\n" : "", long(step),
                            long(opt_.steps), ev.progress.c_str(),
                            format_duration(clock.seconds()).c_str());
            nlohmann::json rec = {{"step", step}};
            for (const auto& [k, v] : ev.scalars) rec["val_" + k] = v;
            metrics << rec.dump() << '\n';
            metrics.flush();
            if (tb) {
                for (const auto& [k, v] : ev.scalars) tb->add_scalar("val/" + k, v, step);
                tb->flush();
            }
        }
        const bool hook_stop = hooks.after_step && !hooks.after_step(step, so.loss);
        // Every rank stops at the same step (a signal may reach them at different times).
        int64_t stop = stop_signal_.requested() || (hook_stop && !last) ? 1 : 0;
        if (ranks > 1) group.allreduce_max(&stop, 1);
        if (stop) {
            result.interrupted = true;
            break;
        }
        if (opt_.checkpoint_every > 0 && step % opt_.checkpoint_every == 0 && !last)
            outside_training([&] { save(step); });
    }
    save(step);
    result.steps_done = step;
    result.checkpoint_path = ckpt_;
    if (is_root)
        std::printf("%scheckpoint: %s (step %ld)\n", result.interrupted ? "\ninterrupted: " : "",
                    ckpt_.c_str(), long(step));
    return result;
}

}  // namespace moe::train
