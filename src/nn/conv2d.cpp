#include "nn/conv2d.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/dnnl_primitives.h"
#include "kernels/grouped_reduce.h"

namespace moe::nn {

namespace cpu = kernels::cpu;

std::string Conv2dShape::str() const {
    return detail::concat("in ", in_channels, "x", height, "x", width, ", ", out_channels,
                          " out channels, kernel ", kernel, " stride ", stride, " padding ",
                          padding);
}

void Conv2dShape::validate(const char* op) const {
    MOE_REQUIRE(in_channels > 0 && out_channels > 0, op, ": channel counts must be positive (",
                str(), ")");
    MOE_REQUIRE(height > 0 && width > 0, op, ": input size must be positive (", str(), ")");
    MOE_REQUIRE(kernel > 0 && stride > 0 && padding >= 0, op,
                ": kernel and stride must be positive and padding not negative (", str(), ")");
    MOE_REQUIRE(kernel <= height + 2 * padding && kernel <= width + 2 * padding, op, ": kernel ",
                kernel, " larger than padded input ", height + 2 * padding, "x",
                width + 2 * padding, " (", str(), ")");
}

// ---- reference ----

template <class R>
void conv2d_forward_reference(R* out, const R* in, const R* weight, const R* bias, int64_t B,
                              const Conv2dShape& s) {
    s.validate("conv2d_forward_reference");
    MOE_CHECK(B >= 0, "conv2d_forward_reference: negative batch ", B);
    const int64_t IC = s.in_channels, OC = s.out_channels, K = s.kernel, H = s.height, W = s.width,
                  OH = s.out_height(), OW = s.out_width();
    for (int64_t b = 0; b < B; ++b)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow)
                for (int64_t oc = 0; oc < OC; ++oc) {
                    double acc = bias ? double(bias[oc]) : 0.0;
                    for (int64_t kh = 0; kh < K; ++kh) {
                        const int64_t ih = oh * s.stride - s.padding + kh;
                        if (ih < 0 || ih >= H) continue;
                        for (int64_t kw = 0; kw < K; ++kw) {
                            const int64_t iw = ow * s.stride - s.padding + kw;
                            if (iw < 0 || iw >= W) continue;
                            const R* x = in + ((b * H + ih) * W + iw) * IC;
                            for (int64_t ic = 0; ic < IC; ++ic)
                                acc += double(x[ic]) *
                                       double(weight[((oc * IC + ic) * K + kh) * K + kw]);
                        }
                    }
                    out[((b * OH + oh) * OW + ow) * OC + oc] = R(acc);
                }
}

template <class R>
void conv2d_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                               const R* weight, int64_t B, const Conv2dShape& s) {
    s.validate("conv2d_backward_reference");
    MOE_CHECK(B >= 0, "conv2d_backward_reference: negative batch ", B);
    const int64_t IC = s.in_channels, OC = s.out_channels, K = s.kernel, H = s.height, W = s.width,
                  OH = s.out_height(), OW = s.out_width(), S = s.stride, P = s.padding;
    // Output position along one dimension that tap k of the kernel maps input i to, or -1.
    auto out_pos = [S, P](int64_t i, int64_t k, int64_t n_out) -> int64_t {
        const int64_t t = i + P - k;
        if (t < 0 || t % S != 0 || t / S >= n_out) return -1;
        return t / S;
    };
    if (d_in) {
        // Gathered per input element so that each sum runs in double.
        for (int64_t b = 0; b < B; ++b)
            for (int64_t ih = 0; ih < H; ++ih)
                for (int64_t iw = 0; iw < W; ++iw)
                    for (int64_t ic = 0; ic < IC; ++ic) {
                        double acc = 0.0;
                        for (int64_t kh = 0; kh < K; ++kh) {
                            const int64_t oh = out_pos(ih, kh, OH);
                            if (oh < 0) continue;
                            for (int64_t kw = 0; kw < K; ++kw) {
                                const int64_t ow = out_pos(iw, kw, OW);
                                if (ow < 0) continue;
                                const R* g = d_out + ((b * OH + oh) * OW + ow) * OC;
                                for (int64_t oc = 0; oc < OC; ++oc)
                                    acc += double(g[oc]) *
                                           double(weight[((oc * IC + ic) * K + kh) * K + kw]);
                            }
                        }
                        d_in[((b * H + ih) * W + iw) * IC + ic] += R(acc);
                    }
    }
    // Sums over images [first, first + rows), in the canonical order of grouped_reduce.h.
    kernels::grouped_rows_reduce(
        d_weight, OC * IC * K * K, B, [&](R* dw, int64_t first, int64_t rows) {
            for (int64_t oc = 0; oc < OC; ++oc)
                for (int64_t ic = 0; ic < IC; ++ic)
                    for (int64_t kh = 0; kh < K; ++kh)
                        for (int64_t kw = 0; kw < K; ++kw) {
                            double acc = 0.0;
                            for (int64_t b = first; b < first + rows; ++b)
                                for (int64_t oh = 0; oh < OH; ++oh) {
                                    const int64_t ih = oh * S - P + kh;
                                    if (ih < 0 || ih >= H) continue;
                                    for (int64_t ow = 0; ow < OW; ++ow) {
                                        const int64_t iw = ow * S - P + kw;
                                        if (iw < 0 || iw >= W) continue;
                                        acc += double(in[((b * H + ih) * W + iw) * IC + ic]) *
                                               double(d_out[((b * OH + oh) * OW + ow) * OC + oc]);
                                    }
                                }
                            dw[((oc * IC + ic) * K + kh) * K + kw] += R(acc);
                        }
        });
    if (d_bias) {
        kernels::grouped_rows_reduce(d_bias, OC, B, [&](R* db, int64_t first, int64_t rows) {
            for (int64_t oc = 0; oc < OC; ++oc) {
                double acc = 0.0;
                for (int64_t p = first * OH * OW; p < (first + rows) * OH * OW; ++p)
                    acc += double(d_out[p * OC + oc]);
                db[oc] += R(acc);
            }
        });
    }
}

