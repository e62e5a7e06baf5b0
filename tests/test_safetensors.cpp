// safetensors: round trips of every dtype and awkward shapes, one test per malformed-file
// fault (each checks that the message names the file and the problem), atomic saves, a
// seeded corruption sweep (also built with AddressSanitizer as test_safetensors_asan, see
// tests/cmake/asan.cmake) and interoperability with Python's safetensors package.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(n >> (8 * i)));
    return s;
}

// A file as a hand-written header and `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes) {
    return le64(header.size()) + header + std::string(data_bytes, '\x11');
}

uint64_t header_length(const std::string& file) {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(file[i])) << (8 * i);
    return n;
}

::testing::AssertionResult open_fails_with(const std::string& path,
                                           std::initializer_list<std::string> parts) {
    return test::throws_error_with([&] { io::SafetensorsFile f(path); }, parts);
}

// Each test gets its own directory: ctest runs test_safetensors and test_safetensors_asan
// in parallel, and they share test names.
class Safetensors : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_st_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string file(const std::string& name) const { return (dir_ / name).string(); }
    std::vector<std::string> temp_files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(dir_))
            if (e.path().filename().string().find(".tmp.") != std::string::npos)
                out.push_back(e.path().filename().string());
        return out;
    }

    fs::path dir_;
};

// ---------------------------------------------------------------------------------------
// Round trips

TEST_F(Safetensors, RoundTripsEveryDtypeAndAwkwardShapes) {
    const std::vector<DType> dtypes = {DType::f32, DType::bf16, DType::f64,
                                       DType::i32, DType::i64,  DType::u8};
    const std::vector<Shape> shapes = {Shape{}, Shape{0}, Shape{1}, Shape{3, 7}, Shape{2, 3, 4, 5}};
    std::vector<std::vector<uint8_t>> storage;
    std::vector<io::TensorToSave> tensors;
    Rng rng(7);
    // Shapes vary fastest, so tensors of odd byte sizes leave later ones unaligned.
    for (DType dt : dtypes) {
        for (const Shape& s : shapes) {
            auto& bytes = storage.emplace_back(size_t(s.numel()) * dtype_size(dt));
            for (auto& b : bytes) b = uint8_t(rng.below(256));
            tensors.push_back(
                {std::string(dtype_name(dt)) + "_" + s.str(), Tensor(bytes.data(), s, dt)});
        }
    }
    const std::map<std::string, std::string> meta = {{"config", R"({"dim": 64, "layers": [1, 2]})"},
                                                     {"empty", ""},
                                                     {"unicode", "h\u00e9llo \u2713"},
                                                     {"newline", "a\nb\t\"c\""}};
    const std::string path = file("all.safetensors");
    io::save_safetensors(path, tensors, meta);

    io::SafetensorsFile f(path);
    EXPECT_EQ(f.path(), path);
    EXPECT_EQ(f.metadata(), meta);
    EXPECT_EQ(f.metadata("config"), meta.at("config"));
    ASSERT_EQ(f.names().size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        SCOPED_TRACE(t.name);
        ASSERT_TRUE(f.contains(t.name));
        const auto& info = f.info(t.name);
        EXPECT_EQ(info.dtype, t.tensor.dtype);
        EXPECT_EQ(info.shape, t.tensor.shape);
        EXPECT_EQ(info.shape.rank, t.tensor.shape.rank);
        auto bytes = f.bytes(t.name);
        ASSERT_EQ(bytes.size(), storage[i].size());
        EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), storage[i].begin()));
    }
    EXPECT_TRUE(test::throws_error_with([&] { f.metadata("absent"); }, {path, "'absent'"}));
    EXPECT_TRUE(
        test::throws_error_with([&] { f.info("absent"); }, {path, "no tensor named 'absent'"}));
}

TEST_F(Safetensors, DataSectionStartsEightByteAlignedForEveryHeaderLength) {
    float x = 1.5f;
    // Metadata values of 0..15 characters give every header length modulo 8, twice.
    for (int k = 0; k < 16; ++k) {
        const std::string path = file(detail::concat("a", k, ".safetensors"));
        io::save_safetensors(path, {{"x", Tensor(&x, {1})}}, {{"m", std::string(size_t(k), 'z')}});
        const std::string bytes = read_all(path);
        const uint64_t n = header_length(bytes);
        EXPECT_EQ((8 + n) % 8, 0u) << "metadata length " << k;
        EXPECT_EQ(bytes.size(), 8 + n + 4);
        io::SafetensorsFile f(path);
        EXPECT_EQ(f.read_f32("x"), std::vector<float>{1.5f});
        EXPECT_EQ(f.metadata("m").size(), size_t(k));
    }
}

