// build/bench/gemm: oneDNN sgemm throughput on the shapes the MoE layer and the language
// model run, for every transpose case forward and backward use. Later benchmarks quote
// their rates as a fraction of these.
//
//   usage: gemm [--json] [--threads N] [--seconds S]
//
// Each shape is timed for at least S seconds (default 0.5) after one warm-up call;
// GFLOP/s = 2*M*N*K / time.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/gemm.h"

namespace {

struct Shape {
    const char* name;
    int64_t M, N, K;
    bool ta, tb;
};

// M = tokens, N = output width, K = input width.
const Shape kShapes[] = {
    // MoE layer, T=4096 d=512 h=1024 E=8 k=2: about 1024 tokens per expert.
    {"moe_e8_up      x[1024,512] w^T", 1024, 1024, 512, false, true},
    {"moe_e8_down    x[1024,1024] w^T", 1024, 512, 1024, false, true},
    {"moe_e8_dw      dy^T x", 1024, 512, 1024, true, false},
    {"moe_e8_dx      dy w", 1024, 512, 1024, false, false},
    // MoE layer, T=4096 d=512 h=256 E=64 k=8: about 512 tokens per expert.
    {"moe_e64_up     x[512,512] w^T", 512, 256, 512, false, true},
    {"moe_e64_down   x[512,256] w^T", 512, 512, 256, false, true},
    {"moe_e64_dw     dy^T x", 256, 512, 512, true, false},
    // Dense square reference.
    {"square_1024", 1024, 1024, 1024, false, false},
    // Language model reference shape: 16x256 tokens, d=384, expert hidden 768, vocab 4096.
    {"lm_qkv         x[4096,384] w^T", 4096, 384, 384, false, true},
    {"lm_ffn_up      x[4096,384] w^T", 4096, 768, 384, false, true},
    {"lm_head        x[4096,384] w^T", 4096, 4096, 384, false, true},
};

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    int threads = 0;
    double seconds = 0.5;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--json")) json = true;
        else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--json] [--threads N] [--seconds S]\n", argv[0]);
            return 2;
        }
    }
    moe::set_num_threads(threads);
    if (!json) std::printf("oneDNN sgemm, %d threads\n%-36s %6s %6s %6s %10s\n", moe::num_threads(),
                           "shape", "M", "N", "K", "GFLOP/s");
    moe::Rng rng(1);
    for (const Shape& s : kShapes) {
        std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N)), C(size_t(s.M * s.N));
        for (auto& x : A) x = rng.normal();
        for (auto& x : B) x = rng.normal();
        const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
        auto run = [&] {
            moe::kernels::gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f,
                               C.data(), s.N);
        };
        run();
        int64_t reps = 0;
        moe::Timer t;
        do {
            run();
            ++reps;
        } while (t.seconds() < seconds);
        const double gflops = 2.0 * double(s.M) * double(s.N) * double(s.K) * double(reps) / t.seconds() * 1e-9;
        if (json)
            std::printf("{\"shape\": \"%s\", \"M\": %ld, \"N\": %ld, \"K\": %ld, \"trans_a\": %d, "
                        "\"trans_b\": %d, \"threads\": %d, \"gflops\": %.1f}\n",
                        s.name, long(s.M), long(s.N), long(s.K), s.ta, s.tb, moe::num_threads(), gflops);
        else
            std::printf("%-36s %6ld %6ld %6ld %10.1f\n", s.name, long(s.M), long(s.N), long(s.K), gflops);
    }
    return 0;
}
