// `moe generate CHECKPOINT`: write text with a trained model.
#include <cstdio>
#include <cstring>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/threads.h"
#include "core/timer.h"
#include "lm/sampling.h"
#include "lm/lm_checkpoint.h"

namespace moe::cli {

namespace {
const char* kUsage =
    "usage: moe generate CHECKPOINT [options]\n"
    "\n"
    "Continues a prompt with a trained model, one token at a time (with a KV cache: each\n"
    "token costs time linear in the context). CHECKPOINT is a file or a run directory.\n"
    "\n"
    "  --prompt TEXT       text to continue (default: empty)\n"
    "  --max-tokens N      tokens to generate (default 200; prompt + N <= model.seq_len)\n"
    "  --temperature T     0 = greedy (default 0.8)\n"
    "  --top-k K           sample among the K most likely tokens; 0 = all (default 40)\n"
    "  --top-p P           nucleus: the smallest set with probability >= P (default 0.95)\n"
    "  --seed S            sampling seed (default 1)\n"
    "  --threads N         threads (default 1: one token is too little work to share)\n"
    "  --stats             print tokens per second on stderr\n";
}  // namespace

int run_generate(int argc, char** argv) {
    const Args a = parse_args(
        argc, argv,
        {"--prompt", "--max-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--threads"},
        {"--stats"});
    if (a.help) return std::fputs(kUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one CHECKPOINT");
    set_num_threads(a.get_int("--threads", 1, 0));
    lm::SamplingOptions so;
    so.temperature = a.get_double("--temperature", 0.8);
    so.top_k = a.get_int("--top-k", 40);
    so.top_p = a.get_double("--top-p", 0.95);
    const int64_t max_new = a.get_int("--max-tokens", 200);
    if (max_new < 0) throw UsageError("--max-tokens must be >= 0");
    Rng rng(uint64_t(a.get_int("--seed", 1)));

    lm::LoadedLm lm = lm::load_lm(a.positional[0], 1);
    const std::string prompt = a.get("--prompt", "");
    std::vector<int32_t> ids = lm.tokenizer.encode(prompt);
    if (ids.empty()) ids.push_back(int32_t('\n'));  // start from a line break
    const int64_t ctx = lm.cfg.model.seq_len;
    if (int64_t(ids.size()) >= ctx)
        throw UsageError("the prompt has " + std::to_string(ids.size()) +
                         " tokens; the model's context is " + std::to_string(ctx));
    // Written so that a --max-tokens near 2^63 cannot overflow the sum.
    const int64_t total =
        int64_t(ids.size()) + std::min<int64_t>(ctx - int64_t(ids.size()), max_new);

    lm::TransformerLM& model = *lm.model;
    model.start_generation(total);
    const float* logits = nullptr;
    for (int32_t id : ids) logits = model.decode(id);
    std::fputs(prompt.c_str(), stdout);
    std::vector<std::pair<float, int32_t>> work;
    Timer clock;
    int64_t made = 0;
    for (int64_t n = int64_t(ids.size()); n < total; ++n) {
        const int32_t next = lm::sample_token(logits, lm.cfg.model.vocab_size, so, rng, work);
        if (next >= lm.tokenizer.vocab_size()) break;  // an id no text maps to (never trained)
        std::fputs(lm.tokenizer.token_bytes(next).c_str(), stdout);
        std::fflush(stdout);
        ++made;
        if (n + 1 < total) logits = model.decode(next);
    }
    std::fputs("\n", stdout);
    if (a.flags.count("--stats"))
        std::fprintf(stderr, "generated %ld tokens in %.2fs (%.1f tokens/s, context %ld)\n",
                     long(made), clock.seconds(), double(made) / std::max(1e-9, clock.seconds()),
                     long(total));
    return 0;
}

}  // namespace moe::cli
