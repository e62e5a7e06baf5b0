#include "lm/lm_trainable.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/profile.h"
#include "nn/loss.h"

namespace moe::lm {

RoutingSummary summarize_routing(const TransformerLM& model) {
    RoutingSummary r;
    double acc = 0;
    int acc_layers = 0;
    r.counts_hash = 1469598103934665603ull;
    for (int64_t l = 0; l < model.config().n_layers; ++l) {
        const auto* m = model.moe_layer(l);
        if (!m) continue;
        ++r.moe_layers;
        r.load_imbalance += m->stats().load_imbalance;
        r.dropped += m->stats().dropped_fraction;
        for (int64_t c : m->stats().tokens_per_expert)
            r.counts_hash = (r.counts_hash ^ uint64_t(c)) * 1099511628211ull;
        if (m->stats().losses.assign_accuracy >= 0)
            acc += m->stats().losses.assign_accuracy, ++acc_layers;
    }
    if (r.moe_layers > 0) r.load_imbalance /= r.moe_layers, r.dropped /= r.moe_layers;
    if (acc_layers > 0) r.assign_accuracy = acc / acc_layers;
    return r;
}

LmTrainable::LmTrainable(TransformerLM& model, const WindowSampler& train_windows,
                         const WindowSampler& val_windows, int64_t eval_windows,
                         const train::TrainOptions& opt, comm::Comm& group)
    : model_(model),
      train_windows_(train_windows),
      val_windows_(val_windows),
      eval_windows_(eval_windows),
      seed_(uint64_t(opt.seed)),
      group_(group),
      B_(opt.batch_size),
      T_(model.config().seq_len),
      Bl_(opt.batch_size / group.size()),
      rank_(group.rank()),
      ranks_(group.size()),
      inputs_(size_t(B_ * T_)),
      targets_(size_t(B_ * T_)),
      labels_(size_t(B_ * T_)),
      eval_targets_(size_t(Bl_ * T_)) {}

std::vector<train::RowShard> LmTrainable::sharded_params() const {
    std::vector<train::RowShard> shards;
    for (const ShardedParam& p : model_.sharded_params())
        shards.push_back({p.name, p.global_rows, p.first_row});
    return shards;
}

double LmTrainable::train_forward(int64_t step) {
    {
        MOE_PROFILE_SCOPE("batch");
        train_windows_.train_batch(step, B_, inputs_.data(), targets_.data(), labels_.data());
    }
    const size_t mine = size_t(rank_ * Bl_ * T_), n_mine = size_t(Bl_ * T_);
    ForwardOptions fo;
    fo.domains = labels_.data() + mine;
    fo.training = true;
    fo.seed = seed_ * 0x9e3779b97f4a7c15ull + uint64_t(step);
    fo.first_token = rank_ * Bl_ * T_;  // this rank's rows start at row rank*Bl of the batch
    // This rank's share of the batch's targets, so the ranks' losses add up.
    fo.loss_share = ranks_ == 1
                        ? 1.0
                        : double(nn::count_targets(targets_.data() + mine, int64_t(n_mine))) /
                              std::max(1.0, double(nn::count_targets(targets_.data(), B_ * T_)));
    return model_.forward(inputs_.data() + mine, targets_.data() + mine, Bl_, T_, fo);
}

void LmTrainable::report_step(train::StepReport& report) const {
    const RoutingSummary rs = summarize_routing(model_);
    if (rs.moe_layers == 0) return;
    report.scalars = {{"router_loss", model_.router_loss()},
                      {"load_imbalance", rs.load_imbalance},
                      {"dropped_fraction", rs.dropped}};
    char hash[24];
    std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)rs.counts_hash);
    report.strings = {{"routing_hash", hash}};
    char buf[96];
    std::snprintf(buf, sizeof buf, " | router %.3f | load max/mean %.2f%s", model_.router_loss(),
                  rs.load_imbalance,
                  rs.dropped > 0
                      ? (" | dropped " + std::to_string(int(rs.dropped * 100)) + "%").c_str()
                      : "");
    report.progress = buf;
}

// Validation in chunks of up to B windows; each rank takes up to B/R windows of a chunk.
// Every rank runs a forward for every chunk (expert parallelism needs all of them), a rank
// short of real windows repeats one with its targets masked (-1), and the mean is over the
// real targets of all ranks.
train::EvalReport LmTrainable::evaluate() {
    double sums[2] = {0, 0};  // [sum of cross-entropy, targets]
    const int64_t T = T_;
    for (int64_t done = 0; done < eval_windows_;) {
        const int64_t b = std::min(B_, eval_windows_ - done);
        val_windows_.eval_batch(done, b, eval_windows_, inputs_.data(), targets_.data(),
                                labels_.data());
        const int64_t per_rank = (b + ranks_ - 1) / ranks_;
        const int64_t first = std::min(rank_ * per_rank, b - 1);
        const int64_t real = std::clamp<int64_t>(b - rank_ * per_rank, 0, per_rank);
        int32_t* tg = targets_.data() + first * T;
        std::vector<int32_t>& masked = eval_targets_;
        std::copy(tg, tg + per_rank * T, masked.begin());
        std::fill(masked.begin() + real * T, masked.begin() + per_rank * T, -1);
        ForwardOptions fo;
        fo.domains = labels_.data() + first * T;
        const double mean =
            model_.forward(inputs_.data() + first * T, masked.data(), per_rank, T, fo);
        const double n = double(nn::count_targets(masked.data(), per_rank * T));
        sums[0] += mean * n;
        sums[1] += n;
        done += b;
    }
    group_.allreduce_sum(sums, 2);
    const double loss = sums[0] / std::max(1.0, sums[1]);
    const RoutingSummary rs = summarize_routing(model_);
    train::EvalReport r;
    r.scalars = {{"loss", loss}};
    char buf[128];
    std::snprintf(buf, sizeof buf, "validation loss %.4f | perplexity %.2f", loss, std::exp(loss));
    r.progress = buf;
    if (rs.assign_accuracy >= 0) {
        r.scalars.push_back({"gate_accuracy", rs.assign_accuracy});
        r.progress += " | gate accuracy " + std::to_string(rs.assign_accuracy).substr(0, 5);
    }
    return r;
}

}  // namespace moe::lm
