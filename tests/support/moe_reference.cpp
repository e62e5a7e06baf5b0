// The dense double-precision reference of the MoE layer (see reference.h). Plain loops,
// one token and one expert at a time; written for clarity, not speed.
#include "moe_reference.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace moe::sparse::reference {

namespace {

double sigmoid(double x) {
    return 1.0 / (1.0 + std::exp(-x));
}
double silu(double x) {
    return x * sigmoid(x);
}
double silu_grad(double x) {
    return sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x)));
}
double gelu(double x) {
    return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
double gelu_grad(double x) {
    const double cdf = 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    return cdf + x * pdf;
}

// y[d] = W[rows, cols] v[cols] (rows = d of y).
void matvec(double* y, const double* W, const double* v, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; ++i) {
        double s = 0;
        for (int64_t j = 0; j < cols; ++j) s += W[i * cols + j] * v[j];
        y[i] = s;
    }
}
// y[cols] += W^T v (v: [rows]).
void matvec_t_add(double* y, const double* W, const double* v, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) y[j] += W[i * cols + j] * v[i];
}
// dW[rows, cols] += a[rows] b[cols]^T.
void outer_add(double* dW, const double* a, const double* b, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) dW[i * cols + j] += a[i] * b[j];
}

// One FFN on one token: SwiGLU (w3 given) or GELU (w3 null). y: [d].
void ffn_forward(double* y, const double* x, const double* w1, const double* w3, const double* w2,
                 int64_t d, int64_t H) {
    std::vector<double> h1(static_cast<size_t>(H)), h3(static_cast<size_t>(H)),
        a(static_cast<size_t>(H));
    matvec(h1.data(), w1, x, H, d);
    if (w3) {
        matvec(h3.data(), w3, x, H, d);
        for (int64_t i = 0; i < H; ++i) a[i] = silu(h1[i]) * h3[i];
    } else {
        for (int64_t i = 0; i < H; ++i) a[i] = gelu(h1[i]);
    }
    matvec(y, w2, a.data(), d, H);
}

// Backward of ffn_forward for upstream dy [d]: accumulates dx [d], dw1, dw3, dw2.
void ffn_backward(double* dx, double* dw1, double* dw3, double* dw2, const double* dy,
                  const double* x, const double* w1, const double* w3, const double* w2, int64_t d,
                  int64_t H) {
    std::vector<double> h1(static_cast<size_t>(H)), h3(static_cast<size_t>(H)),
        a(static_cast<size_t>(H)), da(static_cast<size_t>(H), 0.0);
    matvec(h1.data(), w1, x, H, d);
    if (w3) matvec(h3.data(), w3, x, H, d);
    for (int64_t i = 0; i < H; ++i) a[i] = w3 ? silu(h1[i]) * h3[i] : gelu(h1[i]);
    outer_add(dw2, dy, a.data(), d, H);
    matvec_t_add(da.data(), w2, dy, d, H);
    std::vector<double> dh1(static_cast<size_t>(H)), dh3(static_cast<size_t>(H));
    for (int64_t i = 0; i < H; ++i) {
        if (w3) {
            dh1[i] = da[i] * h3[i] * silu_grad(h1[i]);
            dh3[i] = da[i] * silu(h1[i]);
        } else {
            dh1[i] = da[i] * gelu_grad(h1[i]);
        }
    }
    outer_add(dw1, dh1.data(), x, H, d);
    matvec_t_add(dx, w1, dh1.data(), H, d);
    if (w3) {
        outer_add(dw3, dh3.data(), x, H, d);
        matvec_t_add(dx, w3, dh3.data(), H, d);
    }
}

// Sum of the shared experts on one token (before the gate). y: [d].
void shared_sum(double* y, const Model& m, const double* x) {
    std::fill(y, y + m.d, 0.0);
    std::vector<double> tmp(static_cast<size_t>(m.d));
    const int64_t wsz = m.Hs * m.d;
    for (int64_t s = 0; s < m.S; ++s) {
        ffn_forward(tmp.data(), x, m.sw1.data() + s * wsz, m.sw3.data() + s * wsz,
                    m.sw2.data() + s * wsz, m.d, m.Hs);
        for (int64_t j = 0; j < m.d; ++j) y[j] += tmp[j];
    }
}

double shared_gate_value(const Model& m, const double* x) {
    if (!m.shared_gate) return 1.0;
    double z = 0;
    for (int64_t j = 0; j < m.d; ++j) z += x[j] * m.sgate[j];
    return sigmoid(z);
}

}  // namespace

