#include "nn/pool2d.h"

#include <algorithm>
#include <map>

#include "core/check.h"
#include "kernels/cpu/dnnl_primitives.h"

namespace moe::nn {

namespace cpu = kernels::cpu;

std::string Pool2dShape::str() const {
    return detail::concat("in ", channels, "x", height, "x", width, ", kernel ", kernel, " stride ",
                          stride);
}

void Pool2dShape::validate(const char* op) const {
    MOE_REQUIRE(channels > 0 && height > 0 && width > 0, op,
                ": channels and input size must be positive (", str(), ")");
    MOE_REQUIRE(kernel > 0 && stride > 0, op, ": kernel and stride must be positive (", str(), ")");
    MOE_REQUIRE(kernel <= height && kernel <= width, op, ": kernel ", kernel, " larger than input ",
                height, "x", width, " (", str(), ")");
}

// ---- reference ----

namespace {
// Offset (h * W + w) of the first maximum of the window at (oh, ow), channel c, of image x.
template <class R>
int64_t argmax(const R* x, int64_t oh, int64_t ow, int64_t c, const Pool2dShape& s) {
    const int64_t C = s.channels, W = s.width;
    int64_t best = (oh * s.stride) * W + ow * s.stride;
    for (int64_t kh = 0; kh < s.kernel; ++kh)
        for (int64_t kw = 0; kw < s.kernel; ++kw) {
            const int64_t at = (oh * s.stride + kh) * W + ow * s.stride + kw;
            if (x[at * C + c] > x[best * C + c]) best = at;  // strict: the first max wins
        }
    return best;
}
}  // namespace

template <class R>
void max_pool2d_forward_reference(R* out, const R* in, int64_t B, const Pool2dShape& s) {
    s.validate("max_pool2d_forward_reference");
    MOE_CHECK(B >= 0, "max_pool2d_forward_reference: negative batch ", B);
    const int64_t C = s.channels, OH = s.out_height(), OW = s.out_width();
    for (int64_t b = 0; b < B; ++b) {
        const R* x = in + b * s.height * s.width * C;
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow)
                for (int64_t c = 0; c < C; ++c)
                    out[((b * OH + oh) * OW + ow) * C + c] = x[argmax(x, oh, ow, c, s) * C + c];
    }
}

template <class R>
void max_pool2d_backward_reference(R* d_in, const R* d_out, const R* in, int64_t B,
                                   const Pool2dShape& s) {
    s.validate("max_pool2d_backward_reference");
    MOE_CHECK(B >= 0, "max_pool2d_backward_reference: negative batch ", B);
    const int64_t C = s.channels, OH = s.out_height(), OW = s.out_width();
    for (int64_t b = 0; b < B; ++b) {
        const int64_t image = b * s.height * s.width * C;
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow)
                for (int64_t c = 0; c < C; ++c)
                    d_in[image + argmax(in + image, oh, ow, c, s) * C + c] +=
                        d_out[((b * OH + oh) * OW + ow) * C + c];
    }
}

template void max_pool2d_forward_reference<float>(float*, const float*, int64_t,
                                                  const Pool2dShape&);
template void max_pool2d_forward_reference<double>(double*, const double*, int64_t,
                                                   const Pool2dShape&);
template void max_pool2d_backward_reference<float>(float*, const float*, const float*, int64_t,
                                                   const Pool2dShape&);
template void max_pool2d_backward_reference<double>(double*, const double*, const double*, int64_t,
                                                    const Pool2dShape&);

void max_pool2d_forward(double* out, const double* in, int64_t B, const Pool2dShape& shape) {
    max_pool2d_forward_reference(out, in, B, shape);
}

void max_pool2d_backward(double* d_in, const double* d_out, const double* in, int64_t B,
                         const Pool2dShape& shape) {
    max_pool2d_backward_reference(d_in, d_out, in, B, shape);
}

// ---- oneDNN ----

struct MaxPool2d::Plan {
    dnnl::pooling_forward train, infer;
    dnnl::pooling_backward bwd;
    dnnl::memory src, dst, workspace, diff_dst;  // caller's buffers, bound per call
    cpu::Accumulate diff_src;
    size_t workspace_bytes = 0;
    std::string impl;
};

struct MaxPool2d::State {
    dnnl::stream stream{cpu::cpu_engine()};
    cpu::AlignedBuffer scratch;
    dnnl::memory scratch_mem;
    std::map<int64_t, std::unique_ptr<Plan>> plans;  // by batch size
};

MaxPool2d::MaxPool2d(const Pool2dShape& shape) : shape_(shape), state_(std::make_unique<State>()) {
    shape_.validate("max_pool2d");
}

MaxPool2d::~MaxPool2d() = default;
MaxPool2d::MaxPool2d(MaxPool2d&&) noexcept = default;
MaxPool2d& MaxPool2d::operator=(MaxPool2d&&) noexcept = default;

MaxPool2d::Plan& MaxPool2d::plan(int64_t B) {
    try {
        return build_plan(B);
    } catch (const dnnl::error& e) {
        // An unsupported configuration or out of memory inside oneDNN: say which layer.
        MOE_FAIL("max_pool2d: oneDNN could not build primitives for ", shape_.str(), ", batch ", B,
                 ": ", e.what());
    }
}

