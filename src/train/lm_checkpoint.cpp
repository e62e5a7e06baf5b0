#include "train/lm_checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/lm_trainer.h"

namespace moe::train {

LoadedLm load_lm(const std::string& path, int64_t max_batch) {
    LoadedLm lm;
    lm.path = std::filesystem::is_directory(path) ? checkpoint_path(path) : path;
    std::map<std::string, std::string> meta;
    {
        io::SafetensorsFile f(lm.path);
        meta = f.metadata();
    }
    auto need = [&](const char* key) -> const std::string& {
        auto it = meta.find(key);
        MOE_REQUIRE(it != meta.end(), lm.path, ": not a moe.cpp language-model checkpoint (no '",
                    key, "' in its metadata)");
        return it->second;
    };
    MOE_REQUIRE(need("format") == "moe.cpp/lm", lm.path, ": format '", need("format"),
                "' is not a language-model checkpoint");
    lm.cfg = lm_train_config_from_json(need("config"), lm.path + " (config metadata)");
    lm.tokenizer = data::BpeTokenizer::from_json(need("tokenizer"));
    try {
        lm.domains = nlohmann::json::parse(need("domains")).get<std::vector<std::string>>();
        lm.step = std::stoll(need("step"));
    } catch (const std::exception& e) {
        MOE_FAIL(lm.path, ": bad 'domains' or 'step' metadata: ", e.what());
    }
    lm.model = std::make_unique<models::TransformerLM>(lm.cfg.model, max_batch);
    load_checkpoint(lm.path, {{"", &lm.model->params()}}, {"optim."});
    return lm;
}

}  // namespace moe::train
