// MultitaskModel: several prediction tasks over one table row (recommendation, census
// prediction), sharing experts through per-task gates.
//
//   e   = [emb_0[cat_0], ..., emb_{C-1}[cat_{C-1}], num_0, ..., num_{F-1}]   [B, d_in]
//   h   = e W_in^T + b_in                                                   [B, d_model]
//   arch "shared_bottom": z_k = bottom(h) for every task k (one ReLU MLP d_model->H->d_model)
//   arch "omoe":          z_k = sum_e g(h)_e expert_e(h), one gate shared by every task
//   arch "mmoe":          z_k = sum_e g_k(h)_e expert_e(h), a gate per task (Ma et al. 2018)
//   arch "ple":           ple_levels CGC levels (Tang et al. 2020): level 0 reads h for every
//                         gate and expert; at level l > 0 task k's experts and gate read task
//                         k's output of level l-1 and the shared experts and shared gate read
//                         the shared output of level l-1; the last level has no shared output
//   tower_k(z_k) = w2_k^T relu(W1_k z_k + b1_k) + b2_k                     [B] logit or value
//   binary task:     prediction = sigmoid(tower), loss = mean BCE-with-logits
//   regression task: prediction = tower,          loss = mean squared error
//   loss = sum_k weight_k * loss_k   (times loss_share under data parallelism)
//
// Experts are two-matrix MLPs d_model -> expert_hidden -> d_model (model.expert: relu or
// gelu), run as one grouped GEMM by sparse::MultiGateMixture. Gates are dense softmaxes
// (gate_top_k = 0, the papers' choice) or keep each row's top k experts.
//
// Parameters, gradients and activations live in arenas sized at construction for max_batch
// rows: forward and backward allocate nothing, so scoring a single row does not allocate.
// Parameter names: embed.C.weight, input.weight, input.bias, bottom.w1 ..., omoe.gate.0.w,
// omoe.experts.w1 ..., mmoe.gate.K.w, mmoe.experts.w1 ..., ple.L.task.K.gate.w,
// ple.L.shared.gate.w, ple.L.experts.w1 ..., tower.K.w1, tower.K.b1, tower.K.w2, tower.K.b2.
// The computation is MultitaskNet<R> (multitask_net.h), which tests also run in double.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "tabular/tabular_table.h"

namespace moe::tabular {

struct MultitaskModelConfig {
    std::string arch = "mmoe";  // "shared_bottom", "omoe", "mmoe" or "ple"
    int64_t d_model = 32;       // input projection width = experts' input and output width
    int64_t expert_hidden = 32; // hidden width of each expert (and of the shared bottom)
    std::string expert = "relu";  // "relu" or "gelu"
    int64_t n_experts = 8;      // omoe and mmoe: experts in the shared bank
    int64_t gate_top_k = 0;     // 0: dense softmax gates; k: each row keeps its top k
    int64_t ple_levels = 2;     // ple: extraction (CGC) levels, >= 1
    int64_t ple_shared_experts = 2;  // ple: shared experts per level
    int64_t ple_task_experts = 2;    // ple: experts of each task per level
    int64_t tower_hidden = 16;
    double init_std = 0.1;  // embeddings and gates ~ N(0, init_std); linear layers He/Kaiming

    void validate() const;  // errors name the key ("model.arch", ...) and the value
};

// What the data gives the model: the schema's columns and tasks and the encoding's table
// sizes.
struct MultitaskInputs {
    std::vector<int64_t> table_rows;  // [C] rows of each categorical column's embedding
    std::vector<int64_t> embed_dims;  // [C]
    int64_t n_numeric = 0;            // F
    std::vector<TargetKind> task_kinds;
    std::vector<double> task_weights;
    std::vector<std::string> task_names;

    static MultitaskInputs from(const TabularSchema& s, const TabularEncoding& e);
};

// One gate's view for inspection: which experts it mixes and their names.
struct GateInfo {
    std::string label;                 // e.g. "task income" or "level 1 task income", "shared"
    int64_t level = 0;                 // PLE level (0 otherwise)
    int64_t task = -1;                 // task index, or -1 for OMoE's and PLE's shared gates
    std::vector<std::string> experts;  // [width] e.g. "expert 3", "shared 0", "income 1"
};

struct MultitaskForwardOptions {
    double loss_share = 1.0;  // this process's share of the batch (data parallelism)
};

class MultitaskModel {
  public:
    MultitaskModel(const MultitaskModelConfig& cfg, const MultitaskInputs& in, int64_t max_batch);
    ~MultitaskModel();

    void init_weights(uint64_t seed);

    // cats: [B, C] embedding rows (each < table_rows[c], checked with an error naming the
    // column); nums: [B, F]; targets: [B, K] or null (then only predictions() are computed
    // and 0 returned). 1 <= B <= max_batch. Returns the weighted loss (times loss_share).
    double forward(const int32_t* cats, const float* nums, const float* targets, int64_t B,
                   const MultitaskForwardOptions& opt = {});
    // Accumulates d(loss)/d(param) into grads() for the last forward (which needs targets).
    void backward();

    const float* predictions() const;  // [B, K] probabilities (binary) or values (regression)
    // [K] each task's unweighted mean loss in the last forward with targets (not scaled by
    // loss_share).
    const std::vector<double>& task_losses() const;

    std::vector<GateInfo> gates() const;
    // [B, gates()[i].experts.size()] gate i's weights in the last forward.
    const float* gate_weights(int64_t i) const;

    const MultitaskModelConfig& config() const;
    const MultitaskInputs& inputs() const;
    Arena& params();
    Arena& grads();
    const Arena& params() const;
    int64_t num_params() const;
    // Multiply-adds x 2 of one row's forward (the experts each row runs included).
    double forward_flops_per_row() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace moe::tabular
