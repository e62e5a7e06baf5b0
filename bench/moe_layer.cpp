// build/bench/moe_layer: the MoE layer's forward and forward+backward rate against oneDNN's
// dense GEMM on the same FLOPs, measured in the same run.
//
//   usage: moe_layer [--json] [--threads N] [--reps R] [--mode auto|gemm|experts]
//
// Shapes (softmax_topk, dropless, SwiGLU experts, f32):
//   T=4096 d=512 h=1024 E=8 k=2   and   T=4096 d=512 h=256 E=64 k=8
// FLOPs count the expert GEMMs only: 3 products of 2*d*h per routed token forward, 9
// forward+backward. The GEMM reference does the same FLOPs as dense GEMMs on the same
// operand sizes: forward one [T*k, d] x [d, 3h] product; backward [T*k, d] x [d, h] (dL/dact),
// [d, T*k] x [T*k, h] (dL/dw2), [T*k, 2h] x [2h, d] (dL/dx) and [2h, T*k] x [T*k, d]
// (dL/dw1, dL/dw3), with the transposes the layer uses. The machine is shared, so each
// figure is the best of R repetitions (default 5), the layer and the GEMMs interleaved so
// that both see the same load. bytes_per_token: activation bytes kept from forward to
// backward, per token.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/gemm.h"
#include "moe/moe_layer.h"

#include "bench_support.h"

