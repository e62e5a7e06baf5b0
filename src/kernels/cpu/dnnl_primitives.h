// Helpers for layers that own oneDNN primitives (convolution, pooling): the process's CPU
// engine, 64-byte aligned owned buffers, an execute that allocates nothing on our side, and
// "operands" that move a tensor between the plain layout the caller holds (NHWC, OIHW) and
// the layout a primitive chose, with the accumulation (+=) that every backward here does.
//
// oneDNN's primitives write their outputs; our backward accumulates. An Accumulate operand
// lets the primitive write into an owned buffer and adds it to the caller's tensor with a
// reorder that has a sum post-op (dst = src + dst), which is also the layout conversion
// when the primitive chose a blocked layout: one pass either way.
//
// Everything here is built once (per layer and batch size); a call only sets data handles
// and executes, which does not allocate on our side (oneDNN's execute makes its own small
// allocations inside the library, as its sgemm does).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace moe::kernels::cpu {

// The process-wide CPU engine (created on first use).
const dnnl::engine& cpu_engine();

// primitive_attr with the scratchpad in user mode: the caller passes scratch memory, so
// executing allocates none.
dnnl::primitive_attr user_scratchpad_attr();

// An owned, 64-byte aligned, zero-initialised byte buffer that only grows.
class AlignedBuffer {
  public:
    AlignedBuffer() = default;
    ~AlignedBuffer();
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    void reserve(size_t bytes);  // reallocates (losing the contents) when bytes > size()
    void* data() const { return data_; }
    size_t size() const { return bytes_; }

  private:
    void* data_ = nullptr;
    size_t bytes_ = 0;
};

// Runs p on s with these arguments and waits. The list lives on the caller's stack, so
// nothing is allocated here.
void execute(const dnnl::primitive& p, const dnnl::stream& s,
             std::initializer_list<dnnl_exec_arg_t> args);

// Sets a memory's data handle to a caller's (possibly const) pointer.
inline void bind(const dnnl::memory& m, const void* ptr) {
    m.set_data_handle(const_cast<void*>(ptr));
}

// A primitive's input, held by the caller in `user` layout. When the primitive wants another
// layout, `convert` reorders into an owned buffer before each use.
struct Input {
    dnnl::memory user;   // the caller's layout; its handle is set per call
    dnnl::memory inner;  // what the primitive reads: `user` itself when the layouts agree
    dnnl::reorder convert;
    AlignedBuffer buffer;
    bool same = true;

    // want: the layout the primitive chose; scratch_bytes grows to what the reorder needs.
    void init(const dnnl::memory::desc& user_md, const dnnl::memory::desc& want,
              size_t& scratch_bytes);
    // Binds ptr and converts if needed; returns the memory to pass to the primitive.
    const dnnl::memory& prepare(const void* ptr, const dnnl::stream& s,
                                const dnnl::memory& scratchpad);
};

// A primitive's output that the caller receives in `user` layout, overwritten (forward).
// When the layouts agree the primitive writes into the caller's memory directly.
struct Output {
    dnnl::memory user;
    dnnl::memory inner;  // what the primitive writes: `user` itself when the layouts agree
    dnnl::reorder convert;
    AlignedBuffer buffer;
    bool same = true;

    void init(const dnnl::memory::desc& user_md, const dnnl::memory::desc& have,
              size_t& scratch_bytes);
    const dnnl::memory& target(void* ptr);  // bind, and return what the primitive writes
    void finish(const dnnl::stream& s, const dnnl::memory& scratchpad);  // convert if needed
};

// A primitive's output added (+=) to the caller's tensor: the primitive writes an owned
// buffer, and a reorder with a sum post-op adds it into the caller's layout. A caller whose
// tensor holds nothing yet may ask for it to be overwritten instead (accumulate = false):
// then the primitive writes the caller's memory directly when the layouts agree (or a plain
// reorder converts), which saves zeroing the tensor first and reading it back in the sum
// (3 passes over it down to 1: ConvStem's input gradients are 3-13 MB each).
struct Accumulate {
    dnnl::memory user;
    dnnl::memory inner;  // owned
    dnnl::reorder add, copy;
    AlignedBuffer buffer;
    bool same = true;  // the primitive's layout is the caller's

    void init(const dnnl::memory::desc& user_md, const dnnl::memory::desc& have,
              size_t& scratch_bytes);
    // Binds ptr; returns what the primitive writes: the caller's memory itself when
    // overwriting in the same layout, else the owned buffer.
    const dnnl::memory& target(void* ptr, bool accumulate);
    // user += inner (accumulate) or user = inner, user bound to ptr. With accumulate = false
    // the primitive must have written target(ptr, false).
    void finish(void* ptr, const dnnl::stream& s, const dnnl::memory& scratchpad,
                bool accumulate = true);
};

}  // namespace moe::kernels::cpu
