// Bilinear resizing of 8-bit images to the size a model takes.
//
// Pixel centres are aligned the way PyTorch's interpolate(align_corners=False) and
// OpenCV's resize align them: output pixel y samples input row (y + 0.5) * h / H - 0.5,
// clamped to the image. A same-size resize is the identity and a constant image stays
// constant. Shrinking by more than 2x samples without averaging, so fine detail aliases;
// images meant for a 28x28 model should be made near that size.
#pragma once

#include <cstdint>

namespace moe::vision {

// src: [h, w, channels]; dst: [H, W, channels]. Rounds to the nearest 8-bit value.
void resize_bilinear(const uint8_t* src, int64_t h, int64_t w, int64_t channels, uint8_t* dst,
                     int64_t H, int64_t W);

}  // namespace moe::vision
