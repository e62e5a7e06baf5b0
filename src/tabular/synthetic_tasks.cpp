// The MMoE paper's synthetic two-task data (see synthetic_tasks.h): generation and CSV output.
#include "tabular/synthetic_tasks.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "core/check.h"
#include "core/rng.h"
#include "io/atomic_file.h"

namespace moe::tabular {

namespace {

// Independent streams of the seed, one per kind of draw: the weights and waves do not depend
// on the row count, and the first N rows are the same whatever `rows` is.
constexpr uint64_t kStreamDirections = 1, kStreamWaves = 2, kStreamX = 3, kStreamNoise = 4;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

void normalize(std::vector<double>& v) {
    const double n = std::sqrt(dot(v, v));
    MOE_CHECK(n > 0, "a zero direction vector");
    for (double& e : v) e /= n;
}

// v minus its component along the unit vector u.
void remove_component(std::vector<double>& v, const std::vector<double>& u) {
    const double c = dot(v, u);
    for (size_t i = 0; i < v.size(); ++i) v[i] -= c * u[i];
}

// sum_j sin(alpha_j t + beta_j)
double waves_at(double t, const std::vector<double>& alpha, const std::vector<double>& beta) {
    double s = 0;
    for (size_t j = 0; j < alpha.size(); ++j) s += std::sin(alpha[j] * t + beta[j]);
    return s;
}

// The shortest text that reads back as exactly `v` (std::to_chars round-trip guarantee).
void append_float(std::string& out, float v) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    MOE_CHECK(r.ec == std::errc());
    out.append(buf, r.ptr);
}

}  // namespace

SyntheticTasks make_synthetic_tasks(const SyntheticTaskOptions& opt) {
    const double p = opt.correlation;
    MOE_REQUIRE(std::isfinite(p) && p >= -1.0 && p <= 1.0,
                "synthetic tasks: correlation must be in [-1, 1], got ", p);
    MOE_REQUIRE(opt.rows >= 0, "synthetic tasks: rows must be >= 0, got ", opt.rows);
    MOE_REQUIRE(opt.dim >= 2, "synthetic tasks: dim must be >= 2 (two orthogonal directions), got ",
                opt.dim);
    MOE_REQUIRE(opt.dim <= (int64_t(1) << 20), "synthetic tasks: dim ", opt.dim, " is too large");
    MOE_REQUIRE(opt.waves >= 0 && opt.waves <= 1000,
                "synthetic tasks: waves must be in [0, 1000], got ", opt.waves);
    MOE_REQUIRE(std::isfinite(opt.scale), "synthetic tasks: scale must be finite, got ", opt.scale);
    MOE_REQUIRE(std::isfinite(opt.noise_variance) && opt.noise_variance >= 0,
                "synthetic tasks: noise_variance must be >= 0, got ", opt.noise_variance);
    // rows * dim floats; the division keeps the product from overflowing.
    MOE_REQUIRE(opt.rows <= (int64_t(1) << 40) / opt.dim, "synthetic tasks: rows ", opt.rows,
                " x dim ", opt.dim, " is too large");

    const Rng root(opt.seed);
    SyntheticTasks out;
    out.rows = opt.rows;
    out.dim = opt.dim;
    const size_t d = size_t(opt.dim);

    // u1, u2: Gram-Schmidt on two N(0, I) draws. The second pass of remove_component takes
    // away what rounding left of u1 in u2, so u1.u2 is ~1e-17 and cos(w1, w2) = p to ~1e-15.
    Rng rd = root.fork(kStreamDirections);
    std::vector<double> u1(d), u2(d);  // [dim]
    for (double& e : u1) e = rd.normal();
    for (double& e : u2) e = rd.normal();
    normalize(u1);
    remove_component(u2, u1);
    normalize(u2);
    remove_component(u2, u1);
    normalize(u2);
    const double q = std::sqrt(std::max(0.0, 1.0 - p * p));
    out.w1.resize(d);
    out.w2.resize(d);
    for (size_t i = 0; i < d; ++i) {
        out.w1[i] = opt.scale * u1[i];
        out.w2[i] = opt.scale * (p * u1[i] + q * u2[i]);
    }

    // alpha_j, beta_j ~ N(0, 1), shared by both tasks.
    Rng rw = root.fork(kStreamWaves);
    out.alpha.resize(size_t(opt.waves));
    out.beta.resize(size_t(opt.waves));
    for (size_t j = 0; j < out.alpha.size(); ++j) {
        out.alpha[j] = rw.normal();
        out.beta[j] = rw.normal();
    }

    Rng rx = root.fork(kStreamX), rn = root.fork(kStreamNoise);
    const double noise_std = std::sqrt(opt.noise_variance);
    out.x.resize(size_t(opt.rows) * d);
    out.y1.resize(size_t(opt.rows));
    out.y2.resize(size_t(opt.rows));
    for (int64_t r = 0; r < opt.rows; ++r) {
        float* xr = out.x.data() + size_t(r) * d;
        for (size_t i = 0; i < d; ++i) xr[i] = rx.normal();
        // w^T x in double, on the float x that is stored, so the CSV's x gives the same y.
        double t1 = 0, t2 = 0;
        for (size_t i = 0; i < d; ++i) {
            t1 += out.w1[i] * double(xr[i]);
            t2 += out.w2[i] * double(xr[i]);
        }
        const double e1 = noise_std * rn.normal(), e2 = noise_std * rn.normal();
        out.y1[size_t(r)] = float(t1 + waves_at(t1, out.alpha, out.beta) + e1);
        out.y2[size_t(r)] = float(t2 + waves_at(t2, out.alpha, out.beta) + e2);
    }
    return out;
}

void write_synthetic_csv(const SyntheticTasks& data, const std::string& path, int64_t first_row,
                         int64_t n_rows) {
    MOE_REQUIRE(
        first_row >= 0 && n_rows >= 0 && first_row <= data.rows && n_rows <= data.rows - first_row,
        path, ": rows [", first_row, ", ", first_row, " + ", n_rows,
        ") are outside the data set's ", data.rows, " rows");
    const size_t d = size_t(data.dim);
    MOE_CHECK(data.x.size() == size_t(data.rows) * d && data.y1.size() == size_t(data.rows) &&
              data.y2.size() == size_t(data.rows));

    io::AtomicFile file(path);
    std::string buf;
    for (size_t i = 0; i < d; ++i) {
        buf += 'x';
        buf += std::to_string(i);
        buf += ',';
    }
    buf += "y1,y2\n";
    // Written in pieces of about 1 MiB, so that a large set needs no second copy in memory.
    for (int64_t r = first_row; r < first_row + n_rows; ++r) {
        const float* xr = data.x.data() + size_t(r) * d;
        for (size_t i = 0; i < d; ++i) {
            append_float(buf, xr[i]);
            buf += ',';
        }
        append_float(buf, data.y1[size_t(r)]);
        buf += ',';
        append_float(buf, data.y2[size_t(r)]);
        buf += '\n';
        if (buf.size() >= (size_t(1) << 20)) {
            file.write(buf.data(), buf.size());
            buf.clear();
        }
    }
    file.write(buf.data(), buf.size());
    file.commit();
}

}  // namespace moe::tabular
