#include "vision/vision_trainable.h"

#include <cmath>
#include <cstdio>

#include "core/profile.h"

namespace moe::vision {

VisionTrainable::VisionTrainable(VisionModel& model, const VisionData& data,
                                 const TrainBatches& batches, const std::string& domains,
                                 const train::TrainOptions& opt, comm::Comm& group)
    : model_(model),
      data_(data),
      batches_(batches),
      domains_mode_(domains),
      seed_(uint64_t(opt.seed)),
      group_(group),
      B_(opt.batch_size),
      Bl_(opt.batch_size / group.size()),
      rank_(group.rank()),
      ranks_(group.size()) {
    const auto& c = model.config();
    x_.resize(size_t(Bl_ * c.height * c.width * c.channels));
    labels_.resize(size_t(Bl_));
    domains_.resize(size_t(Bl_));
}

std::vector<train::RowShard> VisionTrainable::sharded_params() const {
    std::vector<train::RowShard> shards;
    for (const VisionShardedParam& p : model_.sharded_params())
        shards.push_back({p.name, p.global_rows, p.first_row});
    return shards;
}

double VisionTrainable::train_forward(int64_t step) {
    step_ = step;
    {
        MOE_PROFILE_SCOPE("batch");
        batches_.fill(step, rank_ * Bl_, Bl_, x_.data(), labels_.data());
    }
    VisionForwardOptions fo;
    if (domains_mode_ != "none") {
        for (int64_t i = 0; i < Bl_; ++i)
            domains_[size_t(i)] = domain_of_class(domains_mode_, labels_[size_t(i)]);
        fo.domains = domains_.data();
    }
    fo.training = true;
    fo.seed = seed_ * 0x9e3779b97f4a7c15ull + uint64_t(step);
    fo.first_image = rank_ * Bl_;
    fo.loss_share = 1.0 / double(ranks_);
    return model_.forward(x_.data(), labels_.data(), Bl_, fo);
}

void VisionTrainable::report_step(train::StepReport& report) const {
    char buf[160];
    const double epochs = batches_.epochs_done(step_);
    report.scalars = {{"epoch", epochs}};
    int moe_layers = 0;
    double imbalance = 0, acc = 0;
    int acc_layers = 0;
    // FNV-1a of every MoE layer's tokens per expert, as the language model logs it: two runs
    // that route a batch differently almost always differ here (scripts/distributed_check.py).
    uint64_t counts_hash = 1469598103934665603ull;
    for (int64_t l = 0; l < model_.config().n_layers; ++l) {
        const auto* m = model_.moe_layer(l);
        if (!m) continue;
        for (int64_t c : m->stats().tokens_per_expert)
            counts_hash = (counts_hash ^ uint64_t(c)) * 1099511628211ull;
        ++moe_layers;
        imbalance += m->stats().load_imbalance;
        if (m->stats().losses.assign_accuracy >= 0)
            acc += m->stats().losses.assign_accuracy, ++acc_layers;
    }
    if (moe_layers == 0) {
        std::snprintf(buf, sizeof buf, " | epoch %.2f", epochs);
        report.progress = buf;
        return;
    }
    imbalance /= moe_layers;
    char hash[24];
    std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)counts_hash);
    report.strings = {{"routing_hash", hash}};
    report.scalars.push_back({"router_loss", model_.router_loss()});
    report.scalars.push_back({"load_imbalance", imbalance});
    std::snprintf(buf, sizeof buf, " | epoch %.2f | router %.3f | load max/mean %.2f", epochs,
                  model_.router_loss(), imbalance);
    report.progress = buf;
    if (acc_layers > 0) {
        report.scalars.push_back({"gate_accuracy", acc / acc_layers});
        std::snprintf(buf, sizeof buf, " | gate %.3f", acc / acc_layers);
        report.progress += buf;
    }
}

train::EvalReport VisionTrainable::evaluate() {
    EvalOptions eo;
    eo.batch = Bl_;
    eo.domains = domains_mode_;
    eo.group = &group_;
    const ClassifierEval e =
        evaluate_classifier(model_, data_.train, data_.split.val, data_.norm, eo);
    train::EvalReport r;
    r.scalars = {{"loss", e.loss}, {"accuracy", e.accuracy}};
    char buf[128];
    std::snprintf(buf, sizeof buf, "validation loss %.4f | accuracy %.4f (%ld images)", e.loss,
                  e.accuracy, long(e.images));
    r.progress = buf;
    if (e.gate_accuracy >= 0) {
        r.scalars.push_back({"gate_accuracy", e.gate_accuracy});
        std::snprintf(buf, sizeof buf, " | gate accuracy %.3f", e.gate_accuracy);
        r.progress += buf;
    }
    return r;
}

}  // namespace moe::vision
