#include "test_support.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace moe::test {

template <class A, class B>
::testing::AssertionResult all_close(std::span<const A> actual, std::span<const B> expected,
                                     double atol, double rtol) {
    if (actual.size() != expected.size())
        return ::testing::AssertionFailure()
               << "size " << actual.size() << " != expected size " << expected.size();
    size_t failures = 0, worst = 0;
    double worst_excess = -1;
    for (size_t i = 0; i < actual.size(); ++i) {
        const double a = double(actual[i]), b = double(expected[i]);
        const double tol = atol + rtol * std::fabs(b);
        const double err = std::fabs(a - b);
        if (!(err <= tol)) {  // also catches NaN
            ++failures;
            const double excess = std::isnan(err) ? INFINITY : err - tol;
            if (excess > worst_excess) worst_excess = excess, worst = i;
        }
    }
    if (failures == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << failures << " of " << actual.size() << " elements differ beyond atol=" << atol
           << " rtol=" << rtol << "; worst at [" << worst << "]: " << double(actual[worst])
           << " vs expected " << double(expected[worst]);
}

template ::testing::AssertionResult all_close<float, float>(std::span<const float>,
                                                            std::span<const float>, double, double);
template ::testing::AssertionResult all_close<double, double>(std::span<const double>,
                                                              std::span<const double>, double,
                                                              double);
template ::testing::AssertionResult all_close<float, double>(std::span<const float>,
                                                             std::span<const double>, double,
                                                             double);

std::vector<double> numeric_gradient(const std::function<double()>& loss, double* x, size_t n,
                                     double h) {
    std::vector<double> g(n);
    for (size_t i = 0; i < n; ++i) {
        const double saved = x[i];
        x[i] = saved + h;
        const double plus = loss();
        x[i] = saved - h;
        const double minus = loss();
        x[i] = saved;
        g[i] = (plus - minus) / (2 * h);
    }
    return g;
}

std::vector<double> random_normal(size_t n, uint64_t seed, double scale) {
    Rng rng(seed);
    std::vector<double> v(n);
    for (auto& x : v) x = scale * rng.normal();
    return v;
}

std::vector<float> random_normal_f32(size_t n, uint64_t seed, float scale) {
    Rng rng(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = scale * rng.normal();
    return v;
}

double weighted_sum(const std::vector<double>& y, const std::vector<double>& weights) {
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * weights[i];
    return s;
}

namespace {
std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}
}  // namespace

std::string fixture_dir() {
    return env_or("MOE_FIXTURES", MOE_FIXTURE_DIR);
}
std::string python() {
    return env_or("MOE_PYTHON", MOE_PYTHON_PATH);
}
std::string bin_dir() {
    return env_or("MOE_BIN", MOE_BIN_DIR);
}
std::string source_dir() {
    return env_or("MOE_SOURCE", MOE_SOURCE_DIR);
}

Fixture::Fixture(const std::string& name) {
    const std::string path = fixture_dir() + "/" + name + ".safetensors";
    file_ = std::make_unique<io::SafetensorsFile>(path);
}

std::vector<double> Fixture::get(const std::string& tensor) const {
    const auto& info = file_->info(tensor);
    std::vector<double> out(size_t(info.shape.numel()));
    // Fixtures hold -inf on purpose (masked logits).
    file_->read(tensor, info.shape, out.data(), io::SafetensorsFile::NonFinite::allow);
    return out;
}

std::vector<int64_t> Fixture::get_int(const std::string& tensor) const {
    const auto& info = file_->info(tensor);
    auto bytes = file_->bytes(tensor);
    std::vector<int64_t> out(size_t(info.shape.numel()));
    for (size_t i = 0; i < out.size(); ++i) {
        if (info.dtype == DType::i64) {
            std::memcpy(&out[i], bytes.data() + 8 * i, 8);
        } else if (info.dtype == DType::i32) {
            int32_t v;
            std::memcpy(&v, bytes.data() + 4 * i, 4);
            out[i] = v;
        } else {
            ADD_FAILURE() << tensor << " is not an integer tensor";
            return {};
        }
    }
    return out;
}

std::vector<float> to_f32(const std::vector<double>& v) {
    return {v.begin(), v.end()};
}
std::vector<double> to_f64(const std::vector<float>& v) {
    return {v.begin(), v.end()};
}

}  // namespace moe::test
