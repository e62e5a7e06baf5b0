// 2-D max pooling on channels-last activations (NHWC, as src/nn/conv2d.h).
//
// Square windows of `kernel`, one stride for both dimensions, no padding; rows and columns
// past the last whole window are ignored (PyTorch's floor mode). Within a window the first
// maximum in row-major order wins (kh, then kw), which is the rule of both PyTorch's
// max_pool2d and oneDNN's pooling_max, so the references and the optimised path send the
// gradient to the same element and forward outputs agree bit for bit.
//
// Backward accumulates (+=) into d_in like every layer here (src/nn/linear.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace moe::nn {

struct Pool2dShape {
    int64_t channels = 0;
    int64_t kernel = 0;             // square K x K window
    int64_t stride = 0;             // both dimensions (PyTorch's default is stride = kernel)
    int64_t height = 0, width = 0;  // input spatial size

    int64_t out_height() const { return (height - kernel) / stride + 1; }
    int64_t out_width() const { return (width - kernel) / stride + 1; }
    // "in 32x28x28, kernel 2 stride 2" (channels x height x width)
    std::string str() const;
    // Throws moe::Error naming `op` and the shape when the sizes make no pooling.
    void validate(const char* op) const;
};

// out[B, OH, OW, C] = max over each window of in[B, H, W, C].
template <class R>
void max_pool2d_forward_reference(R* out, const R* in, int64_t B, const Pool2dShape& shape);

// d_in[B, H, W, C] += d_out[B, OH, OW, C] routed to each window's (first) maximum of
// in[B, H, W, C].
template <class R>
void max_pool2d_backward_reference(R* d_in, const R* d_out, const R* in, int64_t B,
                                   const Pool2dShape& shape);

// The double path, for models instantiated on double (finite differences): the reference.
void max_pool2d_forward(double* out, const double* in, int64_t B, const Pool2dShape& shape);
void max_pool2d_backward(double* d_in, const double* d_out, const double* in, int64_t B,
                         const Pool2dShape& shape);

// Max pooling through oneDNN's pooling primitive (forward_training with a workspace,
// forward_inference without, backward), for one Pool2dShape; primitives made on the first
// call with a batch size and cached by it, as Conv2d does. Not thread-safe.
//
// The workspace is what oneDNN's forward_training records for backward: the position of
// each output's maximum within its window (one small integer per output element: u8 for
// windows of under 256 elements, s32 beyond). The CALLER owns it, sized by
// workspace_bytes(B): it is a saved activation like any other that forward writes for
// backward (src/nn/linear.h), so a model keeps it in its activation arena, and two forwards
// before their backwards (micro-batches, recomputation, a layer object used twice) cannot
// overwrite each other's, as one buffer owned by this object would.
class MaxPool2d {
  public:
    explicit MaxPool2d(const Pool2dShape& shape);
    ~MaxPool2d();
    MaxPool2d(MaxPool2d&&) noexcept;
    MaxPool2d& operator=(MaxPool2d&&) noexcept;

    const Pool2dShape& shape() const { return shape_; }

    // Bytes of the workspace that forward writes and backward reads, for batch B.
    size_t workspace_bytes(int64_t B);

    // out[B, OH, OW, C] = max pool of in[B, H, W, C]. workspace: workspace_bytes(B) bytes,
    // written for backward; null for inference (no backward will follow).
    void forward(float* out, void* workspace, const float* in, int64_t B);
    // d_in[B, H, W, C] += d_out[B, OH, OW, C] sent to each window's maximum, as recorded in
    // the workspace by forward on the same batch. accumulate = false: d_in = that instead
    // (every element written, zeros off the maxima): no zeroing pass before the call.
    void backward(float* d_in, const float* d_out, const void* workspace, int64_t B,
                  bool accumulate = true);

    // oneDNN's implementation names for batch B: for benchmarks and reports.
    std::string implementations(int64_t B);

    struct Plan;

  private:
    Plan& plan(int64_t B);  // the cached plan for B, built on first use
    Plan& build_plan(int64_t B);

    Pool2dShape shape_;
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace moe::nn
