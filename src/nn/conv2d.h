// 2-D convolution on channels-last activations, PyTorch's parameter layout.
//
// Activations are NHWC ([B, H, W, C]): a feature map is directly B*H*W tokens of C features
// for the linear and MoE layers that follow, with no transpose. Weights are PyTorch's
// [OC, IC, K, K] (OIHW) and the bias [OC], so checkpoints move to and from torch as they
// are. Square kernels, one stride and one zero padding for both spatial dimensions, no
// dilation, no groups.
//
// A patch embedding (ViT) is this layer with kernel = stride = patch size and padding 0:
// each output position is the linear map of one non-overlapping KxK patch, and the
// [B, H/P, W/P, OC] output is the sequence of patch tokens in row-major patch order.
// Input rows and columns past the last whole patch (H % P) are ignored, as in PyTorch.
//
// Two paths, following src/nn/linear.h's conventions (backward accumulates into every
// gradient; nullable gradient pointers skip that gradient):
// - conv2d_forward_reference / conv2d_backward_reference: plain loop nests, float and
//   double, summing in double. The reference the optimised path is tested against, and
//   the double path for finite differences (conv2d_forward / conv2d_backward on double).
// - Conv2d: the float path through oneDNN primitives built once per batch size.
//
// Weight and bias gradients are sums over the batch's images; both paths honour
// kernels::reduction_groups() (src/kernels/grouped_reduce.h) by summing equal chunks of
// images separately and combining them by the canonical pairwise tree.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace moe::nn {

struct Conv2dShape {
    int64_t in_channels = 0, out_channels = 0;
    int64_t kernel = 0;             // square K x K
    int64_t stride = 1;             // both dimensions
    int64_t padding = 0;            // zeros, on all four sides
    int64_t height = 0, width = 0;  // input spatial size

    int64_t out_height() const { return (height + 2 * padding - kernel) / stride + 1; }
    int64_t out_width() const { return (width + 2 * padding - kernel) / stride + 1; }
    // "in 3x28x28, 32 out channels, kernel 3 stride 1 padding 1" (input channels x height x
    // width), for error messages
    std::string str() const;
    // Throws moe::Error naming `op` and the shapes when the sizes make no convolution.
    void validate(const char* op) const;
};

// out[B, OH, OW, OC] = conv(in[B, H, W, IC], weight[OC, IC, K, K]) + bias[OC].
// bias may be null (no bias).
template <class R>
void conv2d_forward_reference(R* out, const R* in, const R* weight, const R* bias, int64_t B,
                              const Conv2dShape& shape);

// d_in[B, H, W, IC] += dL/din (nullable); d_weight[OC, IC, K, K] += dL/dweight;
// d_bias[OC] += sum over images and positions of d_out (nullable).
// d_out: [B, OH, OW, OC]; in: [B, H, W, IC]; weight: [OC, IC, K, K].
template <class R>
void conv2d_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                               const R* weight, int64_t B, const Conv2dShape& shape);

// The double path, for models instantiated on double (finite differences): the reference.
void conv2d_forward(double* out, const double* in, const double* weight, const double* bias,
                    int64_t B, const Conv2dShape& shape);
void conv2d_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                     const double* in, const double* weight, int64_t B, const Conv2dShape& shape);

// Which memory layouts Conv2d lets oneDNN choose. The caller's tensors are always NHWC and
// OIHW; a layout other than theirs costs a reorder per call (weights: OC*IC*K*K floats, a
// few microseconds; activations: a pass over the feature map).
//
// Measured with oneDNN 2.6 on an AVX-512 Xeon, 2 threads (batch 128, 3x3 padding 1; 1->32
// at 28x28, 32->64 at 14x14 and 28x28, 64->128 at 7x7, and a 4x4 patch embedding 1->64 at
// 28x28; the disabled timing test in tests/test_nn_conv2d.cpp):
// - plain gets only oneDNN's reference kernels ("ref:any"), 100-1000x slower than the others:
//   kept for tests of the no-reorder path, never for training.
// - any_weights gets brgconv:avx512_core forward (which works on NHWC directly) and
//   jit:avx512_core backward: 320-365 GFLOP/s forward and 295-335 backward on the 32- and
//   64-channel layers (oneDNN's sgemm: 220-325 for the same im2col GEMMs), the fastest in
//   every case but 64->128 at 7x7 forward (3% behind).
// - any picks blocked activations (nChw16c) and jit:avx512_core everywhere: 1-1.5x slower
//   once the activation reorders are paid.
enum class Conv2dLayout {
    plain,        // NHWC activations, OIHW weights: no reorders besides accumulation
    any_weights,  // NHWC activations, weights in oneDNN's preferred blocked layout
    any,          // activations and weights both in oneDNN's preferred layouts
};

// The float convolution through oneDNN, for one Conv2dShape. Primitives (forward_training,
// backward_data, backward_weights with bias, and the reorders around them) are made on the
// first call with a batch size and kept in a map keyed by it, so later steps with that
// batch size build and allocate nothing on our side. Scratchpads are in user mode, one
// buffer held by the object. Primitives run on the OpenMP threads of the calling thread.
// Not thread-safe: one call at a time per object.
class Conv2d {
  public:
    // The default layout is the fastest measured (see Conv2dLayout).
    explicit Conv2d(const Conv2dShape& shape, Conv2dLayout layout = Conv2dLayout::any_weights);
    ~Conv2d();
    Conv2d(Conv2d&&) noexcept;
    Conv2d& operator=(Conv2d&&) noexcept;

    const Conv2dShape& shape() const { return shape_; }
    Conv2dLayout layout() const { return layout_; }

    // out[B, OH, OW, OC] = conv(in[B, H, W, IC], weight[OC, IC, K, K]) + bias[OC].
    // bias may be null.
    void forward(float* out, const float* in, const float* weight, const float* bias, int64_t B);
    // d_in[B, H, W, IC] += ... (nullable: a first layer needs no input gradient);
    // d_weight[OC, IC, K, K] += ...; d_bias[OC] += ... (nullable).
    // d_out: [B, OH, OW, OC]; in: [B, H, W, IC]; weight: [OC, IC, K, K].
    // accumulate_d_in = false: d_in = ... instead (only d_in: the parameter gradients always
    // accumulate), which spares the caller zeroing d_in first.
    void backward(float* d_in, float* d_weight, float* d_bias, const float* d_out, const float* in,
                  const float* weight, int64_t B, bool accumulate_d_in = true);

    // oneDNN's implementation names for batch B (building the primitives if needed), e.g.
    // "fwd brgconv:avx512_core, bwd_data jit:avx512_core, bwd_weights jit:avx512_core": for
    // benchmarks and reports.
    std::string implementations(int64_t B);

    struct Plan;  // primitives for one batch size (conv2d.cpp)

  private:
    Plan& plan(int64_t B);  // the cached plan for B, built on first use
    Plan& build_plan(int64_t B);

    Conv2dShape shape_;
    Conv2dLayout layout_;
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace moe::nn