std::vector<double> tensor_as_f64(const Arena& arena, const std::string& name) {
    const Tensor t = arena.get(name);
    std::vector<double> v(size_t(t.numel()));
    if (t.dtype == DType::f64) {
        const double* p = t.ptr<double>();
        std::copy(p, p + t.numel(), v.begin());
    } else {
        const float* p = t.ptr<float>();
        std::copy(p, p + t.numel(), v.begin());
    }
    return v;
}

Model model_from(const Arena& params, const std::string& prefix, const MoeConfig& cfg) {
    Model m;
    m.kind = cfg.expert;
    m.E = cfg.n_experts;
    m.d = cfg.d_model;
    m.H = cfg.d_expert;
    m.w1 = tensor_as_f64(params, prefix + "experts.w1");
    if (m.kind == ExpertKind::swiglu) m.w3 = tensor_as_f64(params, prefix + "experts.w3");
    m.w2 = tensor_as_f64(params, prefix + "experts.w2");
    m.S = cfg.n_shared;
    m.Hs = cfg.d_shared > 0 ? cfg.d_shared : cfg.d_expert;
    m.shared_gate = cfg.shared_gate && m.S > 0;
    if (m.S > 0) {
        m.sw1 = tensor_as_f64(params, prefix + "shared.w1");
        m.sw3 = tensor_as_f64(params, prefix + "shared.w3");
        m.sw2 = tensor_as_f64(params, prefix + "shared.w2");
        if (m.shared_gate) m.sgate = tensor_as_f64(params, prefix + "shared.gate");
    }
    return m;
}

std::vector<double> forward(const Model& m, const std::vector<double>& x, int64_t T,
                            const std::vector<double>& gate) {
    const int64_t d = m.d, E = m.E, wsz = m.H * m.d;
    MOE_CHECK(int64_t(x.size()) == T * d && int64_t(gate.size()) == T * E,
              "reference::forward: sizes");
    std::vector<double> out(size_t(T * d), 0.0), y(static_cast<size_t>(d)),
        sh(static_cast<size_t>(d));
    const bool glu = m.kind == ExpertKind::swiglu;
    for (int64_t t = 0; t < T; ++t) {
        const double* xt = x.data() + t * d;
        double* ot = out.data() + t * d;
        for (int64_t e = 0; e < E; ++e) {  // every expert on every token, then the mask
            ffn_forward(y.data(), xt, m.w1.data() + e * wsz, glu ? m.w3.data() + e * wsz : nullptr,
                        m.w2.data() + e * wsz, d, m.H);
            for (int64_t j = 0; j < d; ++j) ot[j] += gate[t * E + e] * y[j];
        }
        if (m.S > 0) {
            shared_sum(sh.data(), m, xt);
            const double g = shared_gate_value(m, xt);
            for (int64_t j = 0; j < d; ++j) ot[j] += g * sh[j];
        }
    }
    return out;
}

Grads backward(const Model& m, const std::vector<double>& x, int64_t T,
               const std::vector<double>& gate, const std::vector<double>& d_out) {
    const int64_t d = m.d, E = m.E, wsz = m.H * m.d, swsz = m.Hs * m.d;
    const bool glu = m.kind == ExpertKind::swiglu;
    Grads g;
    g.d_x.assign(size_t(T * d), 0.0);
    g.d_w1.assign(m.w1.size(), 0.0);
    g.d_w3.assign(m.w3.size(), 0.0);
    g.d_w2.assign(m.w2.size(), 0.0);
    g.d_sw1.assign(m.sw1.size(), 0.0);
    g.d_sw3.assign(m.sw3.size(), 0.0);
    g.d_sw2.assign(m.sw2.size(), 0.0);
    g.d_sgate.assign(m.sgate.size(), 0.0);
    g.d_gate.assign(size_t(T * E), 0.0);
    std::vector<double> y(static_cast<size_t>(d)), dy(static_cast<size_t>(d)),
        sh(static_cast<size_t>(d));
    for (int64_t t = 0; t < T; ++t) {
        const double* xt = x.data() + t * d;
        const double* go = d_out.data() + t * d;
        double* dx = g.d_x.data() + t * d;
        for (int64_t e = 0; e < E; ++e) {
            const double* w1 = m.w1.data() + e * wsz;
            const double* w3 = glu ? m.w3.data() + e * wsz : nullptr;
            const double* w2 = m.w2.data() + e * wsz;
            ffn_forward(y.data(), xt, w1, w3, w2, d, m.H);
            double dot = 0;
            for (int64_t j = 0; j < d; ++j) dot += go[j] * y[j];
            g.d_gate[t * E + e] = dot;
            const double ge = gate[t * E + e];
            for (int64_t j = 0; j < d; ++j) dy[j] = ge * go[j];
            ffn_backward(dx, g.d_w1.data() + e * wsz, glu ? g.d_w3.data() + e * wsz : nullptr,
                         g.d_w2.data() + e * wsz, dy.data(), xt, w1, w3, w2, d, m.H);
        }
        if (m.S > 0) {
            const double gv = shared_gate_value(m, xt);
            if (m.shared_gate) {
                shared_sum(sh.data(), m, xt);
                double dgv = 0;
                for (int64_t j = 0; j < d; ++j) dgv += go[j] * sh[j];
                const double dz = dgv * gv * (1.0 - gv);
                for (int64_t j = 0; j < d; ++j) {
                    g.d_sgate[j] += dz * xt[j];
                    dx[j] += dz * m.sgate[j];
                }
            }
            for (int64_t j = 0; j < d; ++j) dy[j] = gv * go[j];
            for (int64_t s = 0; s < m.S; ++s)
                ffn_backward(dx, g.d_sw1.data() + s * swsz, g.d_sw3.data() + s * swsz,
                             g.d_sw2.data() + s * swsz, dy.data(), xt, m.sw1.data() + s * swsz,
                             m.sw3.data() + s * swsz, m.sw2.data() + s * swsz, d, m.Hs);
        }
    }
    return g;
}

