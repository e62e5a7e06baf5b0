// An image classification data set as a folder of PNG files, one subfolder per class:
//
//   dir/cat/001.png  dir/cat/002.png  dir/dog/a.png ...
//
// the layout of torchvision's ImageFolder. Classes are the subfolder names in sorted
// (byte) order, so label i means the same class on every machine; files within a class are
// read in sorted order, so the set, and every split and batch drawn from it, is
// deterministic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vision/image_set.h"

namespace moe::vision {

// Every *.png (any case of the extension) in the class subfolders of `dir`, converted to
// `channels` (1 or 3) and resized bilinearly to height x width.
//
// Files that are not PNGs by name (a README, a .jpg, a stray file beside the class
// folders, a nested folder, hidden entries) are skipped, not errors: their paths are
// returned in *skipped when it is not null, for the caller to report (this library prints
// nothing). A file named *.png that does not decode is an error naming it. Errors also for
// a missing `dir`, one with no class subfolders, and a class subfolder with no PNG.
ImageSet read_png_folder(const std::string& dir, int64_t height, int64_t width, int64_t channels,
                         std::vector<std::string>* skipped = nullptr);

}  // namespace moe::vision
