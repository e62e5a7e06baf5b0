// The vision data readers: IDX files (round trips plain and gzip, every malformed header and
// length), the real Fashion-MNIST files when installed, PNG reading in every colour type
// and depth we convert, resizing, class-per-folder PNG sets. What becomes of the images
// afterwards (split, normalisation, augmentation, batches) is tests/test_vision_batches.cpp.
#include <png.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "test_support.h"
#include "vision/idx_file.h"
#include "vision/image_batches.h"
#include "vision/image_resize.h"
#include "vision/png_folder.h"
#include "vision/png_image.h"

namespace moe::vision {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

class VisionData : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_vision_" + std::to_string(::getpid()) + "_" + info->name());
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    fs::path dir_;
};

// ---------------------------------------------------------------------------------------
// IDX files written by the test.

// magic 0 0 type ndims, big-endian dims, data.
Bytes idx_bytes(const std::vector<uint32_t>& dims, const Bytes& data, uint8_t type = 0x08) {
    Bytes b = {0, 0, type, uint8_t(dims.size())};
    for (uint32_t d : dims)
        for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

Bytes iota_bytes(size_t n, uint8_t start = 0) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = uint8_t(start + i * 7);
    return b;
}

void write_file(const std::string& path, const Bytes& bytes, bool gzip) {
    if (gzip) {
        gzFile f = gzopen(path.c_str(), "wb");
        ASSERT_NE(f, nullptr);
        if (!bytes.empty()) {
            ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
        }
        ASSERT_EQ(gzclose(f), Z_OK);
    } else {
        std::ofstream(path, std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    }
}

Bytes read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_F(VisionData, IdxRoundTripPlainAndGzip) {
    for (bool gz : {false, true}) {
        SCOPED_TRACE(gz ? "gzip" : "plain");
        const Bytes data = iota_bytes(3 * 2 * 4);
        const std::string p = path(gz ? "a.idx.gz" : "a.idx");
        write_file(p, idx_bytes({3, 2, 4}, data), gz);
        const IdxFile f = read_idx(p);
        EXPECT_EQ(f.dims, (std::vector<int64_t>{3, 2, 4}));
        EXPECT_EQ(f.data, data);
        EXPECT_EQ(f.gzip, gz);

        // 1-D and 4-D, the extremes of ndims.
        write_file(p, idx_bytes({5}, iota_bytes(5, 3)), gz);
        EXPECT_EQ(read_idx(p).data, iota_bytes(5, 3));
        write_file(p, idx_bytes({1, 2, 3, 2}, iota_bytes(12)), gz);
        EXPECT_EQ(read_idx(p).dims, (std::vector<int64_t>{1, 2, 3, 2}));
    }
    // A file larger than the reader's 16 MiB chunk and its 64 KiB tail buffer.
    const Bytes big = iota_bytes(size_t(17) << 20);
    write_file(path("big.gz"), idx_bytes({17, 1024, 1024}, big), true);
    EXPECT_EQ(read_idx(path("big.gz")).data, big);
}

TEST_F(VisionData, IdxLengthErrorsNameFileAndBothCounts) {
    for (bool gz : {false, true}) {
        SCOPED_TRACE(gz ? "gzip" : "plain");
        const std::string p = path("bad.idx");
        // dims 2 x 3 x 4 = 24 data bytes after a 16-byte header.
        write_file(p, idx_bytes({2, 3, 4}, iota_bytes(23)), gz);
        EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); },
                                            {p, "truncated IDX file", "[2, 3, 4]", "need 24 bytes",
                                             "40 with the header", "holds 23 (39)"}));
        write_file(p, idx_bytes({2, 3, 4}, iota_bytes(29)), gz);
        EXPECT_TRUE(test::throws_error_with(
            [&] { read_idx(p); },
            {p, "trailing data", "need 24 bytes", "holds 29 (45)", "5 too many"}));
        // A header cut inside the dims.
        Bytes cut = idx_bytes({2, 3, 4}, {});
        cut.resize(10);
        write_file(p, cut, gz);
        EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); },
                                            {p, "truncated IDX header", "10 bytes", "is 16"}));
        write_file(p, {0, 0}, gz);
        EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "truncated IDX header"}));
    }
}

