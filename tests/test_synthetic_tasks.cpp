// The MMoE synthetic two-task generator: the geometry of w1, w2, the correlation of the two
// tasks as p varies, the noise level, reproducibility from the seed, and the CSV output.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tabular/synthetic_tasks.h"
#include "test_support.h"

using namespace moe;
using namespace moe::tabular;

namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
    const double n = double(a.size());
    double ma = 0, mb = 0;
    for (size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
    ma /= n, mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / std::sqrt(saa * sbb);
}

std::vector<double> f64(const std::vector<float>& v) {
    return std::vector<double>(v.begin(), v.end());
}

// w^T x for every row: [rows]
std::vector<double> project(const SyntheticTasks& t, const std::vector<double>& w) {
    std::vector<double> out(size_t(t.rows));
    for (int64_t r = 0; r < t.rows; ++r)
        for (int64_t i = 0; i < t.dim; ++i)
            out[size_t(r)] += w[size_t(i)] * double(t.x[size_t(r * t.dim + i)]);
    return out;
}

SyntheticTasks make(double p, int64_t rows, uint64_t seed = 7) {
    SyntheticTaskOptions o;
    o.correlation = p;
    o.rows = rows;
    o.seed = seed;
    return make_synthetic_tasks(o);
}

std::string temp_dir(const std::string& name) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("moe_test_synthetic_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir.string();
}

std::vector<std::string> split(const std::string& line) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) out.push_back(f);
    return out;
}

}  // namespace

TEST(SyntheticTasks, WeightsHaveCosineP) {
    for (double p : {-0.3, 0.0, 0.5, 0.9, 1.0}) {
        const SyntheticTasks t = make(p, 0);
        ASSERT_EQ(t.w1.size(), 100u);
        ASSERT_EQ(t.w2.size(), 100u);
        ASSERT_EQ(t.alpha.size(), 5u);
        ASSERT_EQ(t.beta.size(), 5u);
        const double n1 = std::sqrt(dot(t.w1, t.w1)), n2 = std::sqrt(dot(t.w2, t.w2));
        // c = 1: w1 = u1, and w2 = p u1 + sqrt(1 - p^2) u2 is a unit vector when u1 _|_ u2.
        EXPECT_NEAR(n1, 1.0, 1e-12) << "p=" << p;
        EXPECT_NEAR(n2, 1.0, 1e-12) << "p=" << p;
        EXPECT_NEAR(dot(t.w1, t.w2) / (n1 * n2), p, 1e-12) << "p=" << p;
        // u2 = (w2 - p w1) / sqrt(1 - p^2) is orthogonal to u1 = w1.
        if (p < 1.0) {
            std::vector<double> u2(t.w2.size());
            for (size_t i = 0; i < u2.size(); ++i)
                u2[i] = (t.w2[i] - p * t.w1[i]) / std::sqrt(1 - p * p);
            EXPECT_NEAR(std::sqrt(dot(u2, u2)), 1.0, 1e-12);
            EXPECT_NEAR(dot(t.w1, u2), 0.0, 1e-12);
        }
    }
}

TEST(SyntheticTasks, ScaleMultipliesTheWeights) {
    SyntheticTaskOptions o;
    o.rows = 0;
    o.scale = 3.0;
    o.correlation = 0.5;
    const SyntheticTasks t = make_synthetic_tasks(o);
    EXPECT_NEAR(std::sqrt(dot(t.w1, t.w1)), 3.0, 1e-12);
    EXPECT_NEAR(std::sqrt(dot(t.w2, t.w2)), 3.0, 1e-12);
    EXPECT_NEAR(dot(t.w1, t.w2) / 9.0, 0.5, 1e-12);
}

TEST(SyntheticTasks, ProjectionsCorrelateAsP) {
    for (double p : {0.0, 0.5, 0.9, 1.0}) {
        const SyntheticTasks t = make(p, 20000);
        ASSERT_EQ(t.x.size(), size_t(20000 * 100));
        const double r = pearson(project(t, t.w1), project(t, t.w2));
        EXPECT_NEAR(r, p, 0.03) << "p=" << p;
    }
}

TEST(SyntheticTasks, LabelCorrelationGrowsWithP) {
    const SyntheticTasks a = make(0.5, 20000), b = make(0.9, 20000), c = make(1.0, 20000);
    const double ra = pearson(f64(a.y1), f64(a.y2));
    const double rb = pearson(f64(b.y1), f64(b.y2));
    const double rc = pearson(f64(c.y1), f64(c.y2));
    EXPECT_LT(ra, rb);
    EXPECT_LT(rb, rc);
    // At p = 1 the two tasks differ only by their noise.
    EXPECT_GT(rc, 0.99);
}

