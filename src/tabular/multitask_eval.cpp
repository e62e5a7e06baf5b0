#include "tabular/multitask_eval.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "tabular/task_metrics.h"

namespace moe::tabular {

namespace {

// Runs the model over all rows in batches; calls per_batch(first_row, count) after each
// forward.
template <class F>
void for_each_batch(MultitaskModel& model, const EncodedRows& rows, int64_t batch,
                    bool with_targets, F&& per_batch) {
    const int64_t C = int64_t(model.inputs().table_rows.size());
    const int64_t Fn = model.inputs().n_numeric;
    const int64_t K = int64_t(model.inputs().task_kinds.size());
    MOE_REQUIRE(batch >= 1, "evaluate_multitask: batch must be >= 1, got ", batch);
    for (int64_t r0 = 0; r0 < rows.n; r0 += batch) {
        const int64_t b = std::min(batch, rows.n - r0);
        model.forward(rows.cats.data() + r0 * C, rows.nums.data() + r0 * Fn,
                      with_targets ? rows.targets.data() + r0 * K : nullptr, b);
        per_batch(r0, b);
    }
}

}  // namespace

MultitaskEval evaluate_multitask(MultitaskModel& model, const EncodedRows& rows, int64_t batch,
                                 std::vector<float>* predictions) {
    const MultitaskInputs& in = model.inputs();
    const int64_t K = int64_t(in.task_kinds.size());
    MOE_REQUIRE(rows.n >= 1, "evaluate_multitask: no rows");
    MOE_REQUIRE(int64_t(rows.targets.size()) == rows.n * K,
                "evaluate_multitask: the rows have no targets (", rows.targets.size(),
                " values for ", rows.n, " rows of ", K, " tasks)");
    std::vector<float> preds(size_t(rows.n * K));
    std::vector<double> loss_sum(size_t(K), 0.0);
    const std::vector<GateInfo> gates = model.gates();
    MultitaskEval e;
    e.rows = rows.n;
    e.gate_means.resize(gates.size());
    for (size_t g = 0; g < gates.size(); ++g) e.gate_means[g].assign(gates[g].experts.size(), 0.0);

    for_each_batch(model, rows, batch, true, [&](int64_t r0, int64_t b) {
        std::copy(model.predictions(), model.predictions() + b * K, preds.begin() + r0 * K);
        for (int64_t k = 0; k < K; ++k)
            loss_sum[size_t(k)] += model.task_losses()[size_t(k)] * double(b);
        for (size_t g = 0; g < gates.size(); ++g) {
            const float* w = model.gate_weights(int64_t(g));  // [b, width]
            const size_t width = gates[g].experts.size();
            for (int64_t t = 0; t < b; ++t)
                for (size_t j = 0; j < width; ++j) e.gate_means[g][j] += w[size_t(t) * width + j];
        }
    });
    for (auto& means : e.gate_means)
        for (double& v : means) v /= double(rows.n);
    for (int64_t k = 0; k < K; ++k) {
        TaskMetrics t;
        t.name = in.task_names[size_t(k)];
        t.kind = in.task_kinds[size_t(k)];
        t.loss = loss_sum[size_t(k)] / double(rows.n);
        const float* p = preds.data() + k;
        const float* y = rows.targets.data() + k;
        if (t.kind == TargetKind::binary) {
            t.auc = auc(p, y, rows.n, K);
            double pos = 0;
            for (int64_t i = 0; i < rows.n; ++i) pos += y[i * K];
            t.positive_rate = pos / double(rows.n);
        } else {
            t.mse = mse(p, y, rows.n, K);
            t.rmse = std::sqrt(t.mse);
        }
        e.loss += in.task_weights[size_t(k)] * t.loss;
        e.tasks.push_back(t);
    }
    if (predictions) *predictions = std::move(preds);
    return e;
}

void predict_multitask(MultitaskModel& model, const EncodedRows& rows, int64_t batch,
                       std::vector<float>& out) {
    const int64_t K = int64_t(model.inputs().task_kinds.size());
    out.resize(size_t(rows.n * K));
    for_each_batch(model, rows, batch, false, [&](int64_t r0, int64_t b) {
        std::copy(model.predictions(), model.predictions() + b * K, out.begin() + r0 * K);
    });
}

std::string describe_metrics(const MultitaskEval& e) {
    std::string s;
    char buf[160];
    for (const TaskMetrics& t : e.tasks) {
        if (t.kind == TargetKind::binary)
            std::snprintf(buf, sizeof buf, "%s%s auc %.4f", s.empty() ? "" : " | ", t.name.c_str(),
                          t.auc);
        else
            std::snprintf(buf, sizeof buf, "%s%s rmse %.4f", s.empty() ? "" : " | ", t.name.c_str(),
                          t.rmse);
        s += buf;
    }
    return s;
}

}  // namespace moe::tabular