TEST_F(Safetensors, NamesKeepFileOrderIncludingZeroSizeTensors) {
    std::vector<float> a(3, 1.f), b(5, 2.f), c(1, 3.f);
    const std::vector<std::string> order = {"zeta", "empty_z", "alpha", "empty_a", "mid", "last"};
    const std::string path = file("order.safetensors");
    io::save_safetensors(path, {{"zeta", Tensor(a.data(), {3})},
                                {"empty_z", Tensor(nullptr, {0, 4})},
                                {"alpha", Tensor(b.data(), {5})},
                                {"empty_a", Tensor(nullptr, {0})},
                                {"mid", Tensor(c.data(), {1})},
                                {"last", Tensor(nullptr, {2, 0})}});
    io::SafetensorsFile f(path);
    EXPECT_EQ(f.names(), order);
    EXPECT_EQ(f.read_f32("alpha"), b);
    EXPECT_TRUE(f.read_f32("empty_a").empty());
}

TEST_F(Safetensors, ReadConvertsBf16AndF64ToFloatAndDouble) {
    std::vector<uint16_t> h(21);
    std::vector<float> h_want(21);
    for (int i = 0; i < 21; ++i) {
        h_want[i] = 0.375f * float(i - 10);  // exact in bf16: at most 5 significant bits
        h[i] = f32_to_bf16(h_want[i]);
    }
    std::vector<double> d = {1.0 / 3.0, -2.5, 1e-30, 123456789.123, 0.0, -0.0};
    std::vector<float> f32 = {0.1f, -7.f};
    const std::string path = file("conv.safetensors");
    io::save_safetensors(path, {{"h", Tensor(h.data(), {3, 7}, DType::bf16)},
                                {"d", Tensor(d.data(), {2, 3}, DType::f64)},
                                {"f", Tensor(f32.data(), {2}, DType::f32)}});
    io::SafetensorsFile file_(path);

    std::vector<float> got(21);
    file_.read("h", {3, 7}, got.data());
    EXPECT_EQ(got, h_want);
    std::vector<double> got_d(21);
    file_.read("h", {3, 7}, got_d.data());
    for (int i = 0; i < 21; ++i) EXPECT_EQ(got_d[i], double(h_want[i]));

    std::vector<float> got_f(6);
    file_.read("d", {2, 3}, got_f.data());
    for (int i = 0; i < 6; ++i) EXPECT_EQ(got_f[i], float(d[i])) << i;
    EXPECT_TRUE(std::signbit(got_f[5]));
    std::vector<double> got_dd(6);
    file_.read("d", {2, 3}, got_dd.data());
    EXPECT_EQ(got_dd, d);  // f64 read as f64 is exact
    EXPECT_EQ(file_.read_f32("f"), f32);
}

TEST_F(Safetensors, ReadWithWrongShapeNamesBothShapes) {
    std::vector<float> x(21);
    const std::string path = file("shape.safetensors");
    io::save_safetensors(path, {{"w", Tensor(x.data(), {3, 7})}});
    io::SafetensorsFile f(path);
    std::vector<float> dst(21);
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            f.read("w", {7, 3}, dst.data());
        },
        {path, "tensor 'w'", "[3, 7]", "[7, 3]"}));
    EXPECT_TRUE(
        test::throws_error_with([&] { f.read("w", {21}, dst.data()); }, {"[3, 7]", "[21]"}));
}

TEST_F(Safetensors, ReadOfIntegerTensorAsFloatIsAnError) {
    std::vector<int32_t> x = {1, 2};
    const std::string path = file("int.safetensors");
    io::save_safetensors(path, {{"ids", Tensor(x.data(), {2}, DType::i32)}});
    io::SafetensorsFile f(path);
    float dst[2];
    EXPECT_TRUE(test::throws_error_with([&] { f.read("ids", {2}, dst); },
                                        {path, "'ids'", "i32", "floating-point"}));
}

// ---------------------------------------------------------------------------------------
// One test per fault in a file

TEST_F(Safetensors, MissingFile) {
    const std::string path = file("nope.safetensors");
    EXPECT_TRUE(open_fails_with(path, {path, "cannot open", "No such file"}));
}

