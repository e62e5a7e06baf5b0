// `moe make-synthetic`: writes the MMoE paper's synthetic two-task data (see
// src/tabular/synthetic_tasks.h) as train/val/test CSV files, so that experiments need no
// Python to make them.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/check.h"
#include "tabular/synthetic_tasks.h"

namespace moe::cli {

namespace {
const char* kUsage =
    "usage: moe make-synthetic --correlation P --out DIR [options]\n"
    "\n"
    "Writes the synthetic two-task regression data of the MMoE paper (Ma et al. 2018,\n"
    "section 3.2): x ~ N(0, I_100), y_i = w_i^T x + sum_{j=1..5} sin(alpha_j w_i^T x + beta_j)\n"
    "+ N(0, 0.01), with cos(w1, w2) = P. One set of ROWS + V + T rows is drawn from the seed\n"
    "and split in order into DIR/train.csv, DIR/val.csv and DIR/test.csv, each with the\n"
    "header x0,...,x99,y1,y2. The same P and seed always give the same files.\n"
    "\n"
    "  --correlation P    task correlation, cos(w1, w2), in [-1, 1] (required)\n"
    "  --out DIR          output directory, made if missing (required)\n"
    "  --rows N           training rows (default 8000)\n"
    "  --val-rows V       validation rows (default 1000)\n"
    "  --test-rows T      test rows (default 1000)\n"
    "  --seed S           seed of every random draw (default 1)\n";

// Pearson correlation of the two labels over rows [first, first + n): printed so that a
// user sees what P gave.
double label_correlation(const tabular::SyntheticTasks& t, int64_t first, int64_t n) {
    double m1 = 0, m2 = 0;
    for (int64_t r = first; r < first + n; ++r) m1 += t.y1[size_t(r)], m2 += t.y2[size_t(r)];
    m1 /= double(n), m2 /= double(n);
    double s12 = 0, s11 = 0, s22 = 0;
    for (int64_t r = first; r < first + n; ++r) {
        const double a = t.y1[size_t(r)] - m1, b = t.y2[size_t(r)] - m2;
        s12 += a * b, s11 += a * a, s22 += b * b;
    }
    return s11 > 0 && s22 > 0 ? s12 / std::sqrt(s11 * s22) : 0.0;
}
}  // namespace

int run_make_synthetic(int argc, char** argv) {
    const Args a =
        parse_args(argc, argv,
                   {"--correlation", "--out", "--rows", "--val-rows", "--test-rows", "--seed"}, {});
    if (a.help) return std::fputs(kUsage, stdout), 0;
    if (!a.positional.empty()) throw UsageError("unexpected argument '" + a.positional[0] + "'");
    if (!a.has("--correlation")) throw UsageError("option --correlation P is required");
    if (!a.has("--out")) throw UsageError("option --out DIR is required");
    const std::string out = a.get("--out", "");
    if (out.empty()) throw UsageError("option --out needs a directory, got ''");

    tabular::SyntheticTaskOptions opt;
    opt.correlation = a.get_double("--correlation", 0.0);
    if (opt.correlation < -1.0 || opt.correlation > 1.0)
        throw UsageError("option --correlation must be in [-1, 1], got " +
                         a.get("--correlation", ""));
    // 2^26 rows of 100 floats is 25 GiB: far beyond any use, and below overflow.
    constexpr int64_t kMaxRows = int64_t(1) << 26;
    const int64_t train = a.get_int("--rows", 8000, 1, kMaxRows);
    const int64_t val = a.get_int("--val-rows", 1000, 0, kMaxRows);
    const int64_t test = a.get_int("--test-rows", 1000, 0, kMaxRows);
    opt.seed = uint64_t(a.get_int("--seed", 1, 0));
    opt.rows = train + val + test;

    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    MOE_REQUIRE(!ec && std::filesystem::is_directory(out), "--out ", out,
                ": cannot make the directory", ec ? ": " + ec.message() : std::string());

    const tabular::SyntheticTasks data = tabular::make_synthetic_tasks(opt);
    const struct {
        const char* name;
        int64_t first, n;
    } parts[] = {{"train", 0, train}, {"val", train, val}, {"test", train + val, test}};
    for (const auto& p : parts) {
        const std::string path = out + "/" + p.name + ".csv";
        tabular::write_synthetic_csv(data, path, p.first, p.n);
        std::printf("wrote %s: %ld rows\n", path.c_str(), long(p.n));
    }
    std::printf("correlation %g, seed %lu, %ld features: corr(y1, y2) on train = %.4f\n",
                opt.correlation, static_cast<unsigned long>(opt.seed), long(data.dim),
                label_correlation(data, 0, train));
    return 0;
}

}  // namespace moe::cli
