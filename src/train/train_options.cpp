#include "train/train_options.h"

#include "core/check.h"

namespace moe::train {

TrainOptions read_train_options(io::Config& cfg) {
    TrainOptions t;
    t.steps = cfg.get<int64_t>("train.steps", t.steps);
    t.batch_size = cfg.get<int64_t>("train.batch_size", t.batch_size);
    t.lr = cfg.get<double>("train.lr", t.lr);
    t.min_lr = cfg.get<double>("train.min_lr", t.min_lr);
    t.warmup_steps = cfg.get<int64_t>("train.warmup_steps", t.warmup_steps);
    t.weight_decay = cfg.get<double>("train.weight_decay", t.weight_decay);
    t.beta1 = cfg.get<double>("train.beta1", t.beta1);
    t.beta2 = cfg.get<double>("train.beta2", t.beta2);
    t.grad_clip = cfg.get<double>("train.grad_clip", t.grad_clip);
    t.seed = cfg.get<int64_t>("train.seed", t.seed);
    t.threads = cfg.get<int64_t>("train.threads", t.threads);
    t.log_every = cfg.get<int64_t>("train.log_every", t.log_every);
    t.eval_every = cfg.get<int64_t>("train.eval_every", t.eval_every);
    t.eval_windows = cfg.get<int64_t>("train.eval_windows", t.eval_windows);
    t.checkpoint_every = cfg.get<int64_t>("train.checkpoint_every", t.checkpoint_every);
    t.tensorboard = cfg.get<bool>("train.tensorboard", t.tensorboard);
    t.reduction_groups = cfg.get<int64_t>("train.reduction_groups", t.reduction_groups);
    return t;
}

void check_train_options(const TrainOptions& t, const std::string& src) {
    MOE_REQUIRE(t.steps > 0, src, ": train.steps must be > 0, got ", t.steps);
    MOE_REQUIRE(t.batch_size > 0, src, ": train.batch_size must be > 0, got ", t.batch_size);
    MOE_REQUIRE(t.lr > 0 && t.min_lr >= 0 && t.min_lr <= t.lr, src,
                ": need train.lr > 0 and 0 <= train.min_lr <= train.lr, got lr=", t.lr,
                " min_lr=", t.min_lr);
    MOE_REQUIRE(t.warmup_steps >= 0, src, ": train.warmup_steps must be >= 0");
    MOE_REQUIRE(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1, src,
                ": train.beta1 and train.beta2 must be in [0, 1)");
    MOE_REQUIRE(t.weight_decay >= 0 && t.grad_clip >= 0, src,
                ": train.weight_decay and train.grad_clip must be >= 0");
    MOE_REQUIRE(t.threads >= 0, src, ": train.threads must be >= 0 (0 = all cores)");
    MOE_REQUIRE(t.reduction_groups >= 1 && (t.reduction_groups & (t.reduction_groups - 1)) == 0,
                src, ": train.reduction_groups must be a power of two (1, 2, 4, ...), got ",
                t.reduction_groups);
    MOE_REQUIRE(
        t.log_every > 0 && t.eval_every >= 0 && t.eval_windows > 0 && t.checkpoint_every >= 0, src,
        ": train.log_every and train.eval_windows must be > 0, train.eval_every and "
        "train.checkpoint_every >= 0");
}

nlohmann::json to_json(const TrainOptions& t) {
    return {{"steps", t.steps},
            {"batch_size", t.batch_size},
            {"lr", t.lr},
            {"min_lr", t.min_lr},
            {"warmup_steps", t.warmup_steps},
            {"weight_decay", t.weight_decay},
            {"beta1", t.beta1},
            {"beta2", t.beta2},
            {"grad_clip", t.grad_clip},
            {"seed", t.seed},
            {"threads", t.threads},
            {"log_every", t.log_every},
            {"eval_every", t.eval_every},
            {"eval_windows", t.eval_windows},
            {"checkpoint_every", t.checkpoint_every},
            {"tensorboard", t.tensorboard},
            {"reduction_groups", t.reduction_groups}};
}

}  // namespace moe::train