TEST_F(Safetensors, DirectoryIsNotARegularFile) {
    EXPECT_TRUE(
        open_fails_with(dir_.string(), {dir_.string(), "must be a regular file", "a directory"}));
}

TEST_F(Safetensors, EmptyFile) {
    const std::string path = file("empty.safetensors");
    write_all(path, "");
    EXPECT_TRUE(open_fails_with(path, {path, "file is 0 bytes", "8-byte header length"}));
}

TEST_F(Safetensors, FileShorterThanEightBytes) {
    const std::string path = file("short.safetensors");
    write_all(path, std::string("\x05\0\0\0\0", 5));
    EXPECT_TRUE(open_fails_with(path, {path, "file is 5 bytes", "8-byte header length"}));
}

TEST_F(Safetensors, HeaderLengthPastEndOfFile) {
    const std::string path = file("long.safetensors");
    write_all(path, le64(1000) + "{}" + std::string(18, ' '));
    EXPECT_TRUE(
        open_fails_with(path, {path, "header length 1000 runs past the end of the 28-byte"}));
}

TEST_F(Safetensors, HeaderLengthOverflowsWhenAddedToEight) {
    const std::string path = file("overflow.safetensors");
    write_all(path, le64(~uint64_t(0)) + "{}");
    EXPECT_TRUE(open_fails_with(path, {path, "header length 18446744073709551615 runs past"}));
    // 2^64 - 8: 8 + n wraps to exactly 0, which a naive "8 + n > size" check accepts.
    write_all(path, le64(~uint64_t(0) - 7) + "{}");
    EXPECT_TRUE(open_fails_with(path, {path, "header length 18446744073709551608 runs past"}));
}

TEST_F(Safetensors, MalformedJson) {
    const std::string path = file("json.safetensors");
    write_all(path, raw_file(R"({"w": {"dtype": "F32", "shape": [)", 0));
    EXPECT_TRUE(open_fails_with(path, {path, "malformed JSON header"}));
}

// A header of 100,000 nested arrays (200 KB) overflowed the stack in the recursive parts
// of a JSON library (dump, destruction); it must be an error, in every field it can hide in.
TEST_F(Safetensors, DeeplyNestedHeaderIsAnErrorNotAStackOverflow) {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    const std::vector<std::string> headers = {
        R"({"__metadata__": {"a": )" + deep + "}}",
        R"({"w": {"dtype": )" + deep + R"(, "shape": [1], "data_offsets": [0, 4]}})",
        R"({"w": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 4]}})",
        R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": )" + deep + "}}"};
    for (size_t i = 0; i < headers.size(); ++i) {
        const std::string path = file("deep" + std::to_string(i) + ".safetensors");
        write_all(path, raw_file(headers[i], 4));
        EXPECT_TRUE(open_fails_with(path, {path, "nested deeper than 32 levels"})) << i;
    }
}

// Found by the fuzzer (fuzz/fuzz_safetensors.cpp): text after a NUL byte was ignored by the
// JSON parser but not by the scan for header order, and escaped as a library exception.
TEST_F(Safetensors, NulByteInHeaderIsAnError) {
    const std::string path = file("nul.safetensors");
    write_all(
        path,
        raw_file(std::string(R"({"x": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}})") +
                     std::string("\0\0{\"y\": \x7f\"q\0\"", 10),
                 4));
    EXPECT_TRUE(open_fails_with(path, {path, "NUL byte at byte 60"}));
}

TEST_F(Safetensors, FifoIsRefusedWithoutBlocking) {
    const std::string path = file("fifo.safetensors");
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    // A regression blocks here; ctest's timeout then names this test.
    EXPECT_TRUE(open_fails_with(path, {path, "must be a regular file", "a FIFO"}));
}