template void conv2d_forward_reference<float>(float*, const float*, const float*, const float*,
                                              int64_t, const Conv2dShape&);
template void conv2d_forward_reference<double>(double*, const double*, const double*, const double*,
                                               int64_t, const Conv2dShape&);
template void conv2d_backward_reference<float>(float*, float*, float*, const float*, const float*,
                                               const float*, int64_t, const Conv2dShape&);
template void conv2d_backward_reference<double>(double*, double*, double*, const double*,
                                                const double*, const double*, int64_t,
                                                const Conv2dShape&);

void conv2d_forward(double* out, const double* in, const double* weight, const double* bias,
                    int64_t B, const Conv2dShape& shape) {
    conv2d_forward_reference(out, in, weight, bias, B, shape);
}

void conv2d_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                     const double* in, const double* weight, int64_t B, const Conv2dShape& shape) {
    conv2d_backward_reference(d_in, d_weight, d_bias, d_out, in, weight, B, shape);
}

// ---- oneDNN ----

struct Conv2d::Plan {
    dnnl::convolution_forward fwd;
    dnnl::convolution_backward_data bwd_data;
    dnnl::convolution_backward_weights bwd_weights;
    cpu::Input fwd_src, fwd_w, fwd_b;
    cpu::Output fwd_dst;
    cpu::Input bd_ddst, bd_w;
    cpu::Accumulate bd_dsrc;
    cpu::Input bw_src, bw_ddst;
    cpu::Accumulate bw_dw, bw_db;
    std::string impl;
};

struct Conv2d::State {
    dnnl::stream stream{cpu::cpu_engine()};
    cpu::AlignedBuffer scratch;  // every primitive's scratchpad: they run one at a time
    dnnl::memory scratch_mem;
    std::vector<float> zero_bias;  // forward without a bias
    cpu::AlignedBuffer chunks;     // [groups, OC*IC*K*K + OC] weight-gradient chunks
    std::map<int64_t, std::unique_ptr<Plan>> plans;  // by batch size
};

Conv2d::Conv2d(const Conv2dShape& shape, Conv2dLayout layout)
    : shape_(shape), layout_(layout), state_(std::make_unique<State>()) {
    shape_.validate("conv2d");
    state_->zero_bias.assign(size_t(shape_.out_channels), 0.0f);
}

Conv2d::~Conv2d() = default;
Conv2d::Conv2d(Conv2d&&) noexcept = default;
Conv2d& Conv2d::operator=(Conv2d&&) noexcept = default;

Conv2d::Plan& Conv2d::plan(int64_t B) {
    try {
        return build_plan(B);
    } catch (const dnnl::error& e) {
        // An unsupported configuration or out of memory inside oneDNN: say which layer.
        MOE_FAIL("conv2d: oneDNN could not build primitives for ", shape_.str(), ", batch ", B,
                 ": ", e.what());
    }
}