template <class R>
std::vector<double> dense_gate(const RoutingPlan<R>& plan) {
    std::vector<double> gate(size_t(plan.T * plan.E), 0.0);
    for (int64_t e = 0; e < plan.E; ++e)
        for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r)
            gate[size_t(plan.row_token[r] * plan.E + e)] += double(plan.row_weight[r]);
    return gate;
}

template <class R>
std::vector<double> kept_mask(const RoutingPlan<R>& plan) {
    std::vector<double> mask(size_t(plan.T * plan.E), 0.0);
    for (int64_t e = 0; e < plan.E; ++e)
        for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r)
            mask[size_t(plan.row_token[r] * plan.E + e)] = 1.0;
    return mask;
}

template std::vector<double> dense_gate<float>(const RoutingPlan<float>&);
template std::vector<double> dense_gate<double>(const RoutingPlan<double>&);
template std::vector<double> kept_mask<float>(const RoutingPlan<float>&);
template std::vector<double> kept_mask<double>(const RoutingPlan<double>&);

std::vector<double> logits(const std::vector<double>& x, const std::vector<double>& w,
                           const std::vector<double>& b, int64_t T, int64_t d, int64_t E) {
    std::vector<double> l(size_t(T * E));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < E; ++e) {
            double s = b[size_t(e)];
            for (int64_t j = 0; j < d; ++j) s += x[size_t(t * d + j)] * w[size_t(e * d + j)];
            l[size_t(t * E + e)] = s;
        }
    return l;
}

namespace {

struct GateParts {
    std::vector<double> p, lse, chosen, w, f;  // [T,E], [T], [T,E], [T,E], [E]
    std::vector<double> imp;                   // [E]
};

GateParts gate_parts(const std::vector<double>& l, const std::vector<double>& kept, int64_t T,
                     int64_t E, const MoeConfig& cfg) {
    GateParts g;
    g.p.assign(size_t(T * E), 0.0);
    g.lse.assign(static_cast<size_t>(T), 0.0);
    g.chosen.assign(size_t(T * E), 0.0);
    g.w.assign(size_t(T * E), 0.0);
    g.f.assign(static_cast<size_t>(E), 0.0);
    g.imp.assign(static_cast<size_t>(E), 0.0);
    const int64_t k = cfg.top_k;
    const bool joint = cfg.softmax_topk.renormalize || cfg.softmax_topk.softmax_after_topk;
    for (int64_t t = 0; t < T; ++t) {
        const double* lt = l.data() + t * E;
        const double mx = *std::max_element(lt, lt + E);
        double s = 0;
        for (int64_t e = 0; e < E; ++e) s += std::exp(lt[e] - mx);
        g.lse[size_t(t)] = mx + std::log(s);
        for (int64_t e = 0; e < E; ++e) g.p[size_t(t * E + e)] = std::exp(lt[e] - g.lse[size_t(t)]);
        // Chosen: expert e is in the top k when fewer than k others beat it (a larger
        // logit, or an equal one at a lower index).
        for (int64_t e = 0; e < E; ++e) {
            int64_t better = 0;
            for (int64_t o = 0; o < E; ++o) better += lt[o] > lt[e] || (lt[o] == lt[e] && o < e);
            g.chosen[size_t(t * E + e)] = better < k ? 1.0 : 0.0;
        }
        double cs = 0;
        for (int64_t e = 0; e < E; ++e) cs += g.chosen[size_t(t * E + e)] * g.p[size_t(t * E + e)];
        for (int64_t e = 0; e < E; ++e)
            g.w[size_t(t * E + e)] =
                g.chosen[size_t(t * E + e)] * g.p[size_t(t * E + e)] / (joint ? cs : 1.0);
    }
    for (int64_t e = 0; e < E; ++e) {
        for (int64_t t = 0; t < T; ++t) {
            g.f[size_t(e)] += kept[size_t(t * E + e)];
            g.imp[size_t(e)] += g.w[size_t(t * E + e)];
        }
        g.f[size_t(e)] /= double(T * k);
    }
    return g;
}

// CV^2 = E sum v^2 / (sum v)^2 - 1 (the same as variance / mean^2) and its gradient.
double cv2(const std::vector<double>& v, std::vector<double>* grad) {
    const double n = double(v.size());
    double s = 0, q = 0;
    for (double x : v) {
        s += x;
        q += x * x;
    }
    if (grad) grad->assign(v.size(), 0.0);
    if (s == 0) return 0;
    if (grad)
        for (size_t i = 0; i < v.size(); ++i)
            (*grad)[i] = n * (2.0 * v[i] / (s * s) - 2.0 * q / (s * s * s));
    return n * q / (s * s) - 1.0;
}

}  // namespace