// A nested value in an error message is quoted as a short excerpt, not dumped whole.
TEST_F(Safetensors, ErrorsQuoteShortExcerptsOfBadValues) {
    const std::string path = file("long.safetensors");
    std::string shape = "[";
    for (int i = 0; i < 100000; ++i) shape += "\"x\",";
    shape += "\"x\"]";
    write_all(path, raw_file(R"({"w": {"dtype": "F32", "shape": [)" + shape +
                                 R"(], "data_offsets": [0, 4]}})",
                             4));
    const std::string msg = test::error_of([&] { io::SafetensorsFile f(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg.substr(0, 300);
    EXPECT_LT(msg.size(), 400u) << msg.substr(0, 400);
}

// 200,000 tensors took 31 s with an insertion-ordered JSON map (a linear search per key);
// with a sorted map and the order recorded by the parser it is well under a second. The
// order of zero-size tensors (all at offset 0) must still be the header's.
TEST_F(Safetensors, HeaderOfTwoHundredThousandTensorsKeepsHeaderOrder) {
    const int n = 200000;
    std::string header = "{";
    for (int i = 0; i < n; ++i) {
        // Names in descending order, so a sorted map would reverse them.
        header += (i ? ",\"t" : "\"t") + std::to_string(n - i) +
                  R"(": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})";
    }
    header += "}";
    const std::string path = file("many.safetensors");
    write_all(path, raw_file(header, 0));
    io::SafetensorsFile f(path);
    const auto names = f.names();
    ASSERT_EQ(names.size(), size_t(n));
    EXPECT_EQ(names.front(), "t" + std::to_string(n));
    EXPECT_EQ(names[1], "t" + std::to_string(n - 1));
    EXPECT_EQ(names.back(), "t1");
}

TEST_F(Safetensors, NonFiniteValuesAreNamedByTensorAndElement) {
    const float nan = std::nanf(""), inf = INFINITY;
    std::vector<float> good = {1, 2, 3}, with_nan = {1, nan, 3}, with_inf = {1, 2, -inf};
    std::vector<double> d_inf = {inf};
    std::vector<uint16_t> bf_nan = {0x3f80, 0x7fc0};  // 1.0, NaN
    const std::string path = file("nan.safetensors");
    io::save_safetensors(path, {{"good", Tensor(good.data(), {3}, DType::f32)},
                                {"layers.0.attn.wq", Tensor(with_nan.data(), {3}, DType::f32)},
                                {"neg", Tensor(with_inf.data(), {3}, DType::f32)},
                                {"d", Tensor(d_inf.data(), {1}, DType::f64)},
                                {"b", Tensor(bf_nan.data(), {2}, DType::bf16)}});
    io::SafetensorsFile f(path);
    EXPECT_NO_THROW(f.check_finite("good"));
    EXPECT_TRUE(test::throws_error_with([&] { f.check_finite("layers.0.attn.wq"); },
                                        {path, "'layers.0.attn.wq'", "nan", "element 1"}));
    EXPECT_TRUE(
        test::throws_error_with([&] { f.check_finite("neg"); }, {"'neg'", "-inf", "element 2"}));
    EXPECT_TRUE(test::throws_error_with([&] { f.check_finite("d"); }, {"'d'", "inf", "element 0"}));
    EXPECT_TRUE(test::throws_error_with([&] { f.check_finite("b"); }, {"'b'", "nan", "element 1"}));
    std::vector<float> dst(3);
    EXPECT_TRUE(test::throws_error_with([&] { f.read("neg", {3}, dst.data()); }, {"'neg'"}));
    // Tools and fixtures may ask for the values as stored.
    f.read("neg", {3}, dst.data(), io::SafetensorsFile::NonFinite::allow);
    EXPECT_EQ(dst[2], -inf);
}

TEST_F(Safetensors, JsonThatIsNotAnObject) {
    const std::string path = file("array.safetensors");
    write_all(path, raw_file("[1, 2, 3]", 0));
    EXPECT_TRUE(open_fails_with(path, {path, "JSON header is not an object"}));
}

TEST_F(Safetensors, TensorEntryWithoutDataOffsets) {
    const std::string path = file("nooffsets.safetensors");
    write_all(path, raw_file(R"({"w": {"dtype": "F32", "shape": [2]}})", 8));
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'w'", "no \"data_offsets\""}));
}

TEST_F(Safetensors, TensorEntryThatIsNotAnObject) {
    const std::string path = file("entry.safetensors");
    write_all(path, raw_file(R"({"w": [1, 2]})", 8));
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'w'", "not an object"}));
}

TEST_F(Safetensors, UnknownDtype) {
    const std::string path = file("dtype.safetensors");
    write_all(path,
              raw_file(R"({"w": {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}})", 2));
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'w'", "unknown dtype 'F8_E9'"}));
}

TEST_F(Safetensors, ShapeWithNegativeSize) {
    const std::string path = file("neg.safetensors");
    write_all(
        path,
        raw_file(R"({"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24]}})", 24));
    EXPECT_TRUE(
        open_fails_with(path, {path, "tensor 'w'", "shape size -3 is not a non-negative integer"}));
}

