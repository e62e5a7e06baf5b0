// Evaluation of a multi-task model on a table of encoded rows: each task's loss and metric
// (binary: AUC and log loss; regression: MSE and RMSE), the weighted total, and the mean
// weight each gate gave each expert (what `moe inspect` draws).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tabular/multitask_model.h"
#include "tabular/tabular_table.h"

namespace moe::tabular {

struct TaskMetrics {
    std::string name;
    TargetKind kind = TargetKind::binary;
    double loss = 0;           // the training loss of the task: BCE or MSE, mean over rows
    double auc = 0;            // binary
    double mse = 0, rmse = 0;  // regression
    double positive_rate = 0;  // binary: share of rows with target 1
};

struct MultitaskEval {
    int64_t rows = 0;
    double loss = 0;  // sum over tasks of weight * loss
    std::vector<TaskMetrics> tasks;
    std::vector<std::vector<double>> gate_means;  // [gate][expert] mean weight over rows
};

// rows must hold targets. batch: rows per forward (<= the model's max_batch).
// predictions (optional): filled with [rows.n, K] predictions.
MultitaskEval evaluate_multitask(MultitaskModel& model, const EncodedRows& rows, int64_t batch,
                                 std::vector<float>* predictions = nullptr);

// Predictions only (rows without targets): [rows.n, K] into `out`.
void predict_multitask(MultitaskModel& model, const EncodedRows& rows, int64_t batch,
                       std::vector<float>& out);

// "income_50k auc 0.9051 | rating rmse 0.912": each task's headline metric.
std::string describe_metrics(const MultitaskEval& e);

}  // namespace moe::tabular
