// The images of a vision run: the training file split into training and validation images,
// the normalisation measured on the training images, and the test set (read only by
// `moe eval`). Which images these are follows from the config and the seed alone, so a
// resumed run, every rank of a distributed one and `moe eval` all see the same split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vision/image_batches.h"
#include "vision/image_set.h"
#include "vision/vision_config.h"

namespace moe::vision {

struct VisionData {
    ImageSet train;  // the training file; split.train and split.val index into it
    Split split;
    Normalization norm;
    std::string source;  // where the images came from, for messages
};

// Reads the training images as cfg.data says and checks they fit the model (size,
// channels, classes). Errors name the file or folder and the mismatch.
VisionData load_vision_data(const VisionTrainConfig& cfg);
// The test images (Fashion-MNIST's t10k files, or data.test_path for a PNG folder).
ImageSet load_test_set(const VisionTrainConfig& cfg);

// Domain of class c for assigned routing under data.domains ("class_groups": Fashion-MNIST's
// four groups, "classes": c itself); -1 for "none". Names: one per domain.
int32_t domain_of_class(const std::string& mode, int32_t c);
std::vector<std::string> domain_names(const std::string& mode,
                                      const std::vector<std::string>& class_names);

// The default Fashion-MNIST folder (Debian's dataset-fashion-mnist).
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

}  // namespace moe::vision
