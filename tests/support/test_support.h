// Helpers shared by the tests: tolerance comparison, finite differences, PyTorch fixtures,
// and seeded random data.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "io/safetensors.h"

namespace moe::test {

// True when |actual - expected| <= atol + rtol * |expected| everywhere; otherwise says
// where the worst element is, both values and the count of failures.
template <class A, class B>
::testing::AssertionResult all_close(std::span<const A> actual, std::span<const B> expected,
                                     double atol, double rtol);

inline ::testing::AssertionResult all_close(const std::vector<float>& a,
                                            const std::vector<float>& b, double atol, double rtol) {
    return all_close<float, float>(a, b, atol, rtol);
}
inline ::testing::AssertionResult all_close(const std::vector<double>& a,
                                            const std::vector<double>& b, double atol,
                                            double rtol) {
    return all_close<double, double>(a, b, atol, rtol);
}
inline ::testing::AssertionResult all_close(const std::vector<float>& a,
                                            const std::vector<double>& b, double atol,
                                            double rtol) {
    return all_close<float, double>(a, b, atol, rtol);
}

// Central finite differences of `loss` with respect to x[0..n): (L(x+h) - L(x-h)) / 2h.
// Run in double precision, h = 1e-6 gives errors around 1e-9 for smooth functions.
std::vector<double> numeric_gradient(const std::function<double()>& loss, double* x, size_t n,
                                     double h = 1e-6);

// Random vectors from a seeded generator: normal(0, scale) and uniform ints in [0, n).
std::vector<double> random_normal(size_t n, uint64_t seed, double scale = 1.0);
std::vector<float> random_normal_f32(size_t n, uint64_t seed, float scale = 1.0f);

// sum_i weights[i] * y[i]: a scalar loss whose gradient with respect to y is `weights`.
// Finite-difference tests use it so that every output element gets a distinct gradient.
double weighted_sum(const std::vector<double>& y, const std::vector<double>& weights);

// The message of the moe::Error that fn throws, or "" if it throws none.
template <class F>
std::string error_of(F&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// Success when fn throws moe::Error whose message contains every one of `parts`.
template <class F>
::testing::AssertionResult throws_error_with(F&& fn, std::initializer_list<std::string> parts) {
    try {
        fn();
    } catch (const Error& e) {
        const std::string msg = e.what();
        for (const std::string& p : parts)
            if (msg.find(p) == std::string::npos)
                return ::testing::AssertionFailure()
                       << "message \"" << msg << "\" does not contain \"" << p << "\"";
        return ::testing::AssertionSuccess();
    } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << "threw a non-moe exception: " << e.what();
    }
    return ::testing::AssertionFailure() << "did not throw";
}

// A PyTorch fixture: $MOE_FIXTURES/NAME.safetensors, made by tests/reference/gen_NAME.py.
class Fixture {
  public:
    explicit Fixture(const std::string& name);
    std::vector<double> get(const std::string& tensor) const;  // any float dtype
    std::vector<int64_t> get_int(const std::string& tensor) const;
    Shape shape(const std::string& tensor) const { return file_->info(tensor).shape; }
    const io::SafetensorsFile& file() const { return *file_; }

  private:
    std::unique_ptr<io::SafetensorsFile> file_;
};

// Paths compiled in by tests/CMakeLists.txt; an environment variable of the same name
// (MOE_FIXTURES, MOE_PYTHON, MOE_BIN, MOE_SOURCE) overrides each.
std::string fixture_dir();  // where tests/reference/make_fixtures.py wrote the fixtures
std::string python();       // the project venv's python (torch, numpy, safetensors)
std::string bin_dir();      // the build directory holding `moe`
std::string source_dir();   // the repository root
// Converts between precisions for tests that run the f32 path on fixture data.
std::vector<float> to_f32(const std::vector<double>& v);
std::vector<double> to_f64(const std::vector<float>& v);

// Wall-clock limits in tests are set for the Release build. Under AddressSanitizer and
// UndefinedBehaviorSanitizer (make test-asan, -O1) the same work takes 2-4 times as long,
// so a test multiplies its limits by this: they still catch an algorithm gone quadratic,
// not the sanitizers' constant factor.
constexpr double time_limit_scale() {
#if defined(__SANITIZE_ADDRESS__)
    return 5.0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 5.0;
#else
    return 1.0;
#endif
#else
    return 1.0;
#endif
}

}  // namespace moe::test