Conv2d::Plan& Conv2d::build_plan(int64_t B) {
    MOE_CHECK(B > 0, "conv2d: batch must be positive, got ", B, " (", shape_.str(), ")");
    auto found = state_->plans.find(B);
    if (found != state_->plans.end()) return *found->second;

    using md = dnnl::memory::desc;
    using tag = dnnl::memory::format_tag;
    const auto f32 = dnnl::memory::data_type::f32;
    const auto& s = shape_;
    const dnnl::memory::dims src{B, s.in_channels, s.height, s.width},
        dst{B, s.out_channels, s.out_height(), s.out_width()},
        wei{s.out_channels, s.in_channels, s.kernel, s.kernel}, bia{s.out_channels},
        strides{s.stride, s.stride}, pad{s.padding, s.padding};
    const md src_user(src, f32, tag::nhwc), dst_user(dst, f32, tag::nhwc),
        w_user(wei, f32, tag::oihw), b_user(bia, f32, tag::x);
    const tag act = layout_ == Conv2dLayout::any ? tag::any : tag::nhwc;
    const tag w_tag = layout_ == Conv2dLayout::plain ? tag::oihw : tag::any;
    const md src_want(src, f32, act), dst_want(dst, f32, act), w_want(wei, f32, w_tag);

    const auto& eng = cpu::cpu_engine();
    const auto attr = cpu::user_scratchpad_attr();
    const auto algo = dnnl::algorithm::convolution_direct;
    dnnl::convolution_forward::primitive_desc fpd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, src_want, w_want,
                                        b_user, dst_want, strides, pad, pad),
        attr, eng);
    dnnl::convolution_backward_data::primitive_desc bdpd(
        dnnl::convolution_backward_data::desc(algo, src_want, w_want, dst_want, strides, pad, pad),
        attr, eng, fpd);
    dnnl::convolution_backward_weights::primitive_desc bwpd(
        dnnl::convolution_backward_weights::desc(algo, src_want, w_want, b_user, dst_want, strides,
                                                 pad, pad),
        attr, eng, fpd);

    auto p = std::make_unique<Plan>();
    size_t scratch =
        std::max({size_t(64), fpd.scratchpad_desc().get_size(), bdpd.scratchpad_desc().get_size(),
                  bwpd.scratchpad_desc().get_size()});
    p->fwd = dnnl::convolution_forward(fpd);
    p->bwd_data = dnnl::convolution_backward_data(bdpd);
    p->bwd_weights = dnnl::convolution_backward_weights(bwpd);
    p->fwd_src.init(src_user, fpd.src_desc(), scratch);
    p->fwd_w.init(w_user, fpd.weights_desc(), scratch);
    p->fwd_b.init(b_user, fpd.bias_desc(), scratch);
    p->fwd_dst.init(dst_user, fpd.dst_desc(), scratch);
    p->bd_ddst.init(dst_user, bdpd.diff_dst_desc(), scratch);
    p->bd_w.init(w_user, bdpd.weights_desc(), scratch);
    p->bd_dsrc.init(src_user, bdpd.diff_src_desc(), scratch);
    p->bw_src.init(src_user, bwpd.src_desc(), scratch);
    p->bw_ddst.init(dst_user, bwpd.diff_dst_desc(), scratch);
    p->bw_dw.init(w_user, bwpd.diff_weights_desc(), scratch);
    p->bw_db.init(b_user, bwpd.diff_bias_desc(), scratch);
    p->impl = detail::concat("fwd ", fpd.impl_info_str(), ", bwd_data ", bdpd.impl_info_str(),
                             ", bwd_weights ", bwpd.impl_info_str());

    State& st = *state_;
    if (scratch > st.scratch.size() || !st.scratch_mem) {
        st.scratch.reserve(scratch);
        st.scratch_mem = dnnl::memory(
            md({dnnl::memory::dim(st.scratch.size())}, dnnl::memory::data_type::u8, tag::x), eng,
            st.scratch.data());
    }
    return *st.plans.emplace(B, std::move(p)).first->second;
}

std::string Conv2d::implementations(int64_t B) {
    return plan(B).impl;
}

