#include "lm/lm_trainer.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "core/threads.h"
#include "core/timer.h"
#include "io/safetensors.h"
#include "lm/bpe_tokenizer.h"
#include "lm/lm_dataset.h"
#include "lm/lm_memory.h"
#include "lm/lm_trainable.h"
#include "lm/text_corpus.h"
#include "lm/window_sampler.h"

namespace moe::lm {

namespace {

const int kFormatVersion = 1;

// The tokenizer of the run: the checkpoint's when resuming; otherwise trained on the
// corpus, by rank 0 only under mpirun and sent to the others (the same result, once).
BpeTokenizer make_tokenizer(train::Trainer& trainer, const TextCorpus& corpus, int64_t vocab_size) {
    if (trainer.resuming())
        return BpeTokenizer::from_json(
            io::SafetensorsFile(trainer.checkpoint()).metadata("tokenizer"),
            trainer.checkpoint() + ": metadata 'tokenizer'");
    if (trainer.ranks() == 1) return train_tokenizer(corpus, vocab_size);
    comm::Comm& group = trainer.group();
    std::string json = trainer.root() ? train_tokenizer(corpus, vocab_size).to_json() : "";
    int64_t size = int64_t(json.size());
    group.broadcast(&size, sizeof size, 0);
    json.resize(size_t(size));
    group.broadcast(json.data(), size, 0);
    return BpeTokenizer::from_json(json);
}

}  // namespace

train::TrainResult train_lm(const LmTrainConfig& cfg, train::StartMode mode,
                            const train::TrainHooks& hooks, comm::Comm* comm) {
    const train::TrainOptions& opt = cfg.train;
    const int64_t ranks = comm ? comm->size() : 1;
    // Before anything is written, the data read, or anything sized by the config allocated
    // (a batch that does not divide is the Trainer's error, below).
    if (opt.batch_size % ranks == 0)
        require_lm_memory(cfg.model, opt.batch_size / ranks, /*training=*/true, "training");
    train::Trainer trainer(opt, cfg.out_dir, mode, comm);
    const bool root = trainer.root();

    const std::string data_path = cfg.data.path.empty() ? kDefaultCorpus : cfg.data.path;
    const TextCorpus corpus = TextCorpus::load(data_path, cfg.data.val_fraction);
    Timer tok_clock;
    const BpeTokenizer tokenizer = make_tokenizer(trainer, corpus, cfg.model.vocab_size);
    MOE_REQUIRE(tokenizer.vocab_size() <= cfg.model.vocab_size, "the tokenizer has ",
                tokenizer.vocab_size(),
                " tokens, more than model.vocab_size = ", cfg.model.vocab_size);
    const LmDataset ds = LmDataset::build(corpus, tokenizer);
    const int64_t T = cfg.model.seq_len, B = opt.batch_size;
    const WindowSampler train_windows(ds.train_tokens, T, uint64_t(opt.seed), ds.train_labels);
    const WindowSampler val_windows(ds.val_tokens, T, uint64_t(opt.seed), ds.val_labels);
    const int64_t eval_count = std::min(opt.eval_windows, val_windows.eval_windows());
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
    TransformerLM model(cfg.model, Bl, ranks > 1 ? &trainer.group() : nullptr);
    model.init_weights(uint64_t(opt.seed));
    LmTrainable trainable(model, train_windows, val_windows, eval_count, opt, trainer.group());
    const bool sharded = !model.sharded_params().empty();
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
                    trainer.group().describe(), long(Bl), long(B),
                    !sharded
                        ? ""
                        : (" and " + std::to_string(cfg.model.moe.n_experts / ranks) + " of the " +
                           std::to_string(cfg.model.moe.n_experts) + " experts of each MoE layer")
                              .c_str());

    // Everything a save writes but the step, encoded now: a value that cannot be stored
    // (text that is not UTF-8) fails here, before training, not after the last step.
    std::map<std::string, std::string> metadata;
    try {
        metadata = {{"format", "moe.cpp/lm"},
                    {"format_version", std::to_string(kFormatVersion)},
                    {"config", to_json(cfg).dump()},
                    {"tokenizer", tokenizer.to_json()},
                    {"domains", nlohmann::json(ds.domains).dump()}};
    } catch (const nlohmann::json::exception& e) {
        MOE_FAIL(cfg.out_dir,
                 ": the config or the domain names cannot be stored in a checkpoint: ", e.what());
    }
    return trainer.run(trainable, metadata, hooks);
}

}  // namespace moe::lm