TEST_F(VisionData, IdxHeaderErrors) {
    const std::string p = path("bad.idx");
    Bytes b = idx_bytes({2, 2}, iota_bytes(4));
    b[0] = 0x01;
    write_file(p, b, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "not an IDX file", "0x01 0x00"}));
    b[0] = 0;
    b[1] = 0x20;
    write_file(p, b, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "not an IDX file", "0x00 0x20"}));

    write_file(p, idx_bytes({2, 2}, iota_bytes(16), 0x0D), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); },
                                        {p, "type 0x0d", "(float) is not supported", "0x08"}));
    write_file(p, idx_bytes({2, 2}, iota_bytes(4), 0x07), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "0x07", "not a known IDX type"}));

    write_file(p, idx_bytes({}, {}), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "ndims = 0", "1 to 4"}));
    write_file(p, idx_bytes({1, 1, 1, 1, 1}, {7}), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "ndims = 5", "1 to 4"}));

    write_file(p, idx_bytes({3, 0, 2}, {}), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "dimension 1 is 0"}));

    // A header asking for 2^32 * 2^32 bytes: refused before any allocation.
    write_file(p, idx_bytes({0xffffffffu, 0xffffffffu}, {1, 2, 3}), false);
    EXPECT_TRUE(test::throws_error_with(
        [&] { read_idx(p); },
        {p, "[4294967295, 4294967295]", "more data than the limit of 17179869184 bytes"}));

    // A header promising 4 GiB in a file of a few bytes: a truncation, found without
    // allocating the 4 GiB.
    write_file(p, idx_bytes({0xffffffffu}, {1, 2, 3}), true);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); },
                                        {p, "truncated", "need 4294967295 bytes", "holds 3"}));
}

TEST_F(VisionData, IdxCorruptGzipAndMissingFile) {
    const std::string p = path("c.idx.gz");
    Bytes data(4000);
    Rng rng(7);
    for (auto& v : data) v = uint8_t(rng.below(256));
    write_file(p, idx_bytes({4000}, data), true);
    Bytes gz = read_bytes(p);
    ASSERT_GT(gz.size(), 100u);

    // Flipped bits inside the deflate data: an inflate error or, at the latest, the CRC.
    Bytes flipped = gz;
    for (size_t i = 40; i < 60; ++i) flipped[i] ^= 0x5a;
    write_file(p, flipped, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); }, {p, "corrupt gzip stream"}));

    // Cut in the middle of the stream.
    Bytes cut(gz.begin(), gz.begin() + long(gz.size() / 2));
    write_file(p, cut, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(p); },
                                        {p, "corrupt gzip stream", "unexpected end of file"}));

    // Only the gzip magic.
    write_file(p, {0x1f, 0x8b, 0x08}, false);
    EXPECT_NE(test::error_of([&] { read_idx(p); }).find(p), std::string::npos);

    EXPECT_TRUE(test::throws_error_with([&] { read_idx(path("missing.gz")); },
                                        {"missing.gz", "cannot open IDX file", "No such file"}));
    EXPECT_TRUE(test::throws_error_with([&] { read_idx(dir_.string()); }, {"a directory"}));
}

TEST_F(VisionData, IdxImagesAndLabels) {
    const std::string im = path("im"), lb = path("lb");
    write_file(im, idx_bytes({3, 2, 2}, iota_bytes(12)), false);
    write_file(lb, idx_bytes({3}, {2, 0, 1}), true);
    ImageSet s = read_idx_images(im, lb, 3);
    EXPECT_EQ(s.count, 3);
    EXPECT_EQ(s.height, 2);
    EXPECT_EQ(s.width, 2);
    EXPECT_EQ(s.channels, 1);
    EXPECT_EQ(s.pixels, iota_bytes(12));
    EXPECT_EQ(s.labels, (std::vector<int32_t>{2, 0, 1}));
    EXPECT_EQ(s.class_names, (std::vector<std::string>{"0", "1", "2"}));

    write_file(lb, idx_bytes({4}, {0, 0, 1, 1}), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx_images(im, lb, 3); },
                                        {im, "3 images", lb, "4 labels"}));
    write_file(lb, idx_bytes({3}, {0, 1, 10}), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx_images(im, lb, 10); },
                                        {lb, "label 2 is 10", "[0, 10)"}));
    write_file(lb, idx_bytes({3, 1}, {0, 1, 1}), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx_images(im, lb, 3); },
                                        {lb, "must be 1-D", "[3, 1]"}));
    write_file(lb, idx_bytes({3}, {0, 1, 1}), false);
    write_file(im, idx_bytes({3, 4}, iota_bytes(12)), false);
    EXPECT_TRUE(test::throws_error_with([&] { read_idx_images(im, lb, 3); },
                                        {im, "must be 3-D", "[3, 4]"}));
}

