// Expert parallelism against one process: every rank builds the same single-process MoE
// layer (the reference) on the whole batch, and an expert-parallel layer holding its slice
// of the experts on its own slice of the batch (rank r: tokens [r * Tl, (r + 1) * Tl)).
// Outputs, input gradients and router losses must equal the reference's rows; router
// gradients summed over ranks and each rank's expert gradients must equal the reference's.
// In double precision, so the tolerance can be tight (1e-10 relative).
//
// Training mode with a seed: noise (noisy_topk) and jitter are drawn by global token index
// (RouterInput::first_token = r * Tl), so the ranks route as the one process does.
// expert_choice is the exception by design: each expert picks among its rank's tokens
// (Router::set_batch_group), so its reference is one process run on each rank's share.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/check.h"
#include "core/rng.h"
#include "moe/moe_block.h"
#include "moe/moe_layer.h"
#include "mpi_test_world.h"

namespace moe {
namespace {

using sparse::MoeConfig;
using sparse::MoeLayer;

struct Built {
    std::unique_ptr<MoeLayer<double>> layer;
    Arena params, grads;
};

void build(Built& b, const MoeConfig& cfg, int64_t max_T, comm::Comm* ep) {
    b.layer = std::make_unique<MoeLayer<double>>(cfg, max_T);
    b.layer->set_expert_parallel(ep);
    b.layer->declare(b.params, "moe.");
    b.params.allocate();
    b.grads = b.params.clone_layout();
    b.layer->bind(b.params, b.grads);
}

bool is_expert(const std::string& name) {
    return name.find(".experts.") != std::string::npos;
}

// Copies the reference's parameters into the expert-parallel layer: expert tensors are
// the rows of this rank's experts.
void copy_params(const Built& ref, Built& ep) {
    const int64_t first = ep.layer->first_expert();
    for (const Arena::Entry& e : ep.params.entries()) {
        const Tensor src = ref.params.get(e.name), dst = ep.params.get(e.name);
        const int64_t row = dst.numel() / dst.shape[0];
        const double* s = src.ptr<double>() + (is_expert(e.name) ? first * row : 0);
        std::copy(s, s + dst.numel(), dst.ptr<double>());
    }
}

double max_rel_diff(const double* a, const double* b, int64_t n) {
    double scale = 1e-30, diff = 0;
    for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(b[i]));
    for (int64_t i = 0; i < n; ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
    return diff / scale;
}

MoeConfig config(const std::string& router, int64_t E) {
    MoeConfig c;
    c.router = router;
    c.d_model = 12;
    c.d_expert = 10;
    c.n_experts = E;
    c.top_k = router == "switch" ? 1 : 2;
    c.aux_loss_coef = 0.1;
    c.z_loss_coef = 0.01;
    c.importance_coef = 0.05;
    c.noisy_topk.load_coef = 0.05;
    if (router == "assigned") c.assigned.domain_experts = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
    // Expert choice ranks each rank's own tokens: with one reference per rank's share, only
    // losses without a batch-wide mean keep the ranks' gradients summable, so none.
    if (router == "expert_choice") c.z_loss_coef = 0;
    // Both see later tokens of the batch, so the layer refuses them in a causal model.
    if (router == "expert_choice" || router == "soft") c.causal = false;
    return c;
}

struct Case {
    std::string router;
    bool kill_last_rank_experts = false;  // the last rank's experts get no rows
    double jitter = 0;
};

void PrintTo(const Case& c, std::ostream* os) {
    *os << c.router << (c.jitter > 0 ? " with jitter" : "")
        << (c.kill_last_rank_experts ? ", last rank's experts idle" : "");
}

// Runs forward + backward on both layers and compares. kill_last_rank_experts: the
// router's bias makes the last rank's experts unselectable, so that rank receives no rows.
void check_matches_single_process(const Case& c) {
    comm::Comm& world = test::world();
    const int R = world.size(), rank = world.rank();
    const int64_t E = 8, Tl = 5, Tg = Tl * R, d = 12;
    MoeConfig cfg = config(c.router, E);
    cfg.jitter = c.jitter;
    const std::string& router = c.router;
    // Expert choice: the reference is one process on this rank's share alone.
    const bool per_rank_ref = router == "expert_choice";
    const int64_t Tr = per_rank_ref ? Tl : Tg, r0 = per_rank_ref ? rank * Tl : 0;

    Built ref, ep;
    build(ref, cfg, Tr, nullptr);
    build(ep, cfg, Tl, &world);
    ASSERT_EQ(ep.layer->local_experts(), E / R);
    Rng rng{7};
    ref.layer->init_weights(rng, 0.5);
    if (c.kill_last_rank_experts) {
        double* b = ref.params.get("moe.router.b").ptr<double>();
        for (int64_t e = E - E / R; e < E; ++e) b[e] = -1e3;
    }
    copy_params(ref, ep);

    // The same batch on every rank (Rng with a fixed seed); each rank takes its rows.
    std::vector<double> x(size_t(Tg * d)), d_out(size_t(Tg * d));
    std::vector<int32_t> labels(static_cast<size_t>(Tg)), ids(static_cast<size_t>(Tg));
    Rng data{11};
    for (double& v : x) v = data.normal();
    for (double& v : d_out) v = data.normal();
    for (int64_t t = 0; t < Tg; ++t) {
        labels[size_t(t)] = int32_t(t % 4);
        ids[size_t(t)] = int32_t((t * 7) % 13);
    }

    sparse::RouterInput<double> in_ref, in_ep;
    in_ref.labels = labels.data() + r0;
    in_ep.labels = labels.data() + rank * Tl;
    in_ref.token_ids = ids.data() + r0;
    in_ep.token_ids = ids.data() + rank * Tl;
    in_ref.training = in_ep.training = true;
    in_ref.seed = in_ep.seed = 1234;
    in_ref.first_token = r0;
    in_ep.first_token = rank * Tl;

    std::vector<double> out_ref(size_t(Tr * d)), out_ep(size_t(Tl * d));
    const double loss_ref = ref.layer->forward(out_ref.data(), x.data() + r0 * d, Tr, in_ref);
    const double loss_ep = ep.layer->forward(out_ep.data(), x.data() + rank * Tl * d, Tl, in_ep);
    const int64_t mine = (rank * Tl - r0) * d;  // this rank's rows in the reference
    if (!per_rank_ref) {
        EXPECT_NEAR(loss_ep, loss_ref, 1e-12 * std::max(1.0, std::abs(loss_ref))) << router;
        EXPECT_EQ(ep.layer->stats().tokens, Tg);
        EXPECT_EQ(ep.layer->stats().tokens_per_expert, ref.layer->stats().tokens_per_expert)
            << router;
    }
    EXPECT_LT(max_rel_diff(out_ep.data(), out_ref.data() + mine, Tl * d), 1e-12) << router;
    if (c.kill_last_rank_experts) {
        EXPECT_EQ(ep.layer->stats().tokens_per_expert[size_t(E - 1)], 0);
    }

    std::vector<double> dx_ref(size_t(Tr * d), 0.0), dx_ep(size_t(Tl * d), 0.0);
    ref.layer->backward(d_out.data() + r0 * d, dx_ref.data());
    ep.layer->backward(d_out.data() + rank * Tl * d, dx_ep.data());
    EXPECT_LT(max_rel_diff(dx_ep.data(), dx_ref.data() + mine, Tl * d), 1e-10) << router;

    // Replicated parameters: the ranks' gradients add up to the reference's (with a
    // reference per rank, to the sum of the references'). Experts: this rank's slice equals
    // the reference's rows (summed over the references).
    const int64_t first = ep.layer->first_expert();
    for (const Arena::Entry& e : ep.grads.entries()) {
        Tensor g = ep.grads.get(e.name);
        Tensor gr = ref.grads.get(e.name);
        if (per_rank_ref) world.allreduce_sum(gr.ptr<double>(), gr.numel());
        const int64_t n = g.numel();
        const double* want = gr.ptr<double>();
        if (is_expert(e.name)) {
            want += first * (n / g.shape[0]);
        } else {
            world.allreduce_sum(g.ptr<double>(), n);
        }
        EXPECT_LT(max_rel_diff(g.ptr<double>(), want, n), 1e-10) << router << " " << e.name;
    }

    // sigmoid_bias: after_step moves every rank's bias as the single process moves its own.
    ref.layer->after_step();
    ep.layer->after_step();
    if (per_rank_ref) return;
    for (const Arena::Entry& e : ep.params.entries())
        if (!is_expert(e.name)) {
            const Tensor p = ep.params.get(e.name);
            EXPECT_EQ(
                max_rel_diff(p.ptr<double>(), ref.params.get(e.name).ptr<double>(), p.numel()), 0.0)
                << e.name;
        }
}

// Every router but Soft MoE (which MoeLayer::set_expert_parallel refuses, tested below).
class EveryRouter : public ::testing::TestWithParam<Case> {};

TEST_P(EveryRouter, MatchesOneProcess) {
    check_matches_single_process(GetParam());
}

INSTANTIATE_TEST_SUITE_P(ExpertParallel, EveryRouter,
                         ::testing::Values(Case{"softmax_topk"}, Case{"softmax_topk", false, 0.2},
                                           Case{"noisy_topk"}, Case{"noisy_topk", false, 0.2},
                                           Case{"switch"}, Case{"expert_choice"},
                                           Case{"sigmoid_bias"}, Case{"hash"}, Case{"dense"},
                                           Case{"assigned"}, Case{"softmax_topk", true}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                             std::string n = i.param.router;
                             if (i.param.jitter > 0) n += "_jitter";
                             if (i.param.kill_last_rank_experts) n += "_idle_last_rank";
                             return n;
                         });

TEST(ExpertParallel, SoftMoeIsRefusedByName) {
    comm::Comm& world = test::world();
    if (world.size() == 1) GTEST_SKIP() << "one rank: no expert parallelism to refuse";
    MoeConfig cfg = config("soft", 8);
    cfg.causal = false;  // Soft MoE refuses causal models before anything else
    const auto layer = make_moe_block<double>(cfg, 4);
    try {
        layer->set_expert_parallel(&world);
        ADD_FAILURE() << "no error for router soft under expert parallelism";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("soft"), std::string::npos) << e.what();
    }
}

TEST(ExpertParallel, InitialisationGivesEachRankItsSliceOfTheSingleProcessWeights) {
    comm::Comm& world = test::world();
    const MoeConfig cfg = config("softmax_topk", 8);
    Built ref, ep;
    build(ref, cfg, 4, nullptr);
    build(ep, cfg, 4, &world);
    Rng r1{3}, r2{3};
    ref.layer->init_weights(r1, 0.5, 0.25);
    ep.layer->init_weights(r2, 0.5, 0.25);
    const int64_t first = ep.layer->first_expert();
    for (const Arena::Entry& e : ep.params.entries()) {
        const Tensor p = ep.params.get(e.name);
        const int64_t offset = is_expert(e.name) ? first * (p.numel() / p.shape[0]) : 0;
        EXPECT_EQ(
            max_rel_diff(p.ptr<double>(), ref.params.get(e.name).ptr<double>() + offset, p.numel()),
            0.0)
            << e.name;
    }
}

TEST(ExpertParallel, ExpertsNotDivisibleByRanksIsAnErrorNamingBoth) {
    comm::Comm& world = test::world();
    const int64_t E = 2 * world.size() + 1;
    MoeLayer<double> layer(config("softmax_topk", E), 4);
    try {
        layer.set_expert_parallel(&world);
        ADD_FAILURE() << "no error for E=" << E << " on " << world.size() << " ranks";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("moe.n_experts = " + std::to_string(E)), std::string::npos) << msg;
        EXPECT_NE(msg.find(std::to_string(world.size())), std::string::npos) << msg;
    }
}

}  // namespace
}  // namespace moe
