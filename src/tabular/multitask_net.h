// MultitaskNet<R>: the computation behind MultitaskModel (see multitask_model.h for the
// model), templated on the real type so that tests can run the same code in double (finite
// differences, PyTorch fixtures in float64). MultitaskModel is MultitaskNet<float> behind
// the declared API; nothing else should need this header.
//
// Arenas: params and grads (one layout), acts (activations and backward buffers for
// max_batch rows), declared and allocated in the constructor. forward/backward only read
// and write them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/multi_gate_moe.h"
#include "moe/ple_layer.h"
#include "tabular/multitask_model.h"

namespace moe::tabular {

template <class R>
class MultitaskNet {
  public:
    MultitaskNet(const MultitaskModelConfig& cfg, const MultitaskInputs& in, int64_t max_batch);

    void init_weights(uint64_t seed);

    // cats: [B, C]; nums: [B, F]; targets: [B, K] or null. As MultitaskModel::forward.
    double forward(const int32_t* cats, const float* nums, const float* targets, int64_t B,
                   double loss_share = 1.0);
    void backward();

    const R* predictions() const { return pred_; }  // [B, K]
    const std::vector<double>& task_losses() const { return task_losses_; }
    std::vector<GateInfo> gates() const;
    const R* gate_weights(int64_t i) const;  // [B, gates()[i].experts.size()]

    const MultitaskModelConfig& config() const { return cfg_; }
    const MultitaskInputs& inputs() const { return in_; }
    Arena& params() { return params_; }
    Arena& grads() { return grads_; }
    const Arena& params() const { return params_; }
    int64_t num_params() const;
    double forward_flops_per_row() const;

  private:
    struct Tower {
        int w1, b1, w2, b2;  // [Ht, d], [Ht], [1, Ht], [1]
    };
    R* p(int id) const { return params_.get(id).template ptr<R>(); }
    R* g(int id) const { return grads_.get(id).template ptr<R>(); }
    R* a(int id) const { return acts_.get(id).template ptr<R>(); }
    const R* task_input(int64_t k) const;  // z_k [B, d]: what tower k reads
    R* d_task_input(int64_t k) const;      // its gradient [B, d]
    void run_body(int64_t B);              // h -> z
    void body_backward(int64_t B);         // d_z -> d_h

    MultitaskModelConfig cfg_;
    MultitaskInputs in_;
    int64_t max_batch_, C_, F_, K_, d_in_, d_, L_ = 0;
    std::vector<int64_t> embed_off_;  // [C] column of embedding c in e
    Arena params_, grads_, acts_;

    std::vector<int> embed_;  // [C] embed.c.weight [rows_c, dim_c]
    int in_w_ = -1, in_b_ = -1;
    int bot_w1_ = -1, bot_b1_ = -1, bot_w2_ = -1, bot_b2_ = -1;
    std::vector<Tower> towers_;
    std::unique_ptr<sparse::MultiGateMoe<R>> moe_;           // omoe (1 gate), mmoe (K)
    std::vector<std::unique_ptr<sparse::PleLayer<R>>> ple_;  // [L]

    // Activations (ids into acts_, then pointers once allocated).
    R* e_ = nullptr;            // [B, d_in] embeddings and numbers
    R* h_ = nullptr;            // [B, d]
    R* bot_h_ = nullptr;        // [B, H] shared bottom: pre-activation
    R* bot_act_ = nullptr;      // [B, H]
    R* bot_scratch_ = nullptr;  // [2, B, H]
    R* z_ = nullptr;            // [L or 1, K + 1, B, d] body outputs (ple: per level, shared last)
    R* d_z_ = nullptr;          // same shape
    R* t_h_ = nullptr;          // [K, B, Ht] tower pre-activations
    R* t_act_ = nullptr;        // [K, B, Ht]
    R* d_t_ = nullptr;          // [2, B, Ht] tower backward scratch
    R* logits_ = nullptr;       // [K, B]
    R* d_logits_ = nullptr;     // [K, B]
    R* tgt_ = nullptr;          // [K, B] targets, task-major
    R* pred_ = nullptr;         // [B, K]
    R* d_h_ = nullptr;          // [B, d]
    R* d_e_ = nullptr;          // [B, d_in]
    int32_t* cats_ = nullptr;   // [B, C] the last forward's categories (backward reads them)

    // Pointer arrays for the layers' calls, sized at construction.
    std::vector<R*> outs_;
    std::vector<const R*> d_outs_, ins_;
    std::vector<R*> d_ins_;

    int64_t B_ = 0;
    bool have_targets_ = false;
    double loss_share_ = 1.0;
    std::vector<double> task_losses_;  // [K]
};

extern template class MultitaskNet<float>;
extern template class MultitaskNet<double>;

}  // namespace moe::tabular