TEST_F(VisionData, FashionMnistNamesPlainOrCompressed) {
    // Plain names for the training set, compressed for the test set.
    write_file(path("train-images-idx3-ubyte"), idx_bytes({2, 3, 3}, iota_bytes(18)), false);
    write_file(path("train-labels-idx1-ubyte"), idx_bytes({2}, {9, 0}), false);
    write_file(path("t10k-images-idx3-ubyte.gz"), idx_bytes({1, 3, 3}, iota_bytes(9)), true);
    write_file(path("t10k-labels-idx1-ubyte.gz"), idx_bytes({1}, {5}), true);
    const ImageSet train = read_fashion_mnist(dir_.string(), false);
    EXPECT_EQ(train.count, 2);
    EXPECT_EQ(train.labels, (std::vector<int32_t>{9, 0}));
    ASSERT_EQ(train.class_names.size(), 10u);
    EXPECT_EQ(train.class_names[0], "T-shirt/top");
    EXPECT_EQ(train.class_names[9], "Ankle boot");
    const ImageSet test = read_fashion_mnist(dir_.string(), true);
    EXPECT_EQ(test.count, 1);
    EXPECT_EQ(test.labels[0], 5);
    fs::remove(path("t10k-labels-idx1-ubyte.gz"));
    EXPECT_TRUE(test::throws_error_with(
        [&] { read_fashion_mnist(dir_.string(), true); },
        {dir_.string(), "t10k-labels-idx1-ubyte.gz nor t10k-labels-idx1-ubyte"}));
}

TEST(VisionFashionMnist, RealFilesWhenInstalled) {
    const std::string dir = "/usr/share/datasets/fashion-mnist";
    if (!fs::exists(dir + "/train-images-idx3-ubyte.gz"))
        GTEST_SKIP() << dir << " is not installed (Debian's dataset-fashion-mnist)";
    for (bool test_set : {false, true}) {
        const ImageSet s = read_fashion_mnist(dir, test_set);
        const int64_t n = test_set ? 10000 : 60000;
        EXPECT_EQ(s.count, n);
        EXPECT_EQ(s.height, 28);
        EXPECT_EQ(s.width, 28);
        EXPECT_EQ(s.channels, 1);
        EXPECT_EQ(int64_t(s.pixels.size()), n * 28 * 28);
        std::vector<int64_t> per_class(10, 0);
        for (int32_t l : s.labels) {
            ASSERT_GE(l, 0);
            ASSERT_LT(l, 10);
            ++per_class[size_t(l)];
        }
        for (int64_t c : per_class) EXPECT_EQ(c, n / 10);
        if (!test_set) {
            // Looked up with python3's gzip module: the first training label byte (offset 8
            // of train-labels) is 9, "Ankle boot", and the first image's pixels sum to 76247.
            EXPECT_EQ(s.labels[0], 9);
            int64_t sum = 0;
            for (int64_t k = 0; k < 28 * 28; ++k) sum += s.pixels[size_t(k)];
            EXPECT_EQ(sum, 76247);
        }
    }
}

// ---------------------------------------------------------------------------------------
// PNG files in colour types and depths that write_png does not make, written here with
// libpng directly.

struct RawPng {
    int width = 0, height = 0, color_type = PNG_COLOR_TYPE_GRAY, bit_depth = 8;
    Bytes rows;                      // [height, row bytes] as libpng takes them
    std::vector<png_color> palette;  // for PNG_COLOR_TYPE_PALETTE
    bool interlace = false;
};

bool write_raw_png(const std::string& path, const RawPng& img) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        std::fclose(f);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, img.width, img.height, img.bit_depth, img.color_type,
                 img.interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (!img.palette.empty()) png_set_PLTE(png, info, img.palette.data(), int(img.palette.size()));
    png_write_info(png, info);
    const size_t row = img.rows.size() / size_t(img.height);
    const int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; ++p)
        for (int y = 0; y < img.height; ++y)
            png_write_row(png, const_cast<uint8_t*>(img.rows.data()) + size_t(y) * row);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    return true;
}