namespace {

using moe::sparse::ExpertBank;
using moe::sparse::MoeConfig;
using moe::sparse::MoeLayer;

struct Shape {
    int64_t T, d, h, E, k;
};

const Shape kShapes[] = {{4096, 512, 1024, 8, 2}, {4096, 512, 256, 64, 8}};

using moe::bench::random_vec;

// The dense GEMMs of the same FLOPs and operand sizes (see the header comment).
struct DenseGemms {
    int64_t M, d, h;
    std::vector<float> x, w13, w2, h13, act, dy, d_act, d_w2, d_h13, d_x, d_w13;
    DenseGemms(int64_t M_, int64_t d_, int64_t h_) : M(M_), d(d_), h(h_) {
        x = random_vec(size_t(M * d), 1, 1.0f);
        w13 = random_vec(size_t(3 * h * d), 2, 0.05f);
        w2 = random_vec(size_t(d * h), 3, 0.05f);
        h13.resize(size_t(M * 3 * h));
        act = random_vec(size_t(M * h), 4, 1.0f);
        dy = random_vec(size_t(M * d), 5, 1.0f);
        d_act.resize(size_t(M * h));
        d_w2.resize(size_t(d * h));
        d_h13 = random_vec(size_t(M * 2 * h), 6, 1.0f);
        d_x.resize(size_t(M * d));
        d_w13.resize(size_t(2 * h * d));
    }
    void forward() {
        moe::kernels::gemm(false, true, M, 3 * h, d, 1.0f, x.data(), d, w13.data(), d, 0.0f,
                           h13.data(), 3 * h);
    }
    void backward() {
        moe::kernels::gemm(false, false, M, h, d, 1.0f, dy.data(), d, w2.data(), h, 0.0f,
                           d_act.data(), h);
        moe::kernels::gemm(true, false, d, h, M, 1.0f, dy.data(), d, act.data(), h, 1.0f,
                           d_w2.data(), h);
        moe::kernels::gemm(false, false, M, d, 2 * h, 1.0f, d_h13.data(), 2 * h, w13.data(), d,
                           1.0f, d_x.data(), d);
        moe::kernels::gemm(true, false, 2 * h, d, M, 1.0f, d_h13.data(), 2 * h, x.data(), d, 1.0f,
                           d_w13.data(), d);
    }
};

template <class F>
double seconds_of(const F& f) {
    moe::Timer t;
    f();
    return t.seconds();
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    int threads = 2, reps = 5;
    std::string mode = "auto";
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--json"))
            json = true;
        else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = std::max(1, std::atoi(argv[++i]));
        else if (!std::strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else {
            std::fprintf(stderr,
                         "usage: %s [--json] [--threads N] [--reps R] [--mode auto|gemm|experts]\n",
                         argv[0]);
            return 2;
        }
    }
    moe::set_num_threads(threads);
    auto parallel = ExpertBank<float>::Parallel::automatic;
    if (mode == "gemm")
        parallel = ExpertBank<float>::Parallel::over_gemm;
    else if (mode == "experts")
        parallel = ExpertBank<float>::Parallel::over_experts;
    else if (mode != "auto") {
        std::fprintf(stderr, "moe_layer: --mode must be auto, gemm or experts\n");
        return 2;
    }
    if (!json)
        std::printf(
            "MoE layer (softmax_topk, dropless, SwiGLU, f32), %d threads, best of %d\n"
            "%-34s %9s %9s %9s %9s %7s %11s\n",
            moe::num_threads(), reps, "shape", "fwd", "fwd+bwd", "gemm", "fb/gemm", "mode",
            "bytes/token");

    for (const Shape& s : kShapes) {
        MoeConfig cfg;
        cfg.d_model = s.d;
        cfg.d_expert = s.h;
        cfg.n_experts = s.E;
        cfg.top_k = s.k;
        cfg.router = "softmax_topk";
        cfg.capacity_factor = 0;
        cfg.softmax_topk.renormalize = true;
        MoeLayer<float> layer(cfg, s.T);
        moe::Arena params;
        layer.declare(params, "moe.");
        params.allocate();
        moe::Arena grads = params.clone_layout();
        layer.bind(params, grads);
        moe::Rng rng(7);
        layer.init_weights(rng, 0.02);
        layer.experts().set_parallel(parallel);
        const auto x = random_vec(size_t(s.T * s.d), 8, 1.0f);
        const auto dy = random_vec(size_t(s.T * s.d), 9, 1.0f);
        std::vector<float> out(x.size()), dx(x.size());
        const int64_t rows = s.T * s.k;
        DenseGemms gemms(rows, s.d, s.h);

        auto fwd = [&] { layer.forward(out.data(), x.data(), s.T); };
        auto bwd = [&] { layer.backward(dy.data(), dx.data()); };
        fwd();  // warm-up: first touch of every buffer, oneDNN's kernel selection
        bwd();
        gemms.forward();
        gemms.backward();
        double t_fwd = 1e30, t_fb = 1e30, t_gemm = 1e30;
        for (int r = 0; r < reps; ++r) {
            t_fwd = std::min(t_fwd, seconds_of(fwd));
            t_fb = std::min(t_fb, seconds_of([&] {
                                fwd();
                                bwd();
                            }));
            t_gemm = std::min(t_gemm, seconds_of([&] {
                                  gemms.forward();
                                  gemms.backward();
                              }));
        }
        const double fwd_flops = 3.0 * 2.0 * double(s.d) * double(s.h) * double(rows);
        const double fwd_gflops = fwd_flops / t_fwd * 1e-9;
        const double fb_gflops = 3.0 * fwd_flops / t_fb * 1e-9;
        const double gemm_gflops = 3.0 * fwd_flops / t_gemm * 1e-9;
        const char* used = layer.experts().resolve(layer.plan().offsets) ==
                                   ExpertBank<float>::Parallel::over_experts
                               ? "experts"
                               : "gemm";
        char name[96];
        std::snprintf(name, sizeof name, "T=%ld d=%ld h=%ld E=%ld k=%ld", long(s.T), long(s.d),
                      long(s.h), long(s.E), long(s.k));
        if (json)
            std::printf(
                "{\"shape\": \"%s\", \"fwd_gflops\": %.1f, \"fwdbwd_gflops\": %.1f, "
                "\"gemm_gflops\": %.1f, \"fwdbwd_over_gemm\": %.3f, \"bytes_per_token\": %.0f, "
                "\"threads\": %d, \"parallel\": \"%s\", \"max_load\": %.0f, "
                "\"mean_load\": %.0f}\n",
                name, fwd_gflops, fb_gflops, gemm_gflops, fb_gflops / gemm_gflops,
                layer.saved_bytes_per_token(), moe::num_threads(), used, layer.stats().max_load,
                layer.stats().mean_load);
        else
            std::printf("%-34s %9.1f %9.1f %9.1f %9.3f %7s %11.0f\n", name, fwd_gflops, fb_gflops,
                        gemm_gflops, fb_gflops / gemm_gflops, used, layer.saved_bytes_per_token());
        std::fflush(stdout);
    }
    return 0;
}