TEST_F(Safetensors, ShapeWithNonIntegerSize) {
    const std::string path = file("frac.safetensors");
    write_all(
        path,
        raw_file(R"({"w": {"dtype": "F32", "shape": [2, 1.5], "data_offsets": [0, 12]}})", 12));
    EXPECT_TRUE(open_fails_with(
        path, {path, "tensor 'w'", "shape size 1.5 is not a non-negative integer"}));
    write_all(path,
              raw_file(R"({"w": {"dtype": "F32", "shape": ["3"], "data_offsets": [0, 12]}})", 12));
    EXPECT_TRUE(open_fails_with(path, {path, "shape size \"3\" is not a non-negative integer"}));
}

TEST_F(Safetensors, ShapeWhoseElementCountOverflows) {
    const std::string path = file("huge.safetensors");
    // 2^31 * 2^31 * 2^2 = 2^64 elements: the product wraps to 0 in 64-bit arithmetic.
    write_all(path, raw_file(R"({"w": {"dtype": "F32", "shape": [2147483648, 2147483648, 4],)"
                             R"( "data_offsets": [0, 0]}})",
                             0));
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'w'", "is too large"}));
    write_all(path, raw_file(R"({"w": {"dtype": "U8", "shape": [0, 18446744073709551615],)"
                             R"( "data_offsets": [0, 0]}})",
                             0));
    EXPECT_TRUE(open_fails_with(path, {path, "shape size 18446744073709551615 is too large"}));
}

TEST_F(Safetensors, ShapeWithTooManyDimensions) {
    const std::string path = file("rank.safetensors");
    write_all(path, raw_file(R"({"w": {"dtype": "U8", "shape": [1, 1, 1, 1, 1, 1, 1],)"
                             R"( "data_offsets": [0, 1]}})",
                             1));
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'w'", "7 dimensions"}));
}

TEST_F(Safetensors, ShapeWhoseByteSizeDoesNotMatchOffsets) {
    const std::string path = file("size.safetensors");
    write_all(path,
              raw_file(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 24));
    EXPECT_TRUE(open_fails_with(
        path,
        {path, "tensor 'w'", "[2, 3] of F32 needs 24 bytes but data_offsets [0, 20] hold 20"}));
}

TEST_F(Safetensors, OffsetsReversed) {
    const std::string path = file("reversed.safetensors");
    write_all(path,
              raw_file(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [24, 0]}})", 24));
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'w'", "data_offsets [24, 0] are reversed"}));
}

TEST_F(Safetensors, OffsetsPastEndOfTruncatedFile) {
    std::vector<float> a(6, 1.f), b(10, 2.f);
    const std::string path = file("trunc.safetensors");
    io::save_safetensors(path, {{"a", Tensor(a.data(), {6})}, {"b", Tensor(b.data(), {2, 5})}});
    const auto size = fs::file_size(path);
    fs::resize_file(path, size - 3);
    EXPECT_TRUE(open_fails_with(path, {path, "tensor 'b'", "data_offsets [24, 64] run past the end",
                                       "61-byte data section", "file truncated?"}));
}

TEST_F(Safetensors, OverlappingOffsets) {
    const std::string path = file("overlap.safetensors");
    write_all(path, raw_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                             R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
                             24));
    EXPECT_TRUE(open_fails_with(path, {path, "tensors 'a' [0, 16] and 'b' [8, 24] overlap"}));
}

TEST_F(Safetensors, SameTensorListedTwice) {
    const std::string path = file("dup.safetensors");
    write_all(path, raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                             R"( "a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})",
                             8));
    EXPECT_TRUE(open_fails_with(path, {path, "key 'a' appears twice"}));
}

TEST_F(Safetensors, NonStringMetadataValue) {
    const std::string path = file("meta.safetensors");
    write_all(path, raw_file(R"({"__metadata__": {"name": "x", "step": 12},)"
                             R"( "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})",
                             1));
    EXPECT_TRUE(open_fails_with(path, {path, "metadata value 'step' is 12, not a string"}));
    write_all(path, raw_file(R"({"__metadata__": ["x"]})", 0));
    EXPECT_TRUE(open_fails_with(path, {path, "__metadata__ is not an object"}));
}

// ---------------------------------------------------------------------------------------
// Writer validation and atomicity