TEST_F(VisionData, PngGrayAndRgbRoundTrip) {
    const Bytes gray = iota_bytes(5 * 3);
    write_png(path("g.png"), 5, 3, 1, gray.data());
    Image g = read_png(path("g.png"), 1);
    EXPECT_EQ(g.height, 5);
    EXPECT_EQ(g.width, 3);
    EXPECT_EQ(g.channels, 1);
    EXPECT_EQ(g.pixels, gray);
    // Gray read as RGB: each value three times.
    Image g3 = read_png(path("g.png"), 3);
    ASSERT_EQ(g3.pixels.size(), gray.size() * 3);
    for (size_t i = 0; i < gray.size(); ++i)
        for (int c = 0; c < 3; ++c) EXPECT_EQ(g3.pixels[i * 3 + c], gray[i]);

    const Bytes rgb = iota_bytes(4 * 6 * 3, 11);
    write_png(path("c.png"), 4, 6, 3, rgb.data());
    Image c = read_png(path("c.png"), 3);
    EXPECT_EQ(c.height, 4);
    EXPECT_EQ(c.width, 6);
    EXPECT_EQ(c.pixels, rgb);
}

TEST_F(VisionData, PngRgbToGray) {
    // White, black, a mid gray (r = g = b stays exact), pure red, green and blue.
    const Bytes rgb = {255, 255, 255, 0, 0, 0, 100, 100, 100, 255, 0, 0, 0, 255, 0, 0, 0, 255};
    write_png(path("c.png"), 1, 6, 3, rgb.data());
    const Image g = read_png(path("c.png"), 1);
    ASSERT_EQ(g.pixels.size(), 6u);
    EXPECT_EQ(g.pixels[0], 255);
    EXPECT_EQ(g.pixels[1], 0);
    EXPECT_EQ(g.pixels[2], 100);
    // Rec. 709 weights: 0.2126, 0.7152, 0.0722 of 255.
    EXPECT_NEAR(g.pixels[3], 54, 2);
    EXPECT_NEAR(g.pixels[4], 182, 2);
    EXPECT_NEAR(g.pixels[5], 18, 2);
}

TEST_F(VisionData, Png16BitPaletteAlphaAndInterlaced) {
    // 16-bit gray: scaled to 8 bits (0x8080 is exactly 128; 0xffff is 255).
    RawPng g16;
    g16.width = 3;
    g16.height = 1;
    g16.bit_depth = 16;
    g16.rows = {0x00, 0x00, 0x80, 0x80, 0xff, 0xff};
    ASSERT_TRUE(write_raw_png(path("g16.png"), g16));
    EXPECT_EQ(read_png(path("g16.png"), 1).pixels, (Bytes{0, 128, 255}));

    // 16-bit RGB read as RGB.
    RawPng c16;
    c16.width = 1;
    c16.height = 1;
    c16.bit_depth = 16;
    c16.color_type = PNG_COLOR_TYPE_RGB;
    c16.rows = {0xff, 0xff, 0x80, 0x80, 0x00, 0x00};
    ASSERT_TRUE(write_raw_png(path("c16.png"), c16));
    EXPECT_EQ(read_png(path("c16.png"), 3).pixels, (Bytes{255, 128, 0}));

    // 2-bit palette: indices 0..3 packed four to a byte.
    RawPng pal;
    pal.width = 4;
    pal.height = 1;
    pal.bit_depth = 2;
    pal.color_type = PNG_COLOR_TYPE_PALETTE;
    pal.palette = {{10, 20, 30}, {200, 0, 0}, {50, 50, 50}, {0, 0, 255}};
    pal.rows = {0b00011011};  // indices 0, 1, 2, 3
    ASSERT_TRUE(write_raw_png(path("p.png"), pal));
    EXPECT_EQ(read_png(path("p.png"), 3).pixels,
              (Bytes{10, 20, 30, 200, 0, 0, 50, 50, 50, 0, 0, 255}));
    const Image pg = read_png(path("p.png"), 1);
    ASSERT_EQ(pg.pixels.size(), 4u);
    EXPECT_EQ(pg.pixels[2], 50);  // a gray palette entry stays exact

    // 1-bit gray: 0 and 1 expand to 0 and 255.
    RawPng g1;
    g1.width = 8;
    g1.height = 1;
    g1.bit_depth = 1;
    g1.rows = {0b10100000};
    ASSERT_TRUE(write_raw_png(path("g1.png"), g1));
    EXPECT_EQ(read_png(path("g1.png"), 1).pixels, (Bytes{255, 0, 255, 0, 0, 0, 0, 0}));

    // RGBA and gray+alpha: alpha dropped, colour kept.
    RawPng rgba;
    rgba.width = 2;
    rgba.height = 1;
    rgba.color_type = PNG_COLOR_TYPE_RGB_ALPHA;
    rgba.rows = {1, 2, 3, 0, 4, 5, 6, 255};
    ASSERT_TRUE(write_raw_png(path("a.png"), rgba));
    EXPECT_EQ(read_png(path("a.png"), 3).pixels, (Bytes{1, 2, 3, 4, 5, 6}));
    RawPng ga;
    ga.width = 2;
    ga.height = 1;
    ga.color_type = PNG_COLOR_TYPE_GRAY_ALPHA;
    ga.rows = {7, 0, 9, 128};
    ASSERT_TRUE(write_raw_png(path("ga.png"), ga));
    EXPECT_EQ(read_png(path("ga.png"), 1).pixels, (Bytes{7, 9}));

    // Adam7 interlacing.
    RawPng il;
    il.width = 9;
    il.height = 7;
    il.rows = iota_bytes(63);
    il.interlace = true;
    ASSERT_TRUE(write_raw_png(path("i.png"), il));
    EXPECT_EQ(read_png(path("i.png"), 1).pixels, iota_bytes(63));
}

