// safetensors files written to break the reader: one test per malformed-file fault (each
// checks that the message names the file and the problem) and a seeded corruption sweep.
// Both files are also built with AddressSanitizer as test_safetensors_asan (tests/cmake/
// asan.cmake).
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
#include "safetensors_test_files.h"
#include "test_support.h"

namespace moe {
namespace {

using namespace test;

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

}  // namespace
}  // namespace moe
