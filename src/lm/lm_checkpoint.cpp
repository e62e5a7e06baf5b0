#include "lm/lm_checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/parse_number.h"
#include "io/json_text.h"
#include "io/safetensors.h"
#include "lm/lm_memory.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace moe::lm {

namespace {

// The metadata describes the model the weights are for; a damaged or hostile file can say
// d_model 4096 or n_experts 10^6 over 20 KB of tensors. Before building anything from it,
// check the config against the tensor table: the embedding, every layer's attention and
// feed-forward weights, the head, and that there is no layer past n_layers. (The full
// load checks every tensor again, exactly; this pass only has to be cheap and stop early:
// it walks layers in order and fails at the first one the file does not have.)
void check_config_against_tensors(const io::SafetensorsFile& f, const lm::LmConfig& m) {
    const std::string& path = f.path();
    auto expect = [&](const std::string& name, std::initializer_list<int64_t> dims) {
        const Shape want(dims);
        MOE_REQUIRE(f.contains(name), path, ": the config in its metadata describes tensor '", name,
                    "' ", want.str(),
                    ", which the file does not hold (metadata and weights "
                    "do not match)");
        const Shape& got = f.info(name).shape;
        MOE_REQUIRE(got == want, path, ": tensor '", name, "' is ", got.str(),
                    " but the config in its metadata makes it ", want.str());
    };
    const int64_t V = m.vocab_size, C = m.d_model;
    expect("tok_emb", {V, C});
    if (!m.tie_embeddings) expect("lm_head", {V, C});
    for (int64_t l = 0; l < m.n_layers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        expect(p + "attn.wq", {C, C});
        if (m.is_moe_layer(l)) {
            if (m.moe.router != "soft")
                expect(p + "moe.experts.w1", {m.moe.n_experts, m.moe.d_expert, C});
        } else {
            expect(p + "ffn.w1", {m.d_ff, C});
        }
    }
    const std::string next = "layers." + std::to_string(m.n_layers) + ".attn.wq";
    MOE_REQUIRE(!f.contains(next), path, ": holds '", next, "' but the config in its metadata has ",
                m.n_layers, " layers");
}

}  // namespace

LoadedLm load_lm(const std::string& path, int64_t max_batch) {
    LoadedLm lm;
    lm.path = std::filesystem::is_directory(path) ? train::checkpoint_path(path) : path;
    // Kept open through the checks below: the file is mapped once for the metadata, the
    // tensor table and the load.
    const io::SafetensorsFile f(lm.path);
    const std::map<std::string, std::string>& meta = f.metadata();
    auto need = [&](const char* key) -> const std::string& {
        auto it = meta.find(key);
        MOE_REQUIRE(it != meta.end(), lm.path, ": not a moe.cpp language-model checkpoint (no '",
                    key, "' in its metadata)");
        return it->second;
    };
    MOE_REQUIRE(need("format") == "moe.cpp/lm", lm.path, ": format '", excerpt(need("format")),
                "' is not a language-model checkpoint");
    lm.cfg = lm_train_config_from_json(need("config"), lm.path + " (config metadata)");
    lm.tokenizer =
        lm::BpeTokenizer::from_json(need("tokenizer"), lm.path + ": metadata 'tokenizer'");
    lm.step = parse_int64(need("step"), lm.path + ": metadata 'step'", 0);
    const nlohmann::json domains =
        io::parse_json(need("domains"), lm.path + ": metadata 'domains'");
    MOE_REQUIRE(domains.is_array(), lm.path, ": metadata 'domains' must be a list of names");
    for (const auto& d : domains) {
        MOE_REQUIRE(d.is_string(), lm.path, ": metadata 'domains' holds ", io::json_excerpt(d),
                    ", not a name");
        lm.domains.push_back(d.get<std::string>());
    }
    check_config_against_tensors(f, lm.cfg.model);
    lm::require_lm_memory(lm.cfg.model, max_batch, /*training=*/false, lm.path);
    lm.model = std::make_unique<lm::TransformerLM>(lm.cfg.model, max_batch);
    train::load_checkpoint(lm.path, {{"", &lm.model->params()}}, {"optim."});
    return lm;
}

}  // namespace moe::lm
