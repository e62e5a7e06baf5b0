#include "nn/rope.h"

#include <cmath>

#include "core/check.h"

namespace moe::nn {

template <class R>
void rope_table(R* cos_sin, int64_t T, int64_t D, double theta) {
    MOE_CHECK(T > 0 && D > 0 && D % 2 == 0 && theta > 0, "rope_table: bad arguments T=", T,
              " D=", D, " (must be even) theta=", theta);
    const int64_t half = D / 2;
    R* cos = cos_sin;
    R* sin = cos_sin + T * half;
    for (int64_t i = 0; i < half; ++i) {
        const double inv_freq = std::pow(theta, -2.0 * double(i) / double(D));
        for (int64_t t = 0; t < T; ++t) {
            const double angle = double(t) * inv_freq;
            cos[t * half + i] = R(std::cos(angle));
            sin[t * half + i] = R(std::sin(angle));
        }
    }
}

template <class R>
void rope_position(R* cos, R* sin, int64_t pos, int64_t D, double theta) {
    MOE_CHECK(pos >= 0 && D > 0 && D % 2 == 0 && theta > 0,
              "rope_position: bad arguments pos=", pos, " D=", D, " (must be even) theta=", theta);
    for (int64_t i = 0; i < D / 2; ++i) {
        const double inv_freq = std::pow(theta, -2.0 * double(i) / double(D));
        const double angle = double(pos) * inv_freq;
        cos[i] = R(std::cos(angle));
        sin[i] = R(std::sin(angle));
    }
}

template void rope_table<float>(float*, int64_t, int64_t, double);
template void rope_table<double>(double*, int64_t, int64_t, double);
template void rope_position<float>(float*, float*, int64_t, int64_t, double);
template void rope_position<double>(double*, double*, int64_t, int64_t, double);

}  // namespace moe::nn
