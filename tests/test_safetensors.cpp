// safetensors: round trips of every dtype and awkward shapes, atomic saves and writer
// validation, and interoperability with Python's safetensors package. Malformed files and
// the corruption sweep are in test_safetensors_hostile.cpp.
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