TEST_F(VisionData, CorruptPngIsAnErrorNamingTheFile) {
    const Bytes gray = iota_bytes(32 * 32);
    write_png(path("ok.png"), 32, 32, 1, gray.data());
    const Bytes good = read_bytes(path("ok.png"));

    // Cut in half: inside the image data.
    write_file(path("cut.png"), Bytes(good.begin(), good.begin() + long(good.size() / 2)), false);
    EXPECT_TRUE(
        test::throws_error_with([&] { read_png(path("cut.png"), 1); },
                                {path("cut.png"), "corrupt or unreadable PNG", "truncated?"}));
    // Garbage in the header chunk: its CRC fails.
    Bytes bad = good;
    bad[18] ^= 0xff;
    write_file(path("ihdr.png"), bad, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_png(path("ihdr.png"), 1); },
                                        {path("ihdr.png"), "corrupt or unreadable PNG"}));
    // Every byte after the signature overwritten, at several places: never a crash.
    for (size_t at = 8; at < good.size(); at += 7) {
        Bytes b = good;
        b[at] ^= 0x55;
        write_file(path("x.png"), b, false);
        try {
            read_png(path("x.png"), 3);
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(path("x.png")), std::string::npos);
        }
    }
    write_file(path("text.png"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'}, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_png(path("text.png"), 1); },
                                        {path("text.png"), "not a PNG file"}));
    write_file(path("empty.png"), {}, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_png(path("empty.png"), 1); },
                                        {path("empty.png"), "not a PNG file"}));
    EXPECT_TRUE(test::throws_error_with([&] { read_png(path("none.png"), 1); },
                                        {"none.png", "cannot open PNG file"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] { write_png((dir_ / "no" / "such" / "dir.png").string(), 32, 32, 1, gray.data()); },
        {"dir.png", "cannot write PNG file"}));
}

TEST(VisionResize, ConstantIdentityAndKnownValues) {
    // A constant image stays constant, up or down.
    const Bytes flat(7 * 5 * 3, 173);
    for (auto [H, W] : {std::pair{28, 28}, std::pair{3, 2}, std::pair{1, 1}, std::pair{14, 9}}) {
        Bytes out(size_t(H * W * 3));
        resize_bilinear(flat.data(), 7, 5, 3, out.data(), H, W);
        EXPECT_EQ(out, Bytes(out.size(), 173)) << H << "x" << W;
    }
    // Same size: the identity.
    const Bytes img = iota_bytes(6 * 4);
    Bytes same(img.size());
    resize_bilinear(img.data(), 6, 4, 1, same.data(), 6, 4);
    EXPECT_EQ(same, img);
    // 1 x 2 -> 1 x 4 with half-pixel centres: samples at -0.25 (clamped), 0.25, 0.75, 1.25
    // (clamped) of the way from 0 to 255.
    const Bytes two = {0, 255};
    Bytes four(4);
    resize_bilinear(two.data(), 1, 2, 1, four.data(), 1, 4);
    EXPECT_EQ(four, (Bytes{0, 64, 191, 255}));
    // 2 x 2 -> 1 x 1: the mean of the four.
    const Bytes quad = {0, 100, 200, 40};
    Bytes one(1);
    resize_bilinear(quad.data(), 2, 2, 1, one.data(), 1, 1);
    EXPECT_EQ(one[0], 85);
}

