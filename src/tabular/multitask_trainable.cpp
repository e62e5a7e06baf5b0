#include "tabular/multitask_trainable.h"

#include <algorithm>
#include <cstdio>

#include "core/profile.h"
#include "tabular/multitask_eval.h"

namespace moe::tabular {

MultitaskTrainable::MultitaskTrainable(MultitaskModel& model, const EncodedRows& train,
                                       const EncodedRows& val, const RowBatches& batches,
                                       const train::TrainOptions& opt, comm::Comm& group)
    : model_(model),
      train_(train),
      val_(val),
      batches_(batches),
      B_(opt.batch_size),
      Bl_(opt.batch_size / group.size()),
      rank_(group.rank()),
      ranks_(group.size()) {
    const MultitaskInputs& in = model.inputs();
    rows_.resize(size_t(Bl_));
    cats_.resize(size_t(Bl_) * in.table_rows.size());
    nums_.resize(size_t(Bl_ * in.n_numeric));
    targets_.resize(size_t(Bl_) * in.task_kinds.size());
}

double MultitaskTrainable::train_forward(int64_t step) {
    step_ = step;
    const MultitaskInputs& in = model_.inputs();
    const size_t C = in.table_rows.size(), F = size_t(in.n_numeric), K = in.task_kinds.size();
    {
        MOE_PROFILE_SCOPE("batch");
        batches_.rows_of(step, rank_ * Bl_, Bl_, rows_.data());
        for (int64_t i = 0; i < Bl_; ++i) {
            const size_t r = size_t(rows_[size_t(i)]), b = size_t(i);
            std::copy_n(train_.cats.begin() + r * C, C, cats_.begin() + b * C);
            std::copy_n(train_.nums.begin() + r * F, F, nums_.begin() + b * F);
            std::copy_n(train_.targets.begin() + r * K, K, targets_.begin() + b * K);
        }
    }
    MultitaskForwardOptions fo;
    fo.loss_share = 1.0 / double(ranks_);
    return model_.forward(cats_.data(), nums_.data(), targets_.data(), Bl_, fo);
}

void MultitaskTrainable::report_step(train::StepReport& report) const {
    const MultitaskInputs& in = model_.inputs();
    const double epochs = batches_.epochs_done(step_);
    report.scalars = {{"epoch", epochs}};
    char buf[160];
    for (size_t k = 0; k < in.task_names.size(); ++k) {
        const double l = model_.task_losses()[k];
        report.scalars.push_back({"loss_" + in.task_names[k], l});
        std::snprintf(buf, sizeof buf, " | %s %.4f", in.task_names[k].c_str(), l);
        report.progress += buf;
    }
    std::snprintf(buf, sizeof buf, " | epoch %.2f", epochs);
    report.progress += buf;
}

train::EvalReport MultitaskTrainable::evaluate() {
    const MultitaskEval e = evaluate_multitask(model_, val_, Bl_);
    train::EvalReport r;
    r.scalars = {{"loss", e.loss}};
    for (const TaskMetrics& t : e.tasks) {
        r.scalars.push_back({"loss_" + t.name, t.loss});
        if (t.kind == TargetKind::binary)
            r.scalars.push_back({"auc_" + t.name, t.auc});
        else
            r.scalars.push_back({"rmse_" + t.name, t.rmse});
    }
    char buf[96];
    std::snprintf(buf, sizeof buf, "validation loss %.4f | ", e.loss);
    r.progress = buf + describe_metrics(e) + " (" + std::to_string(e.rows) + " rows)";
    return r;
}

}  // namespace moe::tabular