void Conv2d::forward(float* out, const float* in, const float* weight, const float* bias,
                     int64_t B) {
    MOE_CHECK(B >= 0, "conv2d: negative batch ", B, " (", shape_.str(), ")");
    if (B == 0) return;
    Plan& p = plan(B);
    State& st = *state_;
    const auto& sp = st.scratch_mem;
    const auto& src = p.fwd_src.prepare(in, st.stream, sp);
    const auto& w = p.fwd_w.prepare(weight, st.stream, sp);
    const auto& b = p.fwd_b.prepare(bias ? bias : st.zero_bias.data(), st.stream, sp);
    const auto& dst = p.fwd_dst.target(out);
    cpu::execute(p.fwd, st.stream,
                 {{DNNL_ARG_SRC, src.get()},
                  {DNNL_ARG_WEIGHTS, w.get()},
                  {DNNL_ARG_BIAS, b.get()},
                  {DNNL_ARG_DST, dst.get()},
                  {DNNL_ARG_SCRATCHPAD, sp.get()}});
    p.fwd_dst.finish(st.stream, sp);
}

namespace {
// d_weight[OC*IC*K*K] += and (unless null) d_bias[OC] += the weight gradients of the plan's
// images.
void weight_gradients(Conv2d::Plan& p, dnnl::stream& stream, const dnnl::memory& sp,
                      float* d_weight, float* d_bias, const float* d_out, const float* in) {
    const auto& src = p.bw_src.prepare(in, stream, sp);
    const auto& ddst = p.bw_ddst.prepare(d_out, stream, sp);
    cpu::execute(p.bwd_weights, stream,
                 {{DNNL_ARG_SRC, src.get()},
                  {DNNL_ARG_DIFF_DST, ddst.get()},
                  {DNNL_ARG_DIFF_WEIGHTS, p.bw_dw.inner.get()},
                  {DNNL_ARG_DIFF_BIAS, p.bw_db.inner.get()},
                  {DNNL_ARG_SCRATCHPAD, sp.get()}});
    p.bw_dw.finish(d_weight, stream, sp);
    if (d_bias) p.bw_db.finish(d_bias, stream, sp);
}
}  // namespace

void Conv2d::backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                      const float* in, const float* weight, int64_t B, bool accumulate_d_in) {
    MOE_CHECK(B >= 0, "conv2d: negative batch ", B, " (", shape_.str(), ")");
    if (B == 0) return;
    const auto& s = shape_;
    const int64_t g = kernels::reduction_groups();
    MOE_CHECK(B % g == 0, "conv2d: batch ", B, " does not split into ", g, " reduction groups (",
              s.str(), ")");
    State& st = *state_;
    if (d_in) {
        Plan& p = plan(B);
        const auto& sp = st.scratch_mem;
        const auto& ddst = p.bd_ddst.prepare(d_out, st.stream, sp);
        const auto& w = p.bd_w.prepare(weight, st.stream, sp);
        cpu::execute(p.bwd_data, st.stream,
                     {{DNNL_ARG_DIFF_DST, ddst.get()},
                      {DNNL_ARG_WEIGHTS, w.get()},
                      {DNNL_ARG_DIFF_SRC, p.bd_dsrc.target(d_in, accumulate_d_in).get()},
                      {DNNL_ARG_SCRATCHPAD, sp.get()}});
        p.bd_dsrc.finish(d_in, st.stream, sp, accumulate_d_in);
    }
    if (g == 1)
        return weight_gradients(plan(B), st.stream, st.scratch_mem, d_weight, d_bias, d_out, in);

    // Reduction groups: each chunk of B/g images into its own zeroed slot (0 + x = x, so
    // the accumulating reorder writes the chunk's sum exactly), slots combined by the
    // canonical pairwise tree, the root added to the caller's gradients.
    const int64_t rows = B / g, nw = s.out_channels * s.in_channels * s.kernel * s.kernel,
                  n = nw + s.out_channels;
    Plan& pc = plan(rows);  // may grow the scratchpad: take scratch_mem after this
    st.chunks.reserve(size_t(g * n) * sizeof(float));
    auto* slots = static_cast<float*>(st.chunks.data());
    std::memset(slots, 0, size_t(g * n) * sizeof(float));
    const int64_t in_image = s.height * s.width * s.in_channels,
                  out_image = s.out_height() * s.out_width() * s.out_channels;
    for (int64_t c = 0; c < g; ++c)
        weight_gradients(pc, st.stream, st.scratch_mem, slots + c * n, slots + c * n + nw,
                         d_out + c * rows * out_image, in + c * rows * in_image);
    kernels::pairwise_tree_sum(slots, g, n);
    for (int64_t i = 0; i < nw; ++i) d_weight[i] += slots[i];
    if (d_bias)
        for (int64_t o = 0; o < s.out_channels; ++o) d_bias[o] += slots[nw + o];
}

}  // namespace moe::nn