TEST_F(VisionData, PngFolderWithTwoClasses) {
    fs::create_directories(dir_ / "sets" / "b_shoe");
    fs::create_directories(dir_ / "sets" / "a_bag" / "nested");
    const fs::path root = dir_ / "sets";
    const Bytes white(8 * 8, 255), dark(8 * 8, 20), mid(4 * 4 * 3, 90);
    write_png((root / "b_shoe" / "2.png").string(), 8, 8, 1, dark.data());
    write_png((root / "b_shoe" / "1.PNG").string(), 8, 8, 1, white.data());
    write_png((root / "a_bag" / "x.png").string(), 4, 4, 3, mid.data());
    write_file((root / "b_shoe" / "notes.txt").string(), {'h', 'i'}, false);
    write_file((root / "README").string(), {'r'}, false);
    write_file((root / "a_bag" / ".hidden.png").string(), {'x'}, false);

    std::vector<std::string> skipped;
    const ImageSet s = read_png_folder(root.string(), 4, 4, 1, &skipped);
    EXPECT_EQ(s.class_names, (std::vector<std::string>{"a_bag", "b_shoe"}));
    EXPECT_EQ(s.count, 3);
    EXPECT_EQ(s.height, 4);
    EXPECT_EQ(s.width, 4);
    EXPECT_EQ(s.channels, 1);
    EXPECT_EQ(s.labels, (std::vector<int32_t>{0, 1, 1}));
    // Sorted file order: "1.PNG" before "2.png".
    EXPECT_EQ(s.image(0)[0], 90);
    EXPECT_EQ(s.image(1)[5], 255);
    EXPECT_EQ(s.image(2)[15], 20);
    EXPECT_EQ(skipped.size(), 4u);  // README, nested/, .hidden.png, notes.txt
    std::set<std::string> names;
    for (const auto& p : skipped) names.insert(fs::path(p).filename().string());
    EXPECT_EQ(names, (std::set<std::string>{"README", "nested", ".hidden.png", "notes.txt"}));

    // Read again as RGB at another size.
    const ImageSet rgb = read_png_folder(root.string(), 2, 3, 3);
    EXPECT_EQ(rgb.pixels.size(), size_t(3 * 2 * 3 * 3));
    EXPECT_EQ(rgb.image(1)[0], 255);

    // Errors.
    fs::create_directories(dir_ / "empty");
    EXPECT_TRUE(test::throws_error_with(
        [&] { read_png_folder((dir_ / "empty").string(), 4, 4, 1); }, {"empty", "is empty"}));
    fs::create_directories(dir_ / "flat");
    write_png((dir_ / "flat" / "a.png").string(), 8, 8, 1, dark.data());
    EXPECT_TRUE(test::throws_error_with([&] { read_png_folder((dir_ / "flat").string(), 4, 4, 1); },
                                        {"flat", "no class subfolders"}));
    EXPECT_TRUE(
        test::throws_error_with([&] { read_png_folder((dir_ / "nothing").string(), 4, 4, 1); },
                                {"nothing", "does not exist"}));
    fs::create_directories(root / "c_empty");
    EXPECT_TRUE(test::throws_error_with([&] { read_png_folder(root.string(), 4, 4, 1); },
                                        {"c_empty", "holds no .png file"}));
    fs::remove(root / "c_empty");
    write_file((root / "a_bag" / "broken.png").string(), {0x89, 'P', 'N', 'G'}, false);
    EXPECT_TRUE(test::throws_error_with([&] { read_png_folder(root.string(), 4, 4, 1); },
                                        {"broken.png", "not a PNG file"}));
}

}  // namespace
}  // namespace moe::vision