TEST_F(Safetensors, SaveRejectsDuplicateReservedAndNonUtf8Names) {
    float x[2] = {1, 2};
    const std::string path = file("bad.safetensors");
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            io::save_safetensors(path, {{"a", Tensor(x, {2})}, {"a", Tensor(x, {1})}});
        },
        {path, "tensor 'a'", "given twice"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            io::save_safetensors(path, {{"__metadata__", Tensor(x, {2})}});
        },
        {path, "reserved name"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            io::save_safetensors(path, {{"bad\xff", Tensor(x, {2})}});
        },
        {path, "cannot encode the header"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            io::save_safetensors(path, {{"n", Tensor(nullptr, {2})}});
        },
        {path, "tensor 'n'", "has no data"}));
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(temp_files().empty());
}

TEST_F(Safetensors, SuccessfulSaveReplacesFileAndLeavesNoTempFile) {
    std::vector<float> old_v = {1, 2, 3}, new_v = {4, 5};
    const std::string path = file("ckpt.safetensors");
    io::save_safetensors(path, {{"w", Tensor(old_v.data(), {3})}});
    io::SafetensorsFile before(path);  // maps the old file
    io::save_safetensors(path, {{"w", Tensor(new_v.data(), {2})}}, {{"v", "2"}});
    EXPECT_TRUE(temp_files().empty());
    EXPECT_EQ(io::SafetensorsFile(path).read_f32("w"), new_v);
    // rename() replaced the directory entry, not the bytes: the open file still reads the
    // old values instead of faulting on a truncated mapping.
    EXPECT_EQ(before.read_f32("w"), old_v);
}

TEST_F(Safetensors, NonContiguousTensorLeavesOldFileIntact) {
    std::vector<float> v(12, 1.f);
    const std::string path = file("keep.safetensors");
    io::save_safetensors(path, {{"w", Tensor(v.data(), {12})}});
    const std::string old_bytes = read_all(path);
    Tensor t(v.data(), {3, 2});
    t.strides[0] = 4;  // rows padded to 4: not contiguous
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            io::save_safetensors(path, {{"ok", Tensor(v.data(), {2})}, {"padded", t}});
        },
        {path, "tensor 'padded'", "not contiguous"}));
    EXPECT_EQ(read_all(path), old_bytes);
    EXPECT_TRUE(temp_files().empty());
}

TEST_F(Safetensors, WriteFailingMidwayLeavesOldFileIntactAndNoTempFile) {
    std::vector<float> small = {1, 2, 3};
    const std::string path = file("midway.safetensors");
    io::save_safetensors(path, {{"w", Tensor(small.data(), {3})}});
    const std::string old_bytes = read_all(path);

    // A real I/O error halfway through: files of this process may not grow past 64 KiB, so
    // writing a 1 MiB tensor fails with EFBIG after the header and 64 KiB of data.
    std::vector<float> big(1 << 18, 0.5f);
    rlimit saved{};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
    auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);  // else the kernel kills the process
    rlimit low = saved;
    low.rlim_cur = 64 * 1024;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
    auto result = test::throws_error_with(
        [&] {
            io::save_safetensors(
                path, {{"a", Tensor(small.data(), {3})}, {"big", Tensor(big.data(), {1 << 18})}});
        },
        {path, "write to", ".tmp.", "failed", "too large"});
    ::setrlimit(RLIMIT_FSIZE, &saved);
    ::signal(SIGXFSZ, old_handler);

    EXPECT_TRUE(result);
    EXPECT_EQ(read_all(path), old_bytes);
    EXPECT_TRUE(temp_files().empty());
    EXPECT_EQ(io::SafetensorsFile(path).read_f32("w"), small);
}

TEST_F(Safetensors, SaveIntoMissingDirectoryNamesThePath) {
    float x = 1;
    const std::string path = file("no/such/dir/x.safetensors");
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            io::save_safetensors(path, {{"x", Tensor(&x, {1})}});
        },
        {path, "cannot create", "No such file"}));
}

// ---------------------------------------------------------------------------------------
// Seeded corruption sweep: any mutated file either opens with every tensor inside the data
// section, or is rejected with moe::Error. Under ASan an out-of-bounds read aborts.