MaxPool2d::Plan& MaxPool2d::build_plan(int64_t B) {
    MOE_CHECK(B > 0, "max_pool2d: batch must be positive, got ", B, " (", shape_.str(), ")");
    auto found = state_->plans.find(B);
    if (found != state_->plans.end()) return *found->second;

    using md = dnnl::memory::desc;
    using tag = dnnl::memory::format_tag;
    const auto f32 = dnnl::memory::data_type::f32;
    const auto& s = shape_;
    const md src({B, s.channels, s.height, s.width}, f32, tag::nhwc),
        dst({B, s.channels, s.out_height(), s.out_width()}, f32, tag::nhwc);
    const dnnl::memory::dims strides{s.stride, s.stride}, kernel{s.kernel, s.kernel}, pad{0, 0};
    const auto& eng = cpu::cpu_engine();
    const auto attr = cpu::user_scratchpad_attr();
    const auto algo = dnnl::algorithm::pooling_max;
    dnnl::pooling_forward::primitive_desc train(
        dnnl::pooling_forward::desc(dnnl::prop_kind::forward_training, algo, src, dst, strides,
                                    kernel, pad, pad),
        attr, eng);
    dnnl::pooling_forward::primitive_desc infer(
        dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, algo, src, dst, strides,
                                    kernel, pad, pad),
        attr, eng);
    dnnl::pooling_backward::primitive_desc bwd(
        dnnl::pooling_backward::desc(algo, src, dst, strides, kernel, pad, pad), attr, eng, train);

    auto p = std::make_unique<Plan>();
    size_t scratch =
        std::max({size_t(64), train.scratchpad_desc().get_size(),
                  infer.scratchpad_desc().get_size(), bwd.scratchpad_desc().get_size()});
    p->train = dnnl::pooling_forward(train);
    p->infer = dnnl::pooling_forward(infer);
    p->bwd = dnnl::pooling_backward(bwd);
    p->src = dnnl::memory(src, eng, DNNL_MEMORY_NONE);
    p->dst = dnnl::memory(dst, eng, DNNL_MEMORY_NONE);
    p->diff_dst = dnnl::memory(dst, eng, DNNL_MEMORY_NONE);
    p->workspace = dnnl::memory(train.workspace_desc(), eng, DNNL_MEMORY_NONE);
    p->workspace_bytes = train.workspace_desc().get_size();
    MOE_CHECK(bwd.workspace_desc() == train.workspace_desc(),
              "max_pool2d: oneDNN's backward wants another workspace than forward writes");
    p->diff_src.init(src, bwd.diff_src_desc(), scratch);
    p->impl = detail::concat("fwd ", train.impl_info_str(), ", bwd ", bwd.impl_info_str());

    State& st = *state_;
    if (scratch > st.scratch.size() || !st.scratch_mem) {
        st.scratch.reserve(scratch);
        st.scratch_mem = dnnl::memory(
            md({dnnl::memory::dim(st.scratch.size())}, dnnl::memory::data_type::u8, tag::x), eng,
            st.scratch.data());
    }
    return *st.plans.emplace(B, std::move(p)).first->second;
}

size_t MaxPool2d::workspace_bytes(int64_t B) {
    return B == 0 ? 0 : plan(B).workspace_bytes;
}

std::string MaxPool2d::implementations(int64_t B) {
    return plan(B).impl;
}

void MaxPool2d::forward(float* out, void* workspace, const float* in, int64_t B) {
    MOE_CHECK(B >= 0, "max_pool2d: negative batch ", B, " (", shape_.str(), ")");
    if (B == 0) return;
    Plan& p = plan(B);
    State& st = *state_;
    cpu::bind(p.src, in);
    cpu::bind(p.dst, out);
    if (workspace) {
        cpu::bind(p.workspace, workspace);
        cpu::execute(p.train, st.stream,
                     {{DNNL_ARG_SRC, p.src.get()},
                      {DNNL_ARG_DST, p.dst.get()},
                      {DNNL_ARG_WORKSPACE, p.workspace.get()},
                      {DNNL_ARG_SCRATCHPAD, st.scratch_mem.get()}});
    } else {
        cpu::execute(p.infer, st.stream,
                     {{DNNL_ARG_SRC, p.src.get()},
                      {DNNL_ARG_DST, p.dst.get()},
                      {DNNL_ARG_SCRATCHPAD, st.scratch_mem.get()}});
    }
}

void MaxPool2d::backward(float* d_in, const float* d_out, const void* workspace, int64_t B,
                         bool accumulate) {
    MOE_CHECK(B >= 0, "max_pool2d: negative batch ", B, " (", shape_.str(), ")");
    if (B == 0) return;
    MOE_CHECK(workspace, "max_pool2d: backward needs the workspace of a training forward (",
              shape_.str(), ")");
    Plan& p = plan(B);
    State& st = *state_;
    cpu::bind(p.diff_dst, d_out);
    cpu::bind(p.workspace, workspace);
    cpu::execute(p.bwd, st.stream,
                 {{DNNL_ARG_DIFF_DST, p.diff_dst.get()},
                  {DNNL_ARG_WORKSPACE, p.workspace.get()},
                  {DNNL_ARG_DIFF_SRC, p.diff_src.target(d_in, accumulate).get()},
                  {DNNL_ARG_SCRATCHPAD, st.scratch_mem.get()}});
    p.diff_src.finish(d_in, st.stream, st.scratch_mem, accumulate);
}

}  // namespace moe::nn