TEST(SyntheticTasks, NoiseHasTheGivenVariance) {
    const SyntheticTasks t = make(1.0, 20000);
    // y1 - y2 = eps1 - eps2, of variance 2 * 0.01.
    double m = 0, v = 0;
    for (int64_t r = 0; r < t.rows; ++r) m += double(t.y1[size_t(r)]) - t.y2[size_t(r)];
    m /= double(t.rows);
    for (int64_t r = 0; r < t.rows; ++r) {
        const double e = double(t.y1[size_t(r)]) - t.y2[size_t(r)] - m;
        v += e * e;
    }
    v /= double(t.rows - 1);
    EXPECT_NEAR(v, 0.02, 0.002);
    EXPECT_NEAR(m, 0.0, 0.01);
}

TEST(SyntheticTasks, LabelsFollowTheFormula) {
    SyntheticTaskOptions o;
    o.correlation = 0.7;
    o.rows = 50;
    o.noise_variance = 0;
    const SyntheticTasks t = make_synthetic_tasks(o);
    const std::vector<double> t1 = project(t, t.w1), t2 = project(t, t.w2);
    for (int64_t r = 0; r < t.rows; ++r) {
        double s1 = t1[size_t(r)], s2 = t2[size_t(r)];
        for (size_t j = 0; j < t.alpha.size(); ++j) {
            s1 += std::sin(t.alpha[j] * t1[size_t(r)] + t.beta[j]);
            s2 += std::sin(t.alpha[j] * t2[size_t(r)] + t.beta[j]);
        }
        EXPECT_NEAR(t.y1[size_t(r)], s1, 1e-5 * (1 + std::fabs(s1)));
        EXPECT_NEAR(t.y2[size_t(r)], s2, 1e-5 * (1 + std::fabs(s2)));
    }
}

TEST(SyntheticTasks, SameSeedSameDataOtherSeedOther) {
    const SyntheticTasks a = make(0.5, 500, 11), b = make(0.5, 500, 11), c = make(0.5, 500, 12);
    EXPECT_EQ(a.x, b.x);
    EXPECT_EQ(a.y1, b.y1);
    EXPECT_EQ(a.y2, b.y2);
    EXPECT_EQ(a.w1, b.w1);
    EXPECT_EQ(a.alpha, b.alpha);
    EXPECT_NE(a.x, c.x);
    EXPECT_NE(a.y1, c.y1);
    EXPECT_NE(a.w1, c.w1);
    EXPECT_NE(a.alpha, c.alpha);
    // The first rows do not depend on how many rows are made.
    const SyntheticTasks d = make(0.5, 200, 11);
    EXPECT_TRUE(std::equal(d.x.begin(), d.x.end(), a.x.begin()));
    EXPECT_TRUE(std::equal(d.y1.begin(), d.y1.end(), a.y1.begin()));
}

TEST(SyntheticTasks, RejectsBadOptions) {
    SyntheticTaskOptions o;
    o.correlation = 1.5;
    EXPECT_TRUE(test::throws_error_with([&] { make_synthetic_tasks(o); }, {"correlation", "1.5"}));
    o = {};
    o.rows = -1;
    EXPECT_TRUE(test::throws_error_with([&] { make_synthetic_tasks(o); }, {"rows"}));
    o = {};
    o.dim = 1;
    EXPECT_TRUE(test::throws_error_with([&] { make_synthetic_tasks(o); }, {"dim"}));
    o = {};
    o.noise_variance = -0.1;
    EXPECT_TRUE(test::throws_error_with([&] { make_synthetic_tasks(o); }, {"noise_variance"}));
}

TEST(SyntheticTasks, CsvRoundTripsExactly) {
    const SyntheticTasks t = make(0.9, 300);
    const std::string dir = temp_dir("csv");
    const std::string path = dir + "/part.csv";
    const int64_t first = 100, n = 150;
    write_synthetic_csv(t, path, first, n);

    std::ifstream in(path);
    ASSERT_TRUE(in) << path;
    std::string line;
    ASSERT_TRUE(std::getline(in, line));
    const std::vector<std::string> header = split(line);
    ASSERT_EQ(header.size(), 102u);
    for (int i = 0; i < 100; ++i) {
        std::string name = "x";  // built in two steps: GCC 12 warns wrongly on "x" + string
        name += std::to_string(i);
        EXPECT_EQ(header[size_t(i)], name);
    }
    EXPECT_EQ(header[100], "y1");
    EXPECT_EQ(header[101], "y2");

    int64_t rows = 0;
    while (std::getline(in, line)) {
        const std::vector<std::string> f = split(line);
        ASSERT_EQ(f.size(), 102u) << "row " << rows;
        const int64_t r = first + rows;
        const auto bits_equal = [](const std::string& text, float expected) {
            char* end = nullptr;
            const float v = std::strtof(text.c_str(), &end);
            return *end == 0 && std::memcmp(&v, &expected, sizeof v) == 0;
        };
        for (int64_t i = 0; i < 100; ++i)
            ASSERT_TRUE(bits_equal(f[size_t(i)], t.x[size_t(r * 100 + i)]))
                << "row " << r << " x" << i << ": " << f[size_t(i)];
        ASSERT_TRUE(bits_equal(f[100], t.y1[size_t(r)])) << "row " << r << " y1: " << f[100];
        ASSERT_TRUE(bits_equal(f[101], t.y2[size_t(r)])) << "row " << r << " y2: " << f[101];
        ++rows;
    }
    EXPECT_EQ(rows, n);
    // Nothing is left beside the file (the atomic write's temporary is renamed).
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir),
                            std::filesystem::directory_iterator()),
              1);
    std::filesystem::remove_all(dir);
}