SoftmaxTopkGate softmax_topk_gate(const std::vector<double>& l, const std::vector<double>& kept,
                                  int64_t T, int64_t E, const MoeConfig& cfg) {
    const GateParts g = gate_parts(l, kept, T, E, cfg);
    SoftmaxTopkGate out;
    out.chosen = g.chosen;
    out.gate.assign(size_t(T * E), 0.0);
    for (size_t i = 0; i < out.gate.size(); ++i) out.gate[i] = kept[i] * g.w[i];
    for (int64_t e = 0; e < E; ++e) {
        double P = 0;
        for (int64_t t = 0; t < T; ++t) P += g.p[size_t(t * E + e)];
        out.aux += g.f[size_t(e)] * P / double(T);
    }
    out.aux *= double(E);
    for (int64_t t = 0; t < T; ++t) out.z += g.lse[size_t(t)] * g.lse[size_t(t)];
    out.z /= double(T);
    out.importance = cv2(g.imp, nullptr);
    out.total = cfg.aux_loss_coef * out.aux + cfg.z_loss_coef * out.z +
                cfg.importance_coef * out.importance;
    return out;
}

std::vector<double> softmax_topk_gate_backward(const std::vector<double>& l,
                                               const std::vector<double>& kept, int64_t T,
                                               int64_t E, const MoeConfig& cfg,
                                               const std::vector<double>& d_gate) {
    const GateParts g = gate_parts(l, kept, T, E, cfg);
    const bool joint = cfg.softmax_topk.renormalize || cfg.softmax_topk.softmax_after_topk;
    std::vector<double> d_imp;
    cv2(g.imp, &d_imp);
    std::vector<double> d_l(size_t(T * E), 0.0), dw(static_cast<size_t>(E)),
        dp(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
        const double* p = g.p.data() + t * E;
        const double* C = g.chosen.data() + t * E;
        // dL/dw_i: through the gate (kept only) and the importance loss (every choice).
        for (int64_t i = 0; i < E; ++i)
            dw[size_t(i)] = kept[size_t(t * E + i)] * d_gate[size_t(t * E + i)] +
                            cfg.importance_coef * C[i] * d_imp[size_t(i)];
        double S = 0;
        for (int64_t j = 0; j < E; ++j) S += C[j] * p[j];
        // dL/dp_j = sum_i dL/dw_i dw_i/dp_j, w_i = C_i p_i / S (or C_i p_i), plus aux.
        for (int64_t j = 0; j < E; ++j) {
            double s = 0;
            for (int64_t i = 0; i < E; ++i) {
                const double dwdp =
                    joint ? C[i] * (i == j ? 1.0 : 0.0) / S - C[i] * p[i] * C[j] / (S * S)
                          : C[i] * (i == j ? 1.0 : 0.0);
                s += dw[size_t(i)] * dwdp;
            }
            dp[size_t(j)] = s + cfg.aux_loss_coef * double(E) * g.f[size_t(j)] / double(T);
        }
        // dL/dl_j = sum_i dL/dp_i p_i (delta_ij - p_j), plus the z-loss 2 lse p_j / T.
        for (int64_t j = 0; j < E; ++j) {
            double s = 0;
            for (int64_t i = 0; i < E; ++i) s += dp[size_t(i)] * p[i] * ((i == j) - p[j]);
            d_l[size_t(t * E + j)] =
                s + cfg.z_loss_coef * 2.0 * g.lse[size_t(t)] * p[j] / double(T);
        }
    }
    return d_l;
}

}  // namespace moe::sparse::reference
