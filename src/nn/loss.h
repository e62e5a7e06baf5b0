// Losses: each returns the mean loss and has a backward scaled by d_loss (conventions:
// see linear.h).
#pragma once

#include <cstdint>

namespace moe::nn {

// Softmax cross-entropy. logits[N, V], targets[N] with a target of -1 meaning "ignore this
// row". Returns the mean over counted rows (0 if none). Saves probs[N, V] (may alias
// logits: then the logits are overwritten). A target outside [-1, V) is an error naming
// the row and the value.
template <class R>
double cross_entropy_forward(R* probs, const R* logits, const int32_t* targets, int64_t N,
                             int64_t V);
// Rows of targets[N] that cross-entropy counts (target != -1): its mean's denominator.
int64_t count_targets(const int32_t* targets, int64_t N);
// d_logits[N, V] += d_loss * (probs - onehot(target)) / count, zero on ignored rows.
template <class R>
void cross_entropy_backward(R* d_logits, const R* probs, const int32_t* targets, int64_t N,
                            int64_t V, R d_loss = R(1));

// Binary cross-entropy on logits z[N] with targets y[N] in [0, 1], computed stably:
// mean of max(z, 0) - z*y + log(1 + exp(-|z|)).
template <class R>
double bce_with_logits_forward(const R* logits, const R* targets, int64_t N);
// d_logits[N] += d_loss * (sigmoid(z) - y) / N.
template <class R>
void bce_with_logits_backward(R* d_logits, const R* logits, const R* targets, int64_t N,
                              R d_loss = R(1));

// Mean squared error over N values.
template <class R>
double mse_forward(const R* pred, const R* target, int64_t N);
// d_pred[N] += d_loss * 2 (pred - target) / N.
template <class R>
void mse_backward(R* d_pred, const R* pred, const R* target, int64_t N, R d_loss = R(1));

}  // namespace moe::nn
