#include "lm/lm_train_config.h"

#include "core/check.h"
#include "moe/moe_config.h"

namespace moe::lm {

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

    c.train = train::read_train_options(cfg);

    c.data.path = cfg.get<std::string>("data.path", c.data.path);
    c.data.val_fraction = cfg.get<double>("data.val_fraction", c.data.val_fraction);
    c.out_dir = cfg.get<std::string>("out_dir", c.out_dir);
    cfg.finish();

    const std::string& src = cfg.source();
    m.validate();
    train::check_train_options(c.train, src);
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
            {"train", train::to_json(t)},
            {"data", {{"path", c.data.path}, {"val_fraction", c.data.val_fraction}}},
            {"out_dir", c.out_dir}};
}

LmTrainConfig lm_train_config_from_json(const std::string& json, const std::string& source) {
    io::Config cfg(json, source);
    return read_lm_train_config(cfg);
}

}  // namespace moe::lm
