// Serving speed of a multi-task model: single-row latency (p50, p99) and batch throughput.
//
//   usage: score [--json] [--config RECIPE.json ...] [--requests N] [--batch B] [--threads N]
//
// For each recipe (default: recipes/multitask/adult_mmoe.json and adult_ple.json) the model
// is built at the recipe's shape with random weights and tables of the recipe's column
// schema (vocabulary columns get 64 rows: the lookup cost does not depend on the table's
// size), so no data set is needed. Figures, one line per recipe:
//   latency_p50_us / p99_us   one row per request, --requests of them (after a warm-up)
//   rows_per_s                --batch rows per forward (default 256)
//   allocs_per_request        heap allocations during the single-row requests, per request:
//                             the arenas are sized at construction, so this must be 0
//   gemm_gflops               the same-run rate of a dense GEMM at the batch's expert shape
//                             ([B, d_model] x [d_model, expert_hidden]), for reference
//   model_gflops              the model's forward FLOPs per row x rows_per_s
// Serving is run on 1 thread by default: a server scales by running one model per core.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "bench_support.h"
#include "core/threads.h"
#include "core/timer.h"
#include "io/config.h"
#include "tabular/multitask_config.h"
#include "tabular/multitask_model.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}

// Counts every heap allocation of the process (the requests' loop reads the counter).
void* operator new(size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, size_t) noexcept {
    std::free(p);
}

namespace {

using moe::Timer;
using namespace moe::bench;
using namespace moe::tabular;

// Inputs of the recipe's schema without its data: hashed columns have their buckets + 1
// rows, vocabulary columns 64.
MultitaskInputs inputs_of(const TabularSchema& s) {
    MultitaskInputs in;
    for (const auto& c : s.categorical) {
        in.table_rows.push_back(c.hash_buckets > 0 ? c.hash_buckets + 1 : 64);
        in.embed_dims.push_back(c.embed_dim);
    }
    in.n_numeric = int64_t(s.numeric.size());
    for (const auto& t : s.targets) {
        in.task_kinds.push_back(t.kind);
        in.task_weights.push_back(t.weight);
        in.task_names.push_back(t.name);
    }
    return in;
}

double percentile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

void bench_recipe(const std::string& path, int64_t requests, int64_t batch, bool json) {
    moe::io::Config cfg = moe::io::Config::from_file(path);
    const MultitaskTrainConfig tc = read_multitask_train_config(cfg);
    const MultitaskInputs in = inputs_of(tc.data.columns);
    MultitaskModel model(tc.model, in, batch);
    model.init_weights(1);
    const int64_t C = int64_t(in.table_rows.size()), F = in.n_numeric;
    moe::Rng rng(7);
    std::vector<int32_t> cats(size_t(batch * C));
    for (int64_t i = 0; i < batch; ++i)
        for (int64_t c = 0; c < C; ++c)
            cats[size_t(i * C + c)] = int32_t(rng.below(uint64_t(in.table_rows[size_t(c)])));
    const std::vector<float> nums = random_vec(size_t(batch * F), 3, 1.0f);

    // Single-row requests: each a different row of the batch.
    for (int64_t r = 0; r < 200; ++r)
        model.forward(cats.data() + (r % batch) * C, nums.data() + (r % batch) * F, nullptr, 1);
    std::vector<double> lat_us(static_cast<size_t>(requests));
    const int64_t allocs0 = g_allocations.load();
    for (int64_t r = 0; r < requests; ++r) {
        const int64_t row = r % batch;
        Timer t;
        model.forward(cats.data() + row * C, nums.data() + row * F, nullptr, 1);
        lat_us[size_t(r)] = t.seconds() * 1e6;
    }
    const double allocs = double(g_allocations.load() - allocs0) / double(requests);

    // Batches.
    const double load0 = load_avg();
    for (int w = 0; w < 3; ++w) model.forward(cats.data(), nums.data(), nullptr, batch);
    std::vector<double> batch_s;
    Linear gemm(batch, tc.model.d_model, tc.model.expert_hidden, 11);
    std::vector<double> gemm_gf;
    for (int s = 0; s < 30; ++s) {
        Timer t;
        model.forward(cats.data(), nums.data(), nullptr, batch);
        batch_s.push_back(t.seconds());
        Timer g;
        for (int k = 0; k < 20; ++k) gemm.run();
        gemm_gf.push_back(20 * gemm.flops() / g.seconds() * 1e-9);
    }
    const double t_med = median(batch_s);
    Out out;
    out.json = json;
    out.begin();
    out.add("bench", std::string("score"));
    out.add("config", path);
    out.add("arch", tc.model.arch);
    out.add("threads", moe::num_threads(), "%.0f");
    out.add("params", double(model.num_params()), "%.0f");
    out.add("latency_p50_us", percentile(lat_us, 0.5), "%.1f");
    out.add("latency_p99_us", percentile(lat_us, 0.99), "%.1f");
    out.add("requests", double(requests), "%.0f");
    out.add("allocs_per_request", allocs, "%.3g");
    out.add("batch", double(batch), "%.0f");
    out.add("rows_per_s", double(batch) / t_med, "%.0f");
    out.add("model_gflops", model.forward_flops_per_row() * double(batch) / t_med * 1e-9, "%.2f");
    out.add("gemm_gflops", median(gemm_gf), "%.1f");
    out.add("load_before", load0, "%.2f");
    out.add("load_after", load_avg(), "%.2f");
    out.end();
}

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--json] [--config RECIPE.json ...] [--requests N] [--batch B] "
                 "[--threads N]\n",
                 argv0);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    int64_t requests = 20000, batch = 256;
    int threads = 1;
    std::vector<std::string> configs;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--json")
            json = true;
        else if (a == "--config" && has_value)
            configs.push_back(argv[++i]);
        else if (a == "--requests" && has_value)
            requests = std::max(100, std::atoi(argv[++i]));
        else if (a == "--batch" && has_value)
            batch = std::max(1, std::atoi(argv[++i]));
        else if (a == "--threads" && has_value)
            threads = std::atoi(argv[++i]);
        else
            return usage(argv[0]);
    }
    if (configs.empty())
        for (const char* r : {"adult_mmoe", "adult_ple"})
            configs.push_back(std::string(MOE_SOURCE_DIR) + "/recipes/multitask/" + r + ".json");
    try {
        moe::set_num_threads(threads);
        for (const std::string& c : configs) bench_recipe(c, requests, batch, json);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "score: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
