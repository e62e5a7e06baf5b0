#include "tabular/multitask_trainer.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/parse_number.h"
#include "core/threads.h"
#include "io/json_text.h"
#include "io/safetensors.h"
#include "tabular/multitask_trainable.h"
#include "tabular/row_batches.h"
#include "train/checkpoint.h"

namespace moe::tabular {

namespace {

const int kFormatVersion = 1;
const char* kFormat = "moe.cpp/multitask";

std::string describe(const MultitaskModelConfig& m, int64_t n_tasks) {
    std::string s = m.arch;
    if (m.arch == "omoe" || m.arch == "mmoe")
        s += ", " + std::to_string(m.n_experts) + " experts" +
             (m.gate_top_k > 0 ? " (top-" + std::to_string(m.gate_top_k) + ")" : "");
    else if (m.arch == "ple")
        s += ", " + std::to_string(m.ple_levels) + " levels of " +
             std::to_string(m.ple_shared_experts) + " shared + " + std::to_string(n_tasks) + "x" +
             std::to_string(m.ple_task_experts) + " task experts";
    s += " of " + std::to_string(m.d_model) + "->" + std::to_string(m.expert_hidden) + "->" +
         std::to_string(m.d_model) + ", towers of " + std::to_string(m.tower_hidden);
    return s;
}

void print_table(const char* what, const RawTable& t) {
    std::printf("data: %s %s: %ld rows", what, t.path.c_str(), long(t.n));
    if (t.skipped > 0) std::printf(" (%ld bad rows skipped)", long(t.skipped));
    std::printf("\n");
}

}  // namespace

train::TrainResult train_multitask(const MultitaskTrainConfig& cfg, train::StartMode mode,
                                   const train::TrainHooks& hooks, comm::Comm* comm) {
    const train::TrainOptions& opt = cfg.train;
    const TabularSchema& schema = cfg.data.columns;
    // The data first: a bad file is an error before anything is written to out_dir.
    const RawTable train_raw = read_table(schema, cfg.data.train, true);
    const RawTable val_raw = read_table(schema, cfg.data.val, true);
    const TabularEncoding enc = fit_encoding(schema, train_raw);
    const EncodedRows train_rows = encode(schema, enc, train_raw);
    const EncodedRows val_rows = encode(schema, enc, val_raw);
    MOE_REQUIRE(train_rows.n >= 1, cfg.data.train, ": no training rows");
    MOE_REQUIRE(val_rows.n >= 1, cfg.data.val, ": no validation rows");

    train::Trainer trainer(opt, cfg.out_dir, mode, comm);
    const bool root = trainer.root();
    const int64_t ranks = trainer.ranks();
    if (root) {
        print_table("training", train_raw);
        print_table("validation", val_raw);
        std::printf("columns: %zu categorical, %zu numeric; tasks:", schema.categorical.size(),
                    schema.numeric.size());
        for (const TargetColumn& t : schema.targets)
            std::printf(" %s (%s, weight %g)", t.name.c_str(), target_kind_name(t.kind), t.weight);
        std::printf("\n");
    }
    const RowBatches batches(train_rows.n, opt.batch_size, uint64_t(opt.seed));
    const int64_t Bl = std::max<int64_t>(1, opt.batch_size / ranks);
    MultitaskModel model(cfg.model, MultitaskInputs::from(schema, enc), Bl);
    model.init_weights(uint64_t(opt.seed));
    MultitaskTrainable trainable(model, train_rows, val_rows, batches, opt, trainer.group());
    if (root) {
        std::printf("model: %s, %ld parameters, %d threads\n",
                    describe(cfg.model, schema.n_tasks()).c_str(), long(model.num_params()),
                    num_threads());
        std::printf("training: %ld steps of %ld rows = %.1f epochs\n", long(opt.steps),
                    long(opt.batch_size),
                    double(opt.steps * opt.batch_size) / double(train_rows.n));
        if (ranks > 1)
            std::printf("distributed: %s; each rank runs %ld of the %ld rows of a batch\n",
                        trainer.group().describe(), long(Bl), long(opt.batch_size));
    }
    std::map<std::string, std::string> metadata;
    try {
        metadata = {{"format", kFormat},
                    {"format_version", std::to_string(kFormatVersion)},
                    {"config", to_json(cfg).dump()},
                    {"encoding", to_json(enc).dump()}};
    } catch (const nlohmann::json::exception& e) {
        MOE_FAIL(cfg.out_dir,
                 ": the config or the encoding cannot be stored in a checkpoint: ", e.what());
    }
    return trainer.run(trainable, metadata, hooks);
}

// A damaged or hostile file's metadata can describe a model of any size over a few KB of
// tensors: before building the model, check every size the config and encoding give (tables,
// d_model, the input width, expert counts and widths, levels, towers) against the tensor
// table. The full load then checks every tensor again, exactly.
static void check_config_against_tensors(const io::SafetensorsFile& f,
                                         const MultitaskModelConfig& m, const MultitaskInputs& in) {
    const std::string& path = f.path();
    auto expect = [&](const std::string& name, std::initializer_list<int64_t> dims) {
        const Shape want(dims);
        MOE_REQUIRE(f.contains(name), path, ": the config in its metadata describes tensor '", name,
                    "' ", want.str(),
                    ", which the file does not hold (metadata and weights do not "
                    "match)");
        const Shape& got = f.info(name).shape;
        MOE_REQUIRE(got == want, path, ": tensor '", name, "' is ", got.str(),
                    " but the config in its metadata makes it ", want.str());
    };
    int64_t d_in = in.n_numeric;
    for (size_t c = 0; c < in.table_rows.size(); ++c) {
        expect("embed." + std::to_string(c) + ".weight", {in.table_rows[c], in.embed_dims[c]});
        d_in += in.embed_dims[c];
    }
    const int64_t d = m.d_model, H = m.expert_hidden;
    expect("input.weight", {d, d_in});
    if (m.arch == "shared_bottom") {
        expect("bottom.w1", {H, d});
    } else if (m.arch == "omoe" || m.arch == "mmoe") {
        expect(m.arch + ".experts.w1", {m.n_experts, H, d});
    } else {
        const int64_t E = m.ple_shared_experts + int64_t(in.task_kinds.size()) * m.ple_task_experts;
        for (int64_t l = 0; l < m.ple_levels; ++l)
            expect("ple." + std::to_string(l) + ".experts.w1", {E, H, d});
        const std::string next = "ple." + std::to_string(m.ple_levels) + ".experts.w1";
        MOE_REQUIRE(!f.contains(next), path, ": holds '", next,
                    "' but the config in its metadata has ", m.ple_levels, " levels");
    }
    for (size_t k = 0; k < in.task_kinds.size(); ++k)
        expect("tower." + std::to_string(k) + ".w1", {m.tower_hidden, d});
}

bool is_multitask_checkpoint(const std::string& path) {
    // Any error is "no": the caller's own loader then says what is wrong with the file.
    try {
        const std::string file =
            std::filesystem::is_directory(path) ? train::checkpoint_path(path) : path;
        const io::SafetensorsFile f(file);
        auto it = f.metadata().find("format");
        return it != f.metadata().end() && it->second == kFormat;
    } catch (const std::exception&) {
        return false;
    }
}

LoadedMultitask load_multitask(const std::string& path, int64_t max_batch) {
    LoadedMultitask m;
    m.path = std::filesystem::is_directory(path) ? train::checkpoint_path(path) : path;
    const io::SafetensorsFile f(m.path);
    const std::map<std::string, std::string>& meta = f.metadata();
    auto need = [&](const char* key) -> const std::string& {
        auto it = meta.find(key);
        MOE_REQUIRE(it != meta.end(), m.path, ": not a moe.cpp multi-task checkpoint (no '", key,
                    "' in its metadata)");
        return it->second;
    };
    MOE_REQUIRE(need("format") == kFormat, m.path, ": format '", excerpt(need("format")),
                "' is not a multi-task checkpoint");
    m.cfg = multitask_train_config_from_json(need("config"), m.path + " (config metadata)");
    m.step = parse_int64(need("step"), m.path + ": metadata 'step'", 0);
    const TabularSchema& schema = m.cfg.data.columns;
    m.encoding =
        encoding_from_json(io::parse_json(need("encoding"), m.path + ": metadata 'encoding'"),
                           schema, m.path + ": metadata 'encoding'");
    MOE_REQUIRE(max_batch > 0, "load_multitask: batch must be > 0");
    const MultitaskInputs in = MultitaskInputs::from(schema, m.encoding);
    check_config_against_tensors(f, m.cfg.model, in);
    m.model = std::make_unique<MultitaskModel>(m.cfg.model, in, max_batch);
    train::load_checkpoint(m.path, {{"", &m.model->params()}}, {"optim."});
    return m;
}

EncodedRows read_encoded(const LoadedMultitask& m, const std::string& csv, bool with_targets,
                         int64_t* skipped) {
    const RawTable raw = read_table(m.cfg.data.columns, csv, with_targets);
    if (skipped) *skipped = raw.skipped;
    return encode(m.cfg.data.columns, m.encoding, raw);
}

}  // namespace moe::tabular
