#include "vision/png_image.h"

#include <png.h>
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>

#include "core/check.h"
#include "io/input_file.h"

namespace moe::vision {

namespace {

// A whole-image limit well above any training image, so a corrupt header asking for
// 1,000,000 x 1,000,000 pixels (libpng's own per-side limit) is refused before allocating.
constexpr uint64_t kMaxPngBytes = uint64_t(1) << 30;

// libpng's error callback may not return: it records the message and longjmps back to the
// setjmp in decode()/encode(). Only C frames (libpng's) and this callback lie between, so
// no C++ destructor is skipped.
struct ErrorState {
    char message[256] = "";
};

void on_error(png_structp png, png_const_charp msg) {
    auto* st = static_cast<ErrorState*>(png_get_error_ptr(png));
    std::snprintf(st->message, sizeof(st->message), "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

// Warnings (an odd iCCP profile, a bad CRC in an ancillary chunk) do not stop reading, and
// a data loader printing one line per image would drown the progress output.
void on_warning(png_structp, png_const_charp) {}

void set_error(ErrorState* st, const char* msg) {
    std::snprintf(st->message, sizeof(st->message), "%s", msg);
}

// Decodes the rest of `f` (its 8 signature bytes already read) into *img. Returns false
// with st->message set on any libpng error. Nothing with a destructor is created between
// the setjmp and a longjmp back to it.
bool decode(FILE* f, int channels, Image* img, ErrorState* st) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st, on_error, on_warning);
    if (!png) return set_error(st, "out of memory"), false;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, nullptr, nullptr);
        return set_error(st, "out of memory"), false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    const int color = png_get_color_type(png, info);
    const int depth = png_get_bit_depth(png, info);
    const bool is_color = (color & PNG_COLOR_MASK_COLOR) != 0;  // palette images included
    png_set_expand(png);  // palette -> RGB, gray 1/2/4 bits -> 8, tRNS -> alpha
    if (depth == 16) png_set_scale_16(png);
    png_set_strip_alpha(png);
    if (channels == 1 && is_color) png_set_rgb_to_gray(png, PNG_ERROR_ACTION_NONE, -1, -1);
    if (channels == 3 && !is_color) png_set_gray_to_rgb(png);
    const int passes = png_set_interlace_handling(png);
    (void)passes;
    png_read_update_info(png, info);

    const png_uint_32 width = png_get_image_width(png, info);
    const png_uint_32 height = png_get_image_height(png, info);
    if (png_get_channels(png, info) != channels || png_get_bit_depth(png, info) != 8) {
        std::snprintf(st->message, sizeof(st->message),
                      "conversion to %d channel(s) of 8 bits gave %d channel(s) of %d bits",
                      channels, int(png_get_channels(png, info)),
                      int(png_get_bit_depth(png, info)));
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    const size_t row_bytes = png_get_rowbytes(png, info);
    if (row_bytes != size_t(width) * size_t(channels) ||
        uint64_t(row_bytes) * height > kMaxPngBytes) {
        std::snprintf(st->message, sizeof(st->message),
                      "%u x %u pixels are over the limit of %llu bytes", unsigned(width),
                      unsigned(height), (unsigned long long)kMaxPngBytes);
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    // Allocations here may throw bad_alloc: catch it, so libpng's structures are freed.
    try {
        img->pixels.resize(row_bytes * height);
    } catch (const std::bad_alloc&) {
        png_destroy_read_struct(&png, &info, nullptr);
        return set_error(st, "out of memory"), false;
    }
    img->height = height;
    img->width = width;
    img->channels = channels;
    // png_read_image wants an array of row pointers; reading row by row, once per pass,
    // does the same without one (interlaced images need every pass).
    for (int p = 0; p < passes; ++p)
        for (png_uint_32 y = 0; y < height; ++y)
            png_read_row(png, img->pixels.data() + size_t(y) * row_bytes, nullptr);
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
}

bool encode(FILE* f, int64_t height, int64_t width, int64_t channels, const uint8_t* pixels,
            ErrorState* st) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, st, on_error, on_warning);
    if (!png) return set_error(st, "out of memory"), false;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, nullptr);
        return set_error(st, "out of memory"), false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int64_t y = 0; y < height; ++y)
        png_write_row(png, const_cast<uint8_t*>(pixels) + y * width * channels);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    return true;
}

}  // namespace

Image read_png(const std::string& path, int64_t channels) {
    MOE_CHECK(channels == 1 || channels == 3, "read_png: channels = ", channels,
              ", expected 1 (gray) or 3 (RGB)");
    const int fd = io::open_regular_file(path, "PNG file", nullptr);
    FILE* f = ::fdopen(fd, "rb");
    if (!f) {
        const int err = errno;
        ::close(fd);
        MOE_FAIL(path, ": cannot read PNG file: ", std::strerror(err));
    }
    unsigned char sig[8];
    const size_t got = std::fread(sig, 1, 8, f);
    if (got != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        std::fclose(f);
        MOE_FAIL(path, ": not a PNG file (",
                 got < 8 ? "shorter than the 8-byte signature"
                         : "its first 8 bytes are not the PNG signature",
                 ")");
    }
    Image img;
    ErrorState st;
    const bool ok = decode(f, int(channels), &img, &st);
    std::fclose(f);
    // libpng says only "Read Error" when the file ends early.
    const bool cut = std::strcmp(st.message, "Read Error") == 0;
    MOE_REQUIRE(ok, path, ": corrupt or unreadable PNG: ", st.message,
                cut ? " (the file ends before the image does: truncated?)" : "");
    return img;
}

void write_png(const std::string& path, int64_t height, int64_t width, int64_t channels,
               const uint8_t* pixels) {
    MOE_CHECK(channels == 1 || channels == 3, "write_png: channels = ", channels,
              ", expected 1 (gray) or 3 (RGB)");
    MOE_CHECK(height > 0 && width > 0 && height <= PNG_UINT_31_MAX && width <= PNG_UINT_31_MAX,
              "write_png: ", height, " x ", width, " pixels");
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) MOE_FAIL(path, ": cannot write PNG file: ", std::strerror(errno));
    ErrorState st;
    const bool ok = encode(f, height, width, channels, pixels, &st);
    const bool flushed = std::fflush(f) == 0;
    const int err = errno;
    const bool closed = std::fclose(f) == 0;
    MOE_REQUIRE(ok, path, ": cannot write PNG file: ", st.message);
    MOE_REQUIRE(flushed && closed, path, ": cannot write PNG file: ", std::strerror(err));
}

}  // namespace moe::vision
