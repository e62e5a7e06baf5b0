#include "vision/image_resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"

namespace moe::vision {

namespace {

// For each output coordinate: the two input coordinates it blends and the weight of the
// second one.
struct Taps {
    std::vector<int64_t> lo, hi;
    std::vector<float> t;
};

Taps taps(int64_t in, int64_t out) {
    Taps k;
    k.lo.resize(size_t(out));
    k.hi.resize(size_t(out));
    k.t.resize(size_t(out));
    const double scale = double(in) / double(out);
    for (int64_t o = 0; o < out; ++o) {
        const double s = std::clamp((double(o) + 0.5) * scale - 0.5, 0.0, double(in - 1));
        const int64_t lo = int64_t(std::floor(s));
        k.lo[size_t(o)] = lo;
        k.hi[size_t(o)] = std::min(lo + 1, in - 1);
        k.t[size_t(o)] = float(s - double(lo));
    }
    return k;
}

}  // namespace

void resize_bilinear(const uint8_t* src, int64_t h, int64_t w, int64_t channels, uint8_t* dst,
                     int64_t H, int64_t W) {
    MOE_CHECK(h > 0 && w > 0 && H > 0 && W > 0 && channels > 0, "resize_bilinear: ", h, "x", w,
              " -> ", H, "x", W, " with ", channels, " channels");
    const Taps ty = taps(h, H), tx = taps(w, W);
    const int64_t C = channels;
    for (int64_t y = 0; y < H; ++y) {
        const uint8_t* r0 = src + ty.lo[size_t(y)] * w * C;
        const uint8_t* r1 = src + ty.hi[size_t(y)] * w * C;
        const float fy = ty.t[size_t(y)];
        for (int64_t x = 0; x < W; ++x) {
            const int64_t x0 = tx.lo[size_t(x)] * C, x1 = tx.hi[size_t(x)] * C;
            const float fx = tx.t[size_t(x)];
            for (int64_t c = 0; c < C; ++c) {
                // Lerps of the form a + (b - a) t: equal inputs give exactly that value.
                const float top = float(r0[x0 + c]) + (float(r0[x1 + c]) - float(r0[x0 + c])) * fx;
                const float bot = float(r1[x0 + c]) + (float(r1[x1 + c]) - float(r1[x0 + c])) * fx;
                const float v = top + (bot - top) * fy;
                dst[(y * W + x) * C + c] = uint8_t(std::clamp(std::lround(v), 0L, 255L));
            }
        }
    }
}

}  // namespace moe::vision
