#include "tabular/multitask_config.h"

#include "core/check.h"

namespace moe::tabular {

MultitaskTrainConfig read_multitask_train_config(io::Config& cfg) {
    const std::string& src = cfg.source();
    const std::string task = cfg.get<std::string>("task", "language");
    MOE_REQUIRE(task == "multitask", src, ": task is \"", task, "\", expected \"multitask\"");
    MultitaskTrainConfig c;
    auto& m = c.model;
    m.arch = cfg.get<std::string>("model.arch", m.arch);
    m.d_model = cfg.get<int64_t>("model.d_model", m.d_model);
    m.expert_hidden = cfg.get<int64_t>("model.expert_hidden", m.expert_hidden);
    m.expert = cfg.get<std::string>("model.expert", m.expert);
    m.n_experts = cfg.get<int64_t>("model.n_experts", m.n_experts);
    m.gate_top_k = cfg.get<int64_t>("model.gate_top_k", m.gate_top_k);
    m.ple_levels = cfg.get<int64_t>("model.ple_levels", m.ple_levels);
    m.ple_shared_experts = cfg.get<int64_t>("model.ple_shared_experts", m.ple_shared_experts);
    m.ple_task_experts = cfg.get<int64_t>("model.ple_task_experts", m.ple_task_experts);
    m.tower_hidden = cfg.get<int64_t>("model.tower_hidden", m.tower_hidden);
    m.init_std = cfg.get<double>("model.init_std", m.init_std);

    // One thread unless the config says otherwise (not the Trainer's "all cores"): a step of
    // these small models is many products of a few hundred microseconds, and each OpenMP
    // fork/join waits for the slowest thread. 500 steps of adult_mmoe took 0.60 s on one
    // thread and 0.55 s on two on a quiet machine, but 1.4 s against 53.7 s while other
    // processes shared the 2 cores (docs/architecture.md).
    const nlohmann::json& doc = cfg.doc();
    const bool threads_given =
        doc.contains("train") && doc["train"].is_object() && doc["train"].contains("threads");
    c.train = train::read_train_options(cfg);
    if (!threads_given) c.train.threads = 1;

    auto& d = c.data;
    d.train = cfg.get<std::string>("data.train", d.train);
    d.val = cfg.get<std::string>("data.val", d.val);
    d.test = cfg.get<std::string>("data.test", d.test);
    const nlohmann::json columns = cfg.section("data.columns");
    c.out_dir = cfg.get<std::string>("out_dir", c.out_dir);
    cfg.finish();

    MOE_REQUIRE(!columns.is_null(), src,
                ": data.columns is missing: it names the CSV columns to use (categorical, "
                "numeric, targets; see docs/multitask.md)");
    d.columns = schema_from_json(columns, src + ": data.columns");
    m.validate();
    train::check_train_options(c.train, src);
    MOE_REQUIRE(!d.train.empty(), src, ": data.train (the training CSV file) is missing");
    MOE_REQUIRE(!d.val.empty(), src,
                ": data.val (the validation CSV file, for evaluation during training) is "
                "missing");
    MOE_REQUIRE(c.train.reduction_groups == 1, src,
                ": train.reduction_groups must be 1 for multi-task models");
    MOE_REQUIRE(!c.out_dir.empty(), src, ": out_dir must not be empty");
    return c;
}

nlohmann::json to_json(const MultitaskTrainConfig& c) {
    const auto& m = c.model;
    const auto& d = c.data;
    return {
        {"task", "multitask"},
        {"model",
         {{"arch", m.arch},
          {"d_model", m.d_model},
          {"expert_hidden", m.expert_hidden},
          {"expert", m.expert},
          {"n_experts", m.n_experts},
          {"gate_top_k", m.gate_top_k},
          {"ple_levels", m.ple_levels},
          {"ple_shared_experts", m.ple_shared_experts},
          {"ple_task_experts", m.ple_task_experts},
          {"tower_hidden", m.tower_hidden},
          {"init_std", m.init_std}}},
        {"train", train::to_json(c.train)},
        {"data",
         {{"train", d.train}, {"val", d.val}, {"test", d.test}, {"columns", to_json(d.columns)}}},
        {"out_dir", c.out_dir}};
}

MultitaskTrainConfig multitask_train_config_from_json(const std::string& json,
                                                      const std::string& source) {
    io::Config cfg(json, source);
    return read_multitask_train_config(cfg);
}

}  // namespace moe::tabular
