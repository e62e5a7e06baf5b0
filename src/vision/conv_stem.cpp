#include "vision/conv_stem.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/profile.h"
#include "core/rng.h"
#include "kernels/layernorm_gelu.h"

namespace moe::vision {

ConvStem::ConvStem(int64_t height, int64_t width, int64_t in_channels,
                   const std::vector<int64_t>& stage_channels, int64_t convs_per_stage,
                   double norm_eps, int64_t max_batch)
    : eps_(norm_eps), max_batch_(max_batch) {
    MOE_CHECK(!stage_channels.empty() && convs_per_stage >= 1 && max_batch > 0,
              "ConvStem: needs a stage, a conv per stage and a batch");
    int64_t h = height, w = width, c = in_channels;
    for (int64_t out_c : stage_channels) {
        Stage st;
        for (int64_t j = 0; j < convs_per_stage; ++j) {
            ConvUnit u;
            u.shape.in_channels = c;
            u.shape.out_channels = out_c;
            u.shape.kernel = 3;
            u.shape.stride = 1;
            u.shape.padding = 1;
            u.shape.height = h;
            u.shape.width = w;
            u.conv = std::make_unique<nn::Conv2d>(u.shape);
            u.pixels_per_image = h * w;
            st.units.push_back(std::move(u));
            c = out_c;
        }
        st.pool = std::make_unique<nn::MaxPool2d>(nn::Pool2dShape{c, 2, 2, h, w});
        h /= 2, w /= 2;
        stages_.push_back(std::move(st));
    }
    out_h_ = h, out_w_ = w, out_c_ = c;
}

void ConvStem::declare(Arena& params, const std::string& prefix) {
    const int64_t B = max_batch_;
    int64_t largest = 0;
    for (size_t s = 0; s < stages_.size(); ++s) {
        Stage& st = stages_[s];
        for (size_t j = 0; j < st.units.size(); ++j) {
            ConvUnit& u = st.units[j];
            const std::string p = prefix + std::to_string(s) + "." + std::to_string(j) + ".";
            const int64_t oc = u.shape.out_channels, ic = u.shape.in_channels;
            u.weight = params.add(p + "conv.weight", {oc, ic, 3, 3});
            u.bias = params.add(p + "conv.bias", {oc});
            u.norm_w = params.add(p + "norm.weight", {oc});
            u.norm_b = params.add(p + "norm.bias", {oc});
            const int64_t rows = B * u.pixels_per_image;
            u.conv_out = acts_.add(p + "conv_out", {rows, oc});
            u.mean = acts_.add(p + "mean", {rows});
            u.rstd = acts_.add(p + "rstd", {rows});
            u.act_grad = acts_.add(p + "act_grad", {rows, oc});  // gelu' at the norm's output
            u.act = acts_.add(p + "act", {rows, oc});
            largest = std::max({largest, rows * oc, rows * ic});
        }
        const ConvUnit& last = st.units.back();
        const int64_t c = last.shape.out_channels;
        if (s + 1 < stages_.size())
            st.pooled = acts_.add(prefix + std::to_string(s) + ".pooled",
                                  {B * (last.shape.height / 2) * (last.shape.width / 2), c});
        st.workspace = acts_.add(prefix + std::to_string(s) + ".pool_workspace",
                                 {int64_t(st.pool->workspace_bytes(B))}, DType::u8);
    }
    d_a_ = acts_.add("stem.d_a", {largest});
    d_b_ = acts_.add("stem.d_b", {largest});
    acts_.allocate();
}

void ConvStem::bind(Arena& params, Arena& grads) {
    params_ = &params;
    grads_ = &grads;
}

void ConvStem::init_weights(uint64_t seed) {
    const Rng base(seed);
    uint64_t stream = 0;
    for (Stage& st : stages_)
        for (ConvUnit& u : st.units) {
            Rng rng = base.fork(stream++);
            const Tensor w = params_->get(u.weight);
            const double fan_in = double(u.shape.in_channels * 9);
            const float std = float(std::sqrt(2.0 / fan_in));
            for (int64_t i = 0; i < w.numel(); ++i) w.ptr<float>()[i] = std * rng.normal();
            float* g = params_->get(u.norm_w).ptr<float>();
            std::fill(g, g + u.shape.out_channels, 1.0f);
        }
}

void ConvStem::forward(float* out, const float* images, int64_t B) {
    MOE_CHECK(B > 0 && B <= max_batch_, "ConvStem::forward: batch ", B, " outside [1, ", max_batch_,
              "]");
    images_ = images;
    auto P = [&](int id) { return params_->get(id).ptr<float>(); };
    const float* x = images;
    for (size_t s = 0; s < stages_.size(); ++s) {
        Stage& st = stages_[s];
        for (ConvUnit& u : st.units) {
            const int64_t rows = B * u.pixels_per_image, c = u.shape.out_channels;
            {
                MOE_PROFILE_SCOPE("conv_fwd");
                u.conv->forward(a(u.conv_out), x, P(u.weight), P(u.bias), B);
            }
            MOE_PROFILE_SCOPE("stem_norm_act");
            kernels::layernorm_gelu_forward(a(u.act), a(u.act_grad), a(u.mean), a(u.rstd),
                                            a(u.conv_out), P(u.norm_w), P(u.norm_b), rows, c,
                                            float(eps_));
            x = a(u.act);
        }
        MOE_PROFILE_SCOPE("pool_fwd");
        // The last stage pools straight into `out` (backward never reads its own output).
        float* pooled = s + 1 < stages_.size() ? a(st.pooled) : out;
        st.pool->forward(pooled, acts_.get(st.workspace).data, x, B);
        x = pooled;
    }
}

void ConvStem::backward(float* d_out, int64_t B) {
    auto P = [&](int id) { return params_->get(id).ptr<float>(); };
    auto G = [&](int id) { return grads_->get(id).ptr<float>(); };
    float* d_cur = d_out;  // gradient of the current stage's output
    for (size_t s = stages_.size(); s-- > 0;) {
        Stage& st = stages_[s];
        // Through the pooling: d(act of the stage's last conv).
        float* d_act = a(d_a_) == d_cur ? a(d_b_) : a(d_a_);
        {
            MOE_PROFILE_SCOPE("pool_bwd");
            // Overwrites d_act (zeros off the maxima): no zeroing pass first.
            st.pool->backward(d_act, d_cur, acts_.get(st.workspace).data, B, false);
        }
        for (size_t j = st.units.size(); j-- > 0;) {
            ConvUnit& u = st.units[j];
            const int64_t n = B * u.pixels_per_image, oc = u.shape.out_channels;
            float* d_other = d_act == a(d_a_) ? a(d_b_) : a(d_a_);
            {
                MOE_PROFILE_SCOPE("stem_norm_act");
                // d(act) -> d(conv_out), in place: the fused kernel writes d_in.
                kernels::layernorm_gelu_backward(d_act, G(u.norm_w), G(u.norm_b), d_act,
                                                 a(u.act_grad), a(u.conv_out), P(u.norm_w),
                                                 a(u.mean), a(u.rstd), n, oc);
            }
            const bool first = s == 0 && j == 0;
            const float* in =
                first ? images_ : (j > 0 ? a(st.units[j - 1].act) : a(stages_[s - 1].pooled));
            MOE_PROFILE_SCOPE("conv_bwd");
            // d_other is overwritten (accumulate_d_in = false): no zeroing pass first.
            u.conv->backward(first ? nullptr : d_other, G(u.weight), G(u.bias), d_act, in,
                             P(u.weight), B, false);
            d_act = d_other;  // d(this conv's input) = d(previous unit's act or pooled)
        }
        d_cur = d_act;  // d(previous stage's pooled output)
    }
}

}  // namespace moe::vision