TEST_F(Safetensors, RandomCorruptionsAreRejectedOrSafe) {
    std::vector<float> a(21);
    for (int i = 0; i < 21; ++i) a[i] = 0.5f * float(i);
    std::vector<uint16_t> h = {f32_to_bf16(1.f), f32_to_bf16(-2.f), f32_to_bf16(3.f)};
    std::vector<int64_t> ids = {7, -9};
    double s = 2.5;
    const std::string good_path = file("good.safetensors");
    io::save_safetensors(good_path,
                         {{"layers.0.w", Tensor(a.data(), {3, 7})},
                          {"h", Tensor(h.data(), {3}, DType::bf16)},
                          {"ids", Tensor(ids.data(), {2}, DType::i64)},
                          {"empty", Tensor(nullptr, {0}, DType::u8)},
                          {"s", Tensor(&s, {}, DType::f64)}},
                         {{"step", "12"}, {"config", R"({"dim": 7})"}});
    const std::string good = read_all(good_path);
    const uint64_t n = header_length(good);
    std::vector<size_t> digits;  // positions of digits in the JSON: offsets and shapes
    for (size_t i = 8; i < 8 + n; ++i)
        if (good[i] >= '0' && good[i] <= '9') digits.push_back(i);

    Rng rng(20240611);
    int opened = 0, rejected = 0;
    for (int iter = 0; iter < 2000; ++iter) {
        std::string m = good;
        switch (iter % 4) {
            case 0:  // flip 1-4 random bits in the length field or the JSON
                for (uint64_t k = 0, flips = 1 + rng.below(4); k < flips; ++k)
                    m[rng.below(8 + n)] ^= char(1u << rng.below(8));
                break;
            case 1:  // change a digit to another: offsets and sizes stay plausible
                m[digits[rng.below(digits.size())]] = char('0' + rng.below(10));
                break;
            case 2:  // truncate anywhere
                m.resize(rng.below(m.size()));
                break;
            case 3:  // nudge the header length by up to +-16
                m.replace(0, 8, le64(n + rng.below(33) - 16));
                break;
        }
        // A fresh file each time: ext4 flushes a file that is truncated and rewritten on
        // close (auto_da_alloc), which made this loop take 6 s instead of 0.5 s.
        const std::string path = file(detail::concat("mutant", iter, ".safetensors"));
        write_all(path, m);
        struct Remove {
            const std::string& p;
            ~Remove() { std::remove(p.c_str()); }
        } remove_after{path};
        try {
            io::SafetensorsFile f(path);
            const uint64_t data_size = m.size() - 8 - header_length(m);
            for (const std::string& name : f.names()) {
                const auto& info = f.info(name);
                ASSERT_LE(info.begin, info.end) << name;
                ASSERT_LE(info.end, data_size) << name;
                ASSERT_EQ(info.end - info.begin,
                          uint64_t(info.shape.numel()) * dtype_size(info.dtype))
                    << name;
                uint64_t sum = 0;  // touch every byte so ASan sees any stray read
                for (uint8_t b : f.bytes(name)) sum += b;
                if (info.dtype == DType::f32 || info.dtype == DType::bf16 ||
                    info.dtype == DType::f64) {
                    EXPECT_EQ(f.read_f32(name).size(), size_t(info.shape.numel()));
                }
                (void)sum;
            }
            ++opened;
        } catch (const Error&) {
            ++rejected;
        } catch (const std::exception& e) {
            ADD_FAILURE() << "mutation " << iter << " threw a non-moe exception: " << e.what();
        }
    }
    // Both outcomes must occur, or the sweep is not exercising the validator.
    EXPECT_GT(opened, 50);
    EXPECT_GT(rejected, 1000);
    RecordProperty("opened", opened);
}

// ---------------------------------------------------------------------------------------
// Interoperability with Python's safetensors package

std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

