// Rng: a small, seeded, reproducible random number generator (xoshiro256**, seeded through
// splitmix64). The same seed gives the same sequence on every machine and build, which is
// what makes "same seed, same numbers" possible; std::normal_distribution does not promise
// that across standard libraries, so normals are drawn here with Box-Muller.
#pragma once

#include <cstdint>

namespace moe {

class Rng {
  public:
    explicit Rng(uint64_t seed = 0);

    uint64_t next_u64();
    // Uniform in [0, 1) with 24 random bits (exact in f32).
    float uniform();
    // Uniform integer in [0, n).
    uint64_t below(uint64_t n);
    // Standard normal.
    float normal();
    // An independent generator for a named stream (e.g. one per parameter).
    Rng fork(uint64_t stream) const;

  private:
    uint64_t s_[4];
    uint64_t seed_;
    bool has_spare_ = false;
    float spare_ = 0.f;
};

}  // namespace moe