TEST(SyntheticTasks, CsvRejectsRowsOutsideTheData) {
    const SyntheticTasks t = make(0.5, 10);
    const std::string dir = temp_dir("range");
    EXPECT_TRUE(test::throws_error_with([&] { write_synthetic_csv(t, dir + "/a.csv", 5, 6); },
                                        {"a.csv", "10 rows"}));
    EXPECT_FALSE(std::filesystem::exists(dir + "/a.csv"));
    std::filesystem::remove_all(dir);
}

namespace {
// Runs the built `moe`; returns its exit status and what it printed (stdout and stderr).
std::pair<int, std::string> run_moe(const std::string& args, const std::string& dir) {
    const std::string log = dir + "/moe.log";
    const int status =
        std::system((test::bin_dir() + "/moe " + args + " >" + log + " 2>&1").c_str());
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::filesystem::remove(log);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

TEST(MakeSyntheticCommand, WritesTheThreeSplitsReproducibly) {
    if (!std::filesystem::exists(test::bin_dir() + "/moe")) GTEST_SKIP() << "moe is not built";
    const std::string dir = temp_dir("cli");
    const std::string flags = " --correlation 0.9 --rows 40 --val-rows 7 --test-rows 5 --seed 3";
    auto [code, text] = run_moe("make-synthetic --out " + dir + "/a" + flags, dir);
    ASSERT_EQ(code, 0) << text;
    std::tie(code, text) = run_moe("make-synthetic --out " + dir + "/b" + flags, dir);
    ASSERT_EQ(code, 0) << text;
    // The same rows as the library makes, split in order: val starts at row 40.
    SyntheticTaskOptions o;
    o.correlation = 0.9;
    o.rows = 52;
    o.seed = 3;
    const SyntheticTasks t = make_synthetic_tasks(o);
    write_synthetic_csv(t, dir + "/val.csv", 40, 7);
    for (const auto& [name, rows] : {std::pair{"train", 40}, {"val", 7}, {"test", 5}}) {
        const std::string a = read_all(dir + "/a/" + name + ".csv");
        EXPECT_EQ(std::count(a.begin(), a.end(), '\n'), rows + 1) << name;
        EXPECT_EQ(a, read_all(dir + "/b/" + name + ".csv")) << name;
    }
    EXPECT_EQ(read_all(dir + "/a/val.csv"), read_all(dir + "/val.csv"));
    std::filesystem::remove_all(dir);
}

TEST(MakeSyntheticCommand, BadFlagsExitNonZeroNamingTheFlag) {
    if (!std::filesystem::exists(test::bin_dir() + "/moe")) GTEST_SKIP() << "moe is not built";
    const std::string dir = temp_dir("cli_bad");
    const std::pair<std::string, std::string> cases[] = {
        {"--out " + dir + "/o", "--correlation"},
        {"--correlation 0.5", "--out"},
        {"--correlation 1.5 --out " + dir + "/o", "--correlation"},
        {"--correlation 0.5 --rows -3 --out " + dir + "/o", "--rows"},
        {"--correlation 0.5 --val-rows x --out " + dir + "/o", "--val-rows"},
        {"--correlation 0.5 --colour 2 --out " + dir + "/o", "--colour"},
    };
    for (const auto& [args, flag] : cases) {
        auto [code, text] = run_moe("make-synthetic " + args, dir);
        EXPECT_EQ(code, 2) << args << ": " << text;
        EXPECT_NE(text.find(flag), std::string::npos) << args << ": " << text;
    }
    EXPECT_FALSE(std::filesystem::exists(dir + "/o"));
    auto [code, text] = run_moe("make-synthetic --help", dir);
    EXPECT_EQ(code, 0);
    EXPECT_NE(text.find("--correlation P"), std::string::npos) << text;
    std::filesystem::remove_all(dir);
}
