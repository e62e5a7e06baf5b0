// Helpers shared by the benchmark programs of bench/: the machine's load, medians, seeded
// random operands, one dense linear product (the GEMM reference the model benchmarks time
// beside their model), and the one-line text/JSON output every benchmark prints.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/gemm.h"

namespace moe::bench {

// The 1-minute load average: printed beside every figure, since the 2 cores are shared.
inline double load_avg() {
    std::ifstream f("/proc/loadavg");
    double l = -1;
    f >> l;
    return l;
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// n values ~ N(0, scale^2) from Rng(seed).
inline std::vector<float> random_vec(size_t n, uint64_t seed, float scale) {
    Rng rng(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = scale * rng.normal();
    return v;
}

// One linear product in [M, K] -> out [M, N] with weight [N, K], forward and both backward
// products (out = in w^T; d_in = d_out w; d_w = d_out^T in), on buffers of its own.
struct Linear {
    int64_t M, K, N;
    std::vector<float> in, w, out, d_out, d_in, d_w;
    Linear(int64_t M_, int64_t K_, int64_t N_, uint64_t seed) : M(M_), K(K_), N(N_) {
        in = random_vec(size_t(M * K), seed, 1.0f);
        w = random_vec(size_t(N * K), seed + 1, 0.05f);
        d_out = random_vec(size_t(M * N), seed + 2, 1.0f);
        out.resize(size_t(M * N));
        d_in.resize(size_t(M * K));
        d_w.resize(size_t(N * K));
    }
    void run() {
        using kernels::gemm;
        gemm(false, true, M, N, K, 1.0f, in.data(), K, w.data(), K, 0.0f, out.data(), N);
        gemm(false, false, M, K, N, 1.0f, d_out.data(), N, w.data(), K, 1.0f, d_in.data(), K);
        gemm(true, false, N, K, M, 1.0f, d_out.data(), N, in.data(), K, 1.0f, d_w.data(), K);
    }
    double flops() const { return 3 * 2.0 * double(M) * double(K) * double(N); }
};

// One output line: "key=value  key=value" or, with json, {"key": value, ...}.
struct Out {
    bool json = false;
    std::string line;
    bool first = true;
    void begin() { line = json ? "{" : "", first = true; }
    void add(const char* key, double v, const char* fmt = "%.4g") {
        char num[64];
        std::snprintf(num, sizeof num, fmt, v);
        add_raw(key, num);
    }
    void add(const char* key, const std::string& s) { add_raw(key, json ? "\"" + s + "\"" : s); }
    void add_raw(const char* key, const std::string& v) {
        line += first ? "" : (json ? ", " : "  ");
        // Appended piece by piece: `"\"" + std::string(key)` trips GCC 12's false -Wrestrict.
        if (json) {
            line += '"';
            line += key;
            line += "\": ";
        } else {
            line += key;
            line += '=';
        }
        line += v;
        first = false;
    }
    void end() {
        std::printf("%s%s\n", line.c_str(), json ? "}" : "");
        std::fflush(stdout);
    }
};

}  // namespace moe::bench