TEST_F(Safetensors, InteropWithPythonSafetensors) {
    const std::string python = test::python();
    const std::string script = test::source_dir() + "/tests/reference/check_safetensors_interop.py";

    // The values here and in the script are exact in every dtype, so both sides compare
    // with ==.
    std::vector<float> f32(21);
    for (int i = 0; i < 21; ++i) f32[i] = 0.25f * float(i) - 2.f;
    std::vector<double> f64(120);
    for (int i = 0; i < 120; ++i) f64[i] = double(i - 56) / 8.0;
    std::vector<uint16_t> bf16;
    for (float v : {1.5f, -2.f, 0.0078125f, 256.f, -0.5f}) bf16.push_back(f32_to_bf16(v));
    std::vector<int32_t> i32 = {-1, 0, 2147483647, -2147483647 - 1};
    std::vector<int64_t> i64 = {-1, int64_t(1) << 40, INT64_MIN, INT64_MAX};
    std::vector<uint8_t> u8 = {0, 1, 127, 128, 254, 255};
    double scalar = 3.25;
    const std::string ours = file("ours.safetensors");
    io::save_safetensors(ours,
                         {{"f32", Tensor(f32.data(), {3, 7})},
                          {"f64", Tensor(f64.data(), {2, 3, 4, 5}, DType::f64)},
                          {"bf16", Tensor(bf16.data(), {5}, DType::bf16)},
                          {"i32", Tensor(i32.data(), {4}, DType::i32)},
                          {"i64", Tensor(i64.data(), {2, 2}, DType::i64)},
                          {"u8", Tensor(u8.data(), {6}, DType::u8)},
                          {"empty", Tensor(nullptr, {0})},
                          {"scalar", Tensor(&scalar, {}, DType::f64)}},
                         {{"config", R"({"dim": 4})"}, {"step", "12"}, {"unicode", "h\u00e9llo"}});

    const std::string from_numpy = file("numpy.safetensors"),
                      from_torch = file("torch.safetensors");
    const std::string cmd = shell_quote(python) + " " + shell_quote(script) + " " +
                            shell_quote(ours) + " " + shell_quote(from_numpy) + " " +
                            shell_quote(from_torch) + " 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buf[512];
    while (size_t k = std::fread(buf, 1, sizeof buf, pipe)) output.append(buf, k);
    const int status = ::pclose(pipe);
    ASSERT_EQ(status, 0) << cmd << "\n" << output;

    io::SafetensorsFile np(from_numpy);
    EXPECT_EQ(np.metadata(),
              (std::map<std::string, std::string>{{"writer", "numpy"}, {"step", "34"}}));
    std::vector<float> np_f32(10);
    for (int i = 0; i < 10; ++i) np_f32[i] = 0.5f * float(i) - 1.f;
    EXPECT_EQ(np.info("np_f32").shape, (Shape{2, 5}));
    EXPECT_EQ(np.read_f32("np_f32"), np_f32);
    std::vector<double> np_f64(3);
    np.read("np_f64", {3}, np_f64.data());
    EXPECT_EQ(np_f64, (std::vector<double>{1.0 / 3.0, -2.5, 1e300}));
    auto int64s = [&](const std::string& name) {
        std::vector<int64_t> v(np.bytes(name).size() / 8);
        std::memcpy(v.data(), np.bytes(name).data(), np.bytes(name).size());
        return v;
    };
    EXPECT_EQ(np.info("np_i64").dtype, DType::i64);
    EXPECT_EQ(int64s("np_i64"), (std::vector<int64_t>{-5, 0, int64_t(1) << 62}));
    EXPECT_EQ(np.info("np_i32").dtype, DType::i32);
    EXPECT_EQ(np.info("np_i32").shape, (Shape{2, 2}));
    std::vector<int32_t> np_i32(4);
    std::memcpy(np_i32.data(), np.bytes("np_i32").data(), 16);
    EXPECT_EQ(np_i32, (std::vector<int32_t>{1, -2, 3, -4}));
    EXPECT_EQ(np.info("np_u8").dtype, DType::u8);
    auto u8s = np.bytes("np_u8");
    EXPECT_EQ(std::vector<uint8_t>(u8s.begin(), u8s.end()), (std::vector<uint8_t>{0, 200, 255}));
    EXPECT_EQ(np.info("np_scalar").shape.rank, 0);
    EXPECT_EQ(np.read_f32("np_scalar"), std::vector<float>{7.5f});
    EXPECT_EQ(np.info("np_empty").shape, (Shape{0, 3}));
    EXPECT_EQ(np.info("np_empty").dtype, DType::f64);

    io::SafetensorsFile pt(from_torch);
    EXPECT_EQ(pt.metadata("writer"), "torch");
    EXPECT_EQ(pt.info("pt_bf16").dtype, DType::bf16);
    std::vector<float> pt_bf16(6);
    pt.read("pt_bf16", {2, 3}, pt_bf16.data());
    EXPECT_EQ(pt_bf16, (std::vector<float>{1.f, -0.5f, 0.25f, 3.5f, -8.f, 1024.f}));
    EXPECT_EQ(pt.read_f32("pt_f32"), (std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f}));
}

}  // namespace
}  // namespace moe
