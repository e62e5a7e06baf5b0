#include "vision/vision_data.h"

#include "core/check.h"
#include "vision/idx_file.h"
#include "vision/png_folder.h"

namespace moe::vision {

namespace {

void check_fits(const ImageSet& s, const VisionModelConfig& m, const std::string& where) {
    MOE_REQUIRE(s.height == m.height && s.width == m.width && s.channels == m.channels, where,
                ": images are ", s.height, "x", s.width, "x", s.channels,
                " (height x width x channels) but the model takes ", m.height, "x", m.width, "x",
                m.channels, " (model.height, model.width, model.channels)");
    MOE_REQUIRE(int64_t(s.class_names.size()) == m.n_classes, where, ": ", s.class_names.size(),
                " classes but model.n_classes = ", m.n_classes);
}

}  // namespace

VisionData load_vision_data(const VisionTrainConfig& cfg) {
    const VisionDataOptions& d = cfg.data;
    VisionData v;
    if (d.dataset == "fashion_mnist") {
        v.source = d.path.empty() ? kFashionMnistDir : d.path;
        v.train = read_fashion_mnist(v.source, /*test_set=*/false);
    } else {
        v.source = d.path;
        v.train = read_png_folder(d.path, cfg.model.height, cfg.model.width, cfg.model.channels);
    }
    check_fits(v.train, cfg.model, v.source);
    MOE_REQUIRE(d.val_count < v.train.count, v.source, ": data.val_count = ", d.val_count,
                " leaves no training images (the set has ", v.train.count, ")");
    v.split = split_train_val(v.train.count, d.val_count, uint64_t(cfg.train.seed));
    v.norm = compute_normalization(v.train, v.split.train);
    return v;
}

ImageSet load_test_set(const VisionTrainConfig& cfg) {
    const VisionDataOptions& d = cfg.data;
    ImageSet s;
    std::string where;
    if (d.dataset == "fashion_mnist") {
        where = d.path.empty() ? kFashionMnistDir : d.path;
        s = read_fashion_mnist(where, /*test_set=*/true);
    } else {
        MOE_REQUIRE(!d.test_path.empty(),
                    "the run's config has no data.test_path: no test images to evaluate on "
                    "(pass --data FOLDER)");
        where = d.test_path;
        s = read_png_folder(d.test_path, cfg.model.height, cfg.model.width, cfg.model.channels);
    }
    check_fits(s, cfg.model, where);
    return s;
}

int32_t domain_of_class(const std::string& mode, int32_t c) {
    if (mode == "class_groups") {
        MOE_CHECK(c >= 0 && c < 10, "class ", c, " is not a Fashion-MNIST class");
        return kFashionGroupOfClass[c];
    }
    if (mode == "classes") return c;
    return -1;
}

std::vector<std::string> domain_names(const std::string& mode,
                                      const std::vector<std::string>& class_names) {
    if (mode == "class_groups")
        return {std::begin(kFashionGroupNames), std::end(kFashionGroupNames)};
    if (mode == "classes") return class_names;
    return {};
}

}  // namespace moe::vision
