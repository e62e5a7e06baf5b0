// Expert parallelism against one process: every rank builds the same single-process MoE
// layer (the reference) on the whole batch, and an expert-parallel layer holding its slice
// of the experts on its own slice of the batch (rank r: tokens [r * Tl, (r + 1) * Tl)).
// Outputs, input gradients and router losses must equal the reference's rows; router
// gradients summed over ranks and each rank's expert gradients must equal the reference's.
// In double precision, so the tolerance can be tight (1e-10 relative).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/check.h"
#include "core/rng.h"
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
    c.top_k = 2;
    c.aux_loss_coef = 0.1;
    c.z_loss_coef = 0.01;
    c.importance_coef = 0.05;
    if (router == "assigned") c.domain_experts = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
    return c;
}

// Runs forward + backward on both layers and compares. kill_last_rank_experts: the
// router's bias makes the last rank's experts unselectable, so that rank receives no rows.
void check_matches_single_process(const std::string& router, bool kill_last_rank_experts) {
    comm::Comm& world = test::world();
    const int R = world.size(), rank = world.rank();
    const int64_t E = 8, Tl = 5, Tg = Tl * R, d = 12;
    const MoeConfig cfg = config(router, E);

    Built ref, ep;
    build(ref, cfg, Tg, nullptr);
    build(ep, cfg, Tl, &world);
    ASSERT_EQ(ep.layer->local_experts(), E / R);
    Rng rng{7};
    ref.layer->init_weights(rng, 0.5);
    if (kill_last_rank_experts) {
        double* b = ref.params.get("moe.router.b").ptr<double>();
        for (int64_t e = E - E / R; e < E; ++e) b[e] = -1e3;
    }
    copy_params(ref, ep);

    // The same batch on every rank (Rng with a fixed seed); each rank takes its rows.
    std::vector<double> x(size_t(Tg * d)), d_out(size_t(Tg * d));
    std::vector<int32_t> labels(static_cast<size_t>(Tg));
    Rng data{11};
    for (double& v : x) v = data.normal();
    for (double& v : d_out) v = data.normal();
    for (int64_t t = 0; t < Tg; ++t) labels[size_t(t)] = int32_t(t % 4);

    sparse::RouterInput<double> in_ref, in_ep;
    in_ref.labels = labels.data();
    in_ep.labels = labels.data() + rank * Tl;
    in_ref.training = in_ep.training = true;

    std::vector<double> out_ref(size_t(Tg * d)), out_ep(size_t(Tl * d));
    const double loss_ref = ref.layer->forward(out_ref.data(), x.data(), Tg, in_ref);
    const double loss_ep = ep.layer->forward(out_ep.data(), x.data() + rank * Tl * d, Tl, in_ep);
    EXPECT_NEAR(loss_ep, loss_ref, 1e-12 * std::max(1.0, std::abs(loss_ref))) << router;
    EXPECT_LT(max_rel_diff(out_ep.data(), out_ref.data() + rank * Tl * d, Tl * d), 1e-12);
    // Statistics cover the whole batch.
    EXPECT_EQ(ep.layer->stats().tokens, Tg);
    EXPECT_EQ(ep.layer->stats().tokens_per_expert, ref.layer->stats().tokens_per_expert);
    if (kill_last_rank_experts) {
        EXPECT_EQ(ep.layer->stats().tokens_per_expert[size_t(E - 1)], 0);
    }

    std::vector<double> dx_ref(size_t(Tg * d), 0.0), dx_ep(size_t(Tl * d), 0.0);
    ref.layer->backward(d_out.data(), dx_ref.data());
    ep.layer->backward(d_out.data() + rank * Tl * d, dx_ep.data());
    EXPECT_LT(max_rel_diff(dx_ep.data(), dx_ref.data() + rank * Tl * d, Tl * d), 1e-10) << router;

    // Replicated parameters: the ranks' gradients add up to the reference's. Experts: this
    // rank's slice equals the reference's rows.
    const int64_t first = ep.layer->first_expert();
    for (const Arena::Entry& e : ep.grads.entries()) {
        Tensor g = ep.grads.get(e.name);
        const Tensor gr = ref.grads.get(e.name);
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
    for (const Arena::Entry& e : ep.params.entries())
        if (!is_expert(e.name)) {
            const Tensor p = ep.params.get(e.name);
            EXPECT_EQ(
                max_rel_diff(p.ptr<double>(), ref.params.get(e.name).ptr<double>(), p.numel()), 0.0)
                << e.name;
        }
}

TEST(ExpertParallel, SoftmaxTopkMatchesOneProcess) {
    check_matches_single_process("softmax_topk", false);
}

TEST(ExpertParallel, SigmoidBiasMatchesOneProcess) {
    check_matches_single_process("sigmoid_bias", false);
}

TEST(ExpertParallel, AssignedMatchesOneProcess) {
    check_matches_single_process("assigned", false);
}

TEST(ExpertParallel, ARankWhoseExpertsGetNoTokensWorks) {
    check_matches_single_process("softmax_topk", true);
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
