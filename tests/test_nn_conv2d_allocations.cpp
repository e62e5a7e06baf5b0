// Conv2d and MaxPool2d allocate nothing on our side once a batch size has run: their
// primitives, reorder buffers and scratchpads are made on the first call and kept.
//
// This executable replaces the global operator new with a counting one (as
// test_step_allocations.cpp does for the language models). oneDNN 2.6's
// dnnl_primitive_execute makes small operator-new allocations inside the library on every
// call (its argument map), which no caller can avoid; the executable interposes that
// function (its definition here wins over the shared library's) to tell those apart from
// ours. The test requires ours to be zero and prints oneDNN's.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include "kernels/grouped_reduce.h"
#include "nn/conv2d.h"
#include "nn/pool2d.h"

namespace {
std::atomic<bool> g_counting{false}, g_in_execute{false};
std::atomic<int64_t> g_ours{0}, g_onednn{0};

void* counted(std::size_t n) {
    if (g_counting.load(std::memory_order_relaxed))
        ++(g_in_execute.load(std::memory_order_relaxed) ? g_onednn : g_ours);
    void* p = std::malloc(n ? n : 1);
    if (!p) throw std::bad_alloc();
    return p;
}
}  // namespace

void* operator new(std::size_t n) {
    return counted(n);
}
void* operator new[](std::size_t n) {
    return counted(n);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}

extern "C" dnnl_status_t dnnl_primitive_execute(const_dnnl_primitive_t primitive,
                                                dnnl_stream_t stream, int nargs,
                                                const dnnl_exec_arg_t* args) {
    using Fn =
        dnnl_status_t (*)(const_dnnl_primitive_t, dnnl_stream_t, int, const dnnl_exec_arg_t*);
    static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "dnnl_primitive_execute"));
    g_in_execute = true;
    const dnnl_status_t st = real(primitive, stream, nargs, args);
    g_in_execute = false;
    return st;
}

namespace moe {
namespace {

TEST(Conv2dPool2dAllocations, StepsAfterTheFirstAllocateNothingOnOurSide) {
    for (auto layout : {nn::Conv2dLayout::any_weights, nn::Conv2dLayout::any}) {
        const nn::Conv2dShape s{.in_channels = 4,
                                .out_channels = 8,
                                .kernel = 3,
                                .stride = 1,
                                .padding = 1,
                                .height = 10,
                                .width = 10};
        nn::Conv2d conv(s, layout);
        nn::MaxPool2d pool({.channels = 8, .kernel = 2, .stride = 2, .height = 10, .width = 10});
        const int64_t B = 4;
        std::vector<float> in(size_t(B * 100 * 4), 0.5f), w(8 * 4 * 9, 0.25f), b(8, 0.0f),
            y(size_t(B * 100 * 8)), d_y(y.size(), 0.0f), d_in(in.size(), 0.0f), d_w(w.size(), 0.0f),
            d_b(b.size(), 0.0f), p(size_t(B * 25 * 8)), d_p(p.size(), 1.0f);
        std::vector<unsigned char> ws(pool.workspace_bytes(B));
        auto step = [&] {
            conv.forward(y.data(), in.data(), w.data(), b.data(), B);
            pool.forward(p.data(), ws.data(), y.data(), B);
            pool.backward(d_y.data(), d_p.data(), ws.data(), B);
            conv.backward(d_in.data(), d_w.data(), d_b.data(), d_y.data(), in.data(), w.data(), B);
            kernels::ReductionGroups groups(2);  // as under data parallelism
            conv.backward(nullptr, d_w.data(), d_b.data(), d_y.data(), in.data(), w.data(), B);
        };
        step();
        g_ours = 0;
        g_onednn = 0;
        g_counting = true;
        for (int i = 0; i < 3; ++i) step();
        g_counting = false;
        EXPECT_EQ(g_ours.load(), 0) << "layout " << int(layout);
        std::printf("layout %d: 3 steps, operator new inside oneDNN's execute: %ld\n", int(layout),
                    long(g_onednn.load()));
    }
}

}  // namespace
}  // namespace moe
