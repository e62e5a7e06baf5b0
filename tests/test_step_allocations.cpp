// A training step allocates nothing once the first step has run: the model's arenas are
// sized at construction, and the kernels keep their scratch between calls. This executable
// replaces every global operator new with a counting one and runs steps 2..4 of dense and
// MoE language models (forward with training on, backward under reduction groups, gradient
// clipping, AdamW, the routers' after_step) with counting on.
//
// Only operator new is counted: memory taken with malloc directly (the arenas') is not seen
// here. One known exception is counted apart: oneDNN 2.6's dnnl_sgemm makes a 192-byte
// operator new inside the library in some of its calls (here about one in five), which no
// caller can avoid short of leaving dnnl_sgemm. This executable interposes dnnl_sgemm (its
// definition below wins over the shared library's) to tell those allocations from ours;
// the tests require ours to be zero and print oneDNN's.
#include <gtest/gtest.h>

#include "counting_allocator.h"  // this executable's operator new and dnnl_sgemm

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/grouped_reduce.h"
#include "lm/transformer_lm.h"
#include "train/adamw.h"

namespace moe {
namespace {

using test::CountAllocations;

lm::LmConfig small(const std::string& ffn) {
    lm::LmConfig c;
    c.vocab_size = 512;  // logits [B * T, V] above the kernels' parallel threshold
    c.d_model = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.d_ff = 96;
    c.seq_len = 32;
    c.ffn = ffn;
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.d_expert = 32;
    c.moe.router = "softmax_topk";
    return c;
}

struct StepCounts {
    int64_t ours = 0;         // operator new calls outside dnnl_sgemm
    int64_t sgemm = 0;        // ... inside it (oneDNN's own)
    int64_t sgemm_calls = 0;  // dnnl_sgemm calls
};

std::ostream& operator<<(std::ostream& os, const StepCounts& c) {
    return os << c.ours << " operator new calls in steps 2..4 outside oneDNN (and " << c.sgemm
              << " inside its " << c.sgemm_calls << " dnnl_sgemm calls)";
}

// Runs steps 1..4 as the trainer's StepRunner does in one process (zero the gradients,
// forward in training mode, backward under `groups` reduction groups, clip, AdamW,
// after_step) and counts the allocations of steps 2..4.
StepCounts allocations_after_warm_up(const lm::LmConfig& cfg, int64_t groups) {
    const int64_t B = 4, T = cfg.seq_len;
    lm::TransformerLM model(cfg, B);
    model.init_weights(1);
    train::AdamW optim(model.params(), {});
    std::vector<int32_t> tokens(size_t(B * T)), targets(size_t(B * T));
    Rng rng{2};
    for (int32_t& t : tokens) t = int32_t(rng.below(uint64_t(cfg.vocab_size)));
    for (size_t i = 0; i < targets.size(); ++i) targets[i] = tokens[(i + 1) % tokens.size()];

    auto step = [&](int64_t s) {
        model.grads().zero();
        lm::ForwardOptions fo;
        fo.training = true;
        fo.seed = uint64_t(s);
        model.forward(tokens.data(), targets.data(), B, T, fo);
        {
            const kernels::ReductionGroups canonical(groups);
            model.backward();
        }
        train::clip_grad_norm(model.grads(), 1.0);
        optim.step(model.params(), model.grads(), 1e-3f);
        model.after_step();
    };
    step(0);  // warm-up: kernels size the scratch they keep here
    const CountAllocations counting;
    for (int64_t s = 1; s < 4; ++s) step(s);
    return {counting.count(), counting.sgemm_count(), counting.sgemm_calls()};
}

TEST(StepAllocations, TheCounterSeesAllocationsAndTheGemms) {
    const CountAllocations counting;
    auto* v = new std::vector<int>(3);
    delete v;
    EXPECT_EQ(counting.count(), 2);  // the vector and its elements
    // The interposed dnnl_sgemm is the one kernels::gemm calls (else oneDNN's allocations
    // would be counted as ours).
    const StepCounts c = allocations_after_warm_up(small("dense"), 1);
    EXPECT_GT(c.sgemm_calls, 0);
}

TEST(StepAllocations, DenseModelStepsAllocateNothing) {
    for (int64_t groups : {1, 4}) {
        const StepCounts c = allocations_after_warm_up(small("dense"), groups);
        EXPECT_EQ(c.ours, 0) << c << ", reduction groups " << groups;
        std::cout << "dense, reduction groups " << groups << ": " << c << "\n";
    }
}

TEST(StepAllocations, MoeModelStepsAllocateNothing) {
    for (int64_t groups : {1, 4}) {
        auto cfg = small("moe");
        const StepCounts c = allocations_after_warm_up(cfg, groups);
        EXPECT_EQ(c.ours, 0) << c << ", softmax_topk, reduction groups " << groups;
        std::cout << "moe, reduction groups " << groups << ": " << c << "\n";
        cfg.dense_layers = 1;
        cfg.tie_embeddings = true;
        const StepCounts d = allocations_after_warm_up(cfg, groups);
        EXPECT_EQ(d.ours, 0) << d << ", one dense layer, tied, reduction groups " << groups;
    }
}

}  // namespace
}  // namespace moe
