// MultitaskModel: the declared API over MultitaskNet<float> (the computation lives in
// multitask_net.cpp), and the configuration's validation.
#include "tabular/multitask_model.h"

#include "core/check.h"
#include "tabular/multitask_net.h"

namespace moe::tabular {

void MultitaskModelConfig::validate() const {
    MOE_REQUIRE(arch == "shared_bottom" || arch == "omoe" || arch == "mmoe" || arch == "ple",
                "model.arch: \"", arch, "\" is not one of shared_bottom, omoe, mmoe, ple");
    MOE_REQUIRE(d_model >= 1, "model.d_model: ", d_model, " must be >= 1");
    MOE_REQUIRE(expert_hidden >= 1, "model.expert_hidden: ", expert_hidden, " must be >= 1");
    MOE_REQUIRE(expert == "relu" || expert == "gelu", "model.expert: \"", expert,
                "\" is not one of relu, gelu");
    MOE_REQUIRE(tower_hidden >= 1, "model.tower_hidden: ", tower_hidden, " must be >= 1");
    MOE_REQUIRE(init_std > 0, "model.init_std: ", init_std, " must be > 0");
    MOE_REQUIRE(gate_top_k >= 0, "model.gate_top_k: ", gate_top_k,
                " must be >= 0 (0 = dense gates)");
    if (arch == "omoe" || arch == "mmoe") {
        MOE_REQUIRE(n_experts >= 1, "model.n_experts: ", n_experts, " must be >= 1");
        MOE_REQUIRE(gate_top_k <= n_experts, "model.gate_top_k: ", gate_top_k,
                    " must be <= model.n_experts=", n_experts);
    }
    if (arch == "ple") {
        MOE_REQUIRE(ple_levels >= 1, "model.ple_levels: ", ple_levels, " must be >= 1");
        MOE_REQUIRE(ple_shared_experts >= 0, "model.ple_shared_experts: ", ple_shared_experts,
                    " must be >= 0");
        MOE_REQUIRE(ple_task_experts >= 0, "model.ple_task_experts: ", ple_task_experts,
                    " must be >= 0");
        MOE_REQUIRE(ple_shared_experts + ple_task_experts >= 1,
                    "model.ple_shared_experts: ", ple_shared_experts,
                    " and model.ple_task_experts: ", ple_task_experts,
                    " leave the task gates no expert");
    }
}

struct MultitaskModel::Impl {
    MultitaskNet<float> net;
    Impl(const MultitaskModelConfig& c, const MultitaskInputs& in, int64_t max_batch)
        : net(c, in, max_batch) {}
};

MultitaskModel::MultitaskModel(const MultitaskModelConfig& cfg, const MultitaskInputs& in,
                               int64_t max_batch)
    : impl_(std::make_unique<Impl>(cfg, in, max_batch)) {}
MultitaskModel::~MultitaskModel() = default;

void MultitaskModel::init_weights(uint64_t seed) {
    impl_->net.init_weights(seed);
}
double MultitaskModel::forward(const int32_t* cats, const float* nums, const float* targets,
                               int64_t B, const MultitaskForwardOptions& opt) {
    // cats: [B, C]; nums: [B, F]; targets: [B, K] or null
    return impl_->net.forward(cats, nums, targets, B, opt.loss_share);
}
void MultitaskModel::backward() {
    impl_->net.backward();
}
const float* MultitaskModel::predictions() const {
    return impl_->net.predictions();
}
const std::vector<double>& MultitaskModel::task_losses() const {
    return impl_->net.task_losses();
}
std::vector<GateInfo> MultitaskModel::gates() const {
    return impl_->net.gates();
}
const float* MultitaskModel::gate_weights(int64_t i) const {
    return impl_->net.gate_weights(i);
}
const MultitaskModelConfig& MultitaskModel::config() const {
    return impl_->net.config();
}
const MultitaskInputs& MultitaskModel::inputs() const {
    return impl_->net.inputs();
}
Arena& MultitaskModel::params() {
    return impl_->net.params();
}
Arena& MultitaskModel::grads() {
    return impl_->net.grads();
}
const Arena& MultitaskModel::params() const {
    return impl_->net.params();
}
int64_t MultitaskModel::num_params() const {
    return impl_->net.num_params();
}
double MultitaskModel::forward_flops_per_row() const {
    return impl_->net.forward_flops_per_row();
}

}  // namespace moe::tabular
