// ImageSet: a labelled set of 8-bit images held in memory, as the readers (IDX, PNG folders)
// return it and the batchers (image_batches.h) consume it.
//
// Pixels stay uint8 (a quarter of f32's memory: 47 MB for Fashion-MNIST's training set);
// they become normalised floats only in the batch being filled.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::vision {

struct ImageSet {
    int64_t count = 0, height = 0, width = 0, channels = 1;
    std::vector<uint8_t> pixels;  // [count, height, width, channels]
    std::vector<int32_t> labels;  // [count], each in [0, class_names.size())
    std::vector<std::string> class_names;

    int64_t image_size() const { return height * width * channels; }
    const uint8_t* image(int64_t i) const { return pixels.data() + i * image_size(); }
};

}  // namespace moe::vision
