// Evaluating an image classifier on a list of images: loss, accuracy, the confusion
// matrix, and which experts each class's tokens went to in every MoE layer. Used by the
// Trainer's validation pass (distributed over the ranks), `moe eval` and `moe inspect`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "vision/image_batches.h"
#include "vision/image_set.h"
#include "vision/vision_model.h"

namespace moe::vision {

struct ClassifierEval {
    int64_t images = 0;
    double loss = 0;      // mean cross-entropy
    double accuracy = 0;  // share of images whose top class is right
    int64_t n_classes = 0;
    std::vector<int64_t> confusion;  // [K, K]: row = true class, column = predicted
    // Per MoE layer (block index in moe_blocks): [K, E] tokens of class k's images routed
    // to expert e (each of a token's top-k choices counts once). Empty for a layer that
    // does not route tokens one by one (Soft MoE).
    std::vector<int64_t> moe_blocks;
    std::vector<std::vector<int64_t>> class_expert;
    double gate_accuracy = -1;  // assigned router: share of tokens whose domain the gate predicts

    double class_accuracy(int64_t k) const;  // NaN for a class with no images
};

struct EvalOptions {
    int64_t batch = 128;           // images per forward (at most the model's max batch)
    std::string domains = "none";  // data.domains: the assigned router's labels
    bool route_by_label = false;   // assigned router: route by the true domain (oracle gate)
    comm::Comm* group = nullptr;   // split the images over these ranks (null: one process)
};

// indices: [n] images of `set` (e.g. the validation split, or every test image).
ClassifierEval evaluate_classifier(VisionModel& model, const ImageSet& set,
                                   const std::vector<int64_t>& indices, const Normalization& norm,
                                   const EvalOptions& opt);

}  // namespace moe::vision
