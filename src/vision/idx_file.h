// IDX files: the format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//
// Layout: magic 0x00 0x00 TYPE NDIMS, then NDIMS big-endian uint32 dimensions, then the
// data, row-major. Only TYPE 0x08 (unsigned byte) is read: it is what every MNIST-style
// file holds. Every header field is checked, and the data length must equal the product of
// the dimensions exactly: a short file is truncated, a long one has trailing data, and both
// are errors naming the file and the two byte counts, never a silently wrong data set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vision/image_set.h"

namespace moe::vision {

struct IdxFile {
    std::vector<int64_t> dims;  // 1 to 4 dimensions, each > 0
    std::vector<uint8_t> data;  // [product of dims], row-major
    bool gzip = false;          // whether the file was gzip-compressed
};

// Reads `path`, gzip-compressed (detected by its magic 1f 8b, not by the name) or plain.
// Throws moe::Error naming the file for a missing or unreadable file, a bad header, a
// corrupt gzip stream, or a data length that disagrees with the dimensions.
IdxFile read_idx(const std::string& path);

// An images file [count, height, width] and a labels file [count] (one channel). Checks
// that the images file is 3-D, the labels file 1-D, their counts agree, and every label is
// in [0, n_classes). class_names are "0" .. "n_classes - 1".
ImageSet read_idx_images(const std::string& images_path, const std::string& labels_path,
                         int64_t n_classes);

// Fashion-MNIST from `dir` (Debian's dataset-fashion-mnist installs it under
// /usr/share/datasets/fashion-mnist): train-{images-idx3,labels-idx1}-ubyte or t10k-* for
// the test set, each name with or without ".gz" (the compressed one is used when both
// exist). class_names are the 10 Fashion-MNIST classes.
ImageSet read_fashion_mnist(const std::string& dir, bool test_set);

// "T-shirt/top", "Trouser", ..., "Ankle boot": label i's name.
const std::vector<std::string>& fashion_mnist_class_names();

}  // namespace moe::vision
