// PNG files through libpng: any PNG read as 8-bit gray or RGB, and 8-bit gray/RGB written.
//
// Reading converts whatever the file holds to what the model takes: palette and low bit
// depths are expanded, 16-bit samples scaled to 8, alpha (and tRNS transparency) dropped,
// colour turned to gray (libpng's default Rec. 709 weights, on the stored values) or gray
// replicated to RGB. libpng reports errors by longjmp; they come back as moe::Error naming
// the file, so a corrupt PNG is a message, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::vision {

struct Image {
    int64_t height = 0, width = 0, channels = 0;
    std::vector<uint8_t> pixels;  // [height, width, channels]
};

// `channels`: 1 (gray) or 3 (RGB), whatever the file's colour type.
Image read_png(const std::string& path, int64_t channels);

// Writes pixels [height, width, channels] (channels 1 = gray, 3 = RGB) as an 8-bit PNG.
// Throws moe::Error naming the file when it cannot be written.
void write_png(const std::string& path, int64_t height, int64_t width, int64_t channels,
               const uint8_t* pixels);

}  // namespace moe::vision
