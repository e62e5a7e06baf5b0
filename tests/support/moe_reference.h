// The naive dense reference of the MoE layer, in double, for tests of every router.
//
// It runs every expert on every token, Y[t, e] = expert_e(x[t]), then weights by a dense
// gate G [T, E] taken from a routing plan (G[t, e] = the row weight of (t, e), 0 where the
// plan has no row): out[t] = sum_e G[t, e] Y[t, e] + shared(x[t]). Nothing is shared with
// the optimised path except the formulas: no plan, no blocks, no GEMM, one token at a time,
// so a bug in dispatch, grouping or the kernels cannot cancel out.
//
// Backward gives every gradient, including d_gate[t, e] = d_out[t] . Y[t, e] for all
// (t, e), from which a router test gets its gate's gradient (through its own dense form
// of the gate, e.g. softmax_topk_gate_backward below) and compares with the router's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "moe/moe_config.h"
#include "moe/routing_plan.h"

namespace moe::sparse::reference {

// Every parameter of the layer's experts, in double.
struct Model {
    ExpertKind kind = ExpertKind::swiglu;
    int64_t E = 0, d = 0, H = 0;
    std::vector<double> w1, w3, w2;  // [E, H, d], [E, H, d] (SwiGLU), [E, d, H]
    int64_t S = 0, Hs = 0;           // shared experts (always SwiGLU)
    bool shared_gate = false;
    std::vector<double> sw1, sw3, sw2;  // [S, Hs, d], [S, Hs, d], [S, d, Hs]
    std::vector<double> sgate;          // [d]
};

// Reads the expert and shared-expert parameters of a layer declared under `prefix`
// (f32 or f64 arena).
Model model_from(const Arena& params, const std::string& prefix, const MoeConfig& cfg);
// Reads any f32/f64 tensor of an arena as doubles.
std::vector<double> tensor_as_f64(const Arena& arena, const std::string& name);

struct Grads {
    std::vector<double> d_x;               // [T, d]
    std::vector<double> d_w1, d_w3, d_w2;  // like Model
    std::vector<double> d_sw1, d_sw3, d_sw2, d_sgate;
    std::vector<double> d_gate;  // [T, E]
};

// out [T, d] = sum_e gate[t, e] expert_e(x[t]) + shared. x: [T, d], gate: [T, E].
std::vector<double> forward(const Model& m, const std::vector<double>& x, int64_t T,
                            const std::vector<double>& gate);
// Gradients of sum(out * d_out) (d_out: [T, d]).
Grads backward(const Model& m, const std::vector<double>& x, int64_t T,
               const std::vector<double>& gate, const std::vector<double>& d_out);

// The plan as a dense gate [T, E] (sum of the row weights of each (t, e)), and the mask of
// (t, e) pairs that have a row.
template <class R>
std::vector<double> dense_gate(const RoutingPlan<R>& plan);
template <class R>
std::vector<double> kept_mask(const RoutingPlan<R>& plan);

// logits [T, E] = x [T, d] @ w[E, d]^T + b[E].
std::vector<double> logits(const std::vector<double>& x, const std::vector<double>& w,
                           const std::vector<double>& b, int64_t T, int64_t d, int64_t E);

// softmax_topk written densely: p = softmax(logits); chosen C = the k largest logits per
// token (ties to the lower index); w = C p (/ sum_e C p with renormalize or
// softmax_after_topk); gate = kept * w. Losses with the plan's kept mask:
// aux = E sum_e f_e P_e (f_e = sum_t kept / (T k), P_e = mean_t p), z = mean_t lse_t^2,
// importance = CV^2_e(sum_t C w); total = the cfg-weighted sum.
struct SoftmaxTopkGate {
    std::vector<double> gate;    // [T, E]
    std::vector<double> chosen;  // [T, E] 0/1
    double aux = 0, z = 0, importance = 0, total = 0;
};
SoftmaxTopkGate softmax_topk_gate(const std::vector<double>& logits,
                                  const std::vector<double>& kept, int64_t T, int64_t E,
                                  const MoeConfig& cfg);
// d_logits [T, E] of sum(gate * d_gate) + total, by the chain rule through the full
// softmax Jacobian (with f and the masks held fixed, as the router defines them).
std::vector<double> softmax_topk_gate_backward(const std::vector<double>& logits,
                                               const std::vector<double>& kept, int64_t T,
                                               int64_t E, const MoeConfig& cfg,
                                               const std::vector<double>& d_gate);

}  // namespace moe::sparse::reference
