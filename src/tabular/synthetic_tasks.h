// The synthetic two-task regression data of the MMoE paper (Ma et al. 2018, section 3.2),
// whose task correlation is a parameter p:
//
//   u1, u2    orthogonal unit vectors in R^d (Gram-Schmidt on two N(0, I) draws)
//   w1 = c u1,   w2 = c (p u1 + sqrt(1 - p^2) u2)        so cos(w1, w2) = p
//   y_i = w_i^T x + sum_{j=1..m} sin(alpha_j w_i^T x + beta_j) + eps_i
//   x ~ N(0, I_d),  alpha_j, beta_j ~ N(0, 1) (drawn once per data set, shared by both
//   tasks),  eps_i ~ N(0, 0.01) (variance 0.01),  c = 1, m = 5, d = 100.
//
// Everything is drawn from the seed alone, so a data set is reproducible from (p, seed).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::tabular {

struct SyntheticTaskOptions {
    double correlation = 0.5;  // p in [-1, 1]
    int64_t rows = 10000;
    int64_t dim = 100;   // d
    int64_t waves = 5;   // m
    double scale = 1.0;  // c
    double noise_variance = 0.01;
    uint64_t seed = 1;
};

struct SyntheticTasks {
    int64_t rows = 0, dim = 0;
    std::vector<float> x;                  // [rows, dim]
    std::vector<float> y1, y2;             // [rows]
    std::vector<double> w1, w2;            // [dim]
    std::vector<double> alpha, beta;       // [m]
};

SyntheticTasks make_synthetic_tasks(const SyntheticTaskOptions& opt);

// Writes a CSV with header x0..x{d-1},y1,y2 (numbers printed so that they read back exactly
// as floats), atomically.
void write_synthetic_csv(const SyntheticTasks& data, const std::string& path, int64_t first_row,
                         int64_t n_rows);

}  // namespace moe::tabular
