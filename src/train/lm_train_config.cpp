#include "train/lm_train_config.h"

#include "core/check.h"
#include "moe/moe_config.h"

namespace moe::train {

LmTrainConfig read_lm_train_config(io::Config& cfg) {
    LmTrainConfig c;
    auto& m = c.model;
    m.vocab_size = cfg.get<int64_t>("model.vocab_size", m.vocab_size);
    m.d_model = cfg.get<int64_t>("model.d_model", m.d_model);
    m.n_layers = cfg.get<int64_t>("model.n_layers", m.n_layers);
    m.n_heads = cfg.get<int64_t>("model.n_heads", m.n_heads);
    m.d_ff = cfg.get<int64_t>("model.d_ff", m.d_ff);
    m.seq_len = cfg.get<int64_t>("model.seq_len", m.seq_len);
    m.tie_embeddings = cfg.get<bool>("model.tie_embeddings", m.tie_embeddings);
    m.norm_eps = cfg.get<double>("model.norm_eps", m.norm_eps);
    m.rope_theta = cfg.get<double>("model.rope_theta", m.rope_theta);
    m.init_std = cfg.get<double>("model.init_std", m.init_std);
    m.ffn = cfg.get<std::string>("model.ffn", m.ffn);
    m.dense_layers = cfg.get<int64_t>("model.dense_layers", m.dense_layers);
    m.moe = sparse::moe_config_from(cfg, "moe");

    auto& t = c.train;
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

    c.data.path = cfg.get<std::string>("data.path", c.data.path);
    c.data.val_fraction = cfg.get<double>("data.val_fraction", c.data.val_fraction);
    c.out_dir = cfg.get<std::string>("out_dir", c.out_dir);
    cfg.finish();

    const std::string& src = cfg.source();
    m.validate();
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
    MOE_REQUIRE(!c.out_dir.empty(), src, ": out_dir must not be empty");
    return c;
}

nlohmann::json to_json(const LmTrainConfig& c) {
    const auto& m = c.model;
    const auto& t = c.train;
    return {{"model",
             {{"vocab_size", m.vocab_size},
              {"d_model", m.d_model},
              {"n_layers", m.n_layers},
              {"n_heads", m.n_heads},
              {"d_ff", m.d_ff},
              {"seq_len", m.seq_len},
              {"tie_embeddings", m.tie_embeddings},
              {"norm_eps", m.norm_eps},
              {"rope_theta", m.rope_theta},
              {"init_std", m.init_std},
              {"ffn", m.ffn},
              {"dense_layers", m.dense_layers}}},
            {"moe", sparse::moe_config_to_json(m.moe)},
            {"train",
             {{"steps", t.steps},
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
              {"reduction_groups", t.reduction_groups}}},
            {"data", {{"path", c.data.path}, {"val_fraction", c.data.val_fraction}}},
            {"out_dir", c.out_dir}};
}

LmTrainConfig lm_train_config_from_json(const std::string& json, const std::string& source) {
    io::Config cfg(json, source);
    return read_lm_train_config(cfg);
}

}  // namespace moe::train
