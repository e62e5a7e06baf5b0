#include "vision/png_folder.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "vision/image_resize.h"
#include "vision/png_image.h"

namespace moe::vision {

namespace fs = std::filesystem;

namespace {

bool is_png_name(const fs::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    return ext == ".png";
}

bool hidden(const fs::path& p) {
    const std::string name = p.filename().string();
    return !name.empty() && name[0] == '.';
}

// The entries of `dir`, sorted by name, so the order does not depend on the file system.
std::vector<fs::directory_entry> sorted_entries(const fs::path& dir) {
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) MOE_FAIL(dir.string(), ": cannot list image folder: ", ec.message());
    std::vector<fs::directory_entry> out;
    for (const fs::directory_entry& e : it) out.push_back(e);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return a.path().filename() < b.path().filename();
    });
    return out;
}

}  // namespace

ImageSet read_png_folder(const std::string& dir, int64_t height, int64_t width, int64_t channels,
                         std::vector<std::string>* skipped) {
    MOE_CHECK(height > 0 && width > 0 && (channels == 1 || channels == 3), "read_png_folder: size ",
              height, " x ", width, " x ", channels);
    std::error_code ec;
    MOE_REQUIRE(fs::exists(dir, ec), dir, ": image folder does not exist");
    MOE_REQUIRE(fs::is_directory(dir, ec), dir, ": image folder is not a directory");
    if (skipped) skipped->clear();
    auto skip = [&](const fs::path& p) {
        if (skipped) skipped->push_back(p.string());
    };

    const std::vector<fs::directory_entry> top = sorted_entries(dir);
    MOE_REQUIRE(!top.empty(), dir, ": image folder is empty; expected one subfolder per class, ",
                "each holding that class's .png files");
    std::vector<fs::path> classes;
    for (const fs::directory_entry& e : top) {
        if (!hidden(e.path()) && e.is_directory(ec))
            classes.push_back(e.path());
        else
            skip(e.path());
    }
    MOE_REQUIRE(!classes.empty(), dir, ": image folder has no class subfolders, only ", top.size(),
                top.size() == 1 ? " other entry" : " other entries",
                "; expected one subfolder per class, each holding that class's ", ".png files");

    ImageSet set;
    set.height = height;
    set.width = width;
    set.channels = channels;
    const int64_t image_bytes = height * width * channels;
    for (size_t c = 0; c < classes.size(); ++c) {
        set.class_names.push_back(classes[c].filename().string());
        int64_t found = 0;
        for (const fs::directory_entry& e : sorted_entries(classes[c])) {
            if (hidden(e.path()) || !is_png_name(e.path()) || e.is_directory(ec)) {
                skip(e.path());
                continue;
            }
            const Image img = read_png(e.path().string(), channels);
            set.pixels.resize(size_t((set.count + 1) * image_bytes));
            uint8_t* dst = set.pixels.data() + set.count * image_bytes;
            if (img.height == height && img.width == width)
                std::memcpy(dst, img.pixels.data(), size_t(image_bytes));
            else
                resize_bilinear(img.pixels.data(), img.height, img.width, channels, dst, height,
                                width);
            set.labels.push_back(int32_t(c));
            ++set.count;
            ++found;
        }
        MOE_REQUIRE(found > 0, classes[c].string(), ": class folder \"", set.class_names.back(),
                    "\" holds no .png file");
    }
    return set;
}

}  // namespace moe::vision
