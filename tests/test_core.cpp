// Core types: Shape, Tensor views, Arena, Rng, checks.
#include <cmath>
#include <cstdint>

#include "core/arena.h"
#include "core/check.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test_support.h"

namespace moe {
namespace {

TEST(Check, MessageNamesFileLineAndCondition) {
    const std::string msg = test::error_of([] {
        int rows = 3;
        MOE_CHECK(rows == 4, "linear: got ", rows, " rows");
    });
    EXPECT_NE(msg.find("test_core.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("linear: got 3 rows"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[rows == 4]"), std::string::npos) << msg;
    EXPECT_EQ(test::error_of([] { MOE_REQUIRE(1 + 1 == 3, "file.json: key 'x' bad"); }),
              "file.json: key 'x' bad");
    EXPECT_EQ(test::error_of([] { MOE_CHECK(true, "never"); }), "");
}

TEST(Tensor, ContiguousStridesReshapeSliceIndex) {
    std::vector<float> buf(24);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
    Tensor t(buf.data(), {2, 3, 4});
    EXPECT_EQ(t.numel(), 24);
    EXPECT_EQ(t.strides[0], 12);
    EXPECT_EQ(t.strides[1], 4);
    EXPECT_EQ(t.strides[2], 1);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.str(), "f32[2, 3, 4]");
    Tensor r = t.reshape({6, 4});
    EXPECT_EQ(r.ptr<float>()[5], 5.0f);
    Tensor s = r.slice(2, 5);
    EXPECT_EQ(s.shape, (Shape{3, 4}));
    EXPECT_EQ(s.ptr<float>()[0], 8.0f);
    Tensor row = t[1];
    EXPECT_EQ(row.shape, (Shape{3, 4}));
    EXPECT_EQ(row.ptr<float>()[0], 12.0f);
    EXPECT_NE(test::error_of([&] {
                  t.reshape({5, 5});
              }).find("cannot reshape f32[2, 3, 4] to [5, 5]"),
              std::string::npos);
    EXPECT_NE(test::error_of([&] { t.slice(1, 3); }).find("out of range"), std::string::npos);
    EXPECT_NE(test::error_of([&] { t.ptr<double>(); }).find("read as f64"), std::string::npos);
    EXPECT_NE(test::error_of([&] {
                  check_shape(t, {2, 4, 3}, "attention: x");
              }).find("attention: x: expected shape [2, 4, 3], got [2, 3, 4]"),
              std::string::npos);
}

TEST(Arena, AlignsEveryTensorAndKeepsOneLayout) {
    Arena a;
    const int x = a.add("x", {3});  // 12 bytes, next offset rounds up to 64
    const int w = a.add("w", {5, 7});
    const int ids = a.add("ids", {9}, DType::i32);
    a.allocate();
    for (int id : {x, w, ids})
        EXPECT_EQ(reinterpret_cast<uintptr_t>(a.get(id).data) % 64, 0u) << id;
    EXPECT_EQ(a.get("w").shape, (Shape{5, 7}));
    EXPECT_EQ(a.get(w).ptr<float>()[34], 0.0f);  // zero-filled
    Arena b = a.clone_layout();
    EXPECT_EQ(b.bytes(), a.bytes());
    EXPECT_EQ(static_cast<char*>(b.get(w).data) - static_cast<char*>(b.get(x).data),
              static_cast<char*>(a.get(w).data) - static_cast<char*>(a.get(x).data));
    EXPECT_NE(test::error_of([&] { a.get("nope"); }).find("no tensor named 'nope'"),
              std::string::npos);
    EXPECT_NE(test::error_of([&] { a.f32_data(); }).find("'ids' is i32"), std::string::npos);
}

TEST(Arena, RejectsDuplicatesAndLateDeclarations) {
    Arena a;
    a.add("w", {2});
    EXPECT_NE(test::error_of([&] { a.add("w", {3}); }).find("declared twice"), std::string::npos);
    a.allocate();
    EXPECT_NE(test::error_of([&] { a.add("v", {3}); }).find("after allocate"), std::string::npos);
}

TEST(Rng, SameSeedSameSequenceAndSaneMoments) {
    Rng a(5), b(5), c(6);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
    EXPECT_NE(Rng(5).next_u64(), c.next_u64());
    // The first value for seed 5 never changes: runs are reproducible across builds.
    EXPECT_EQ(Rng(5).next_u64(), 5320248114040590185ull);
    Rng r(1);
    double sum = 0, sq = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
        const double x = r.normal();
        sum += x;
        sq += x * x;
    }
    EXPECT_NEAR(sum / n, 0.0, 0.01);  // std error 1/sqrt(2e5) = 0.0022
    EXPECT_NEAR(sq / n, 1.0, 0.015);
    for (int i = 0; i < 1000; ++i) {
        const float u = r.uniform();
        EXPECT_TRUE(u >= 0.0f && u < 1.0f);
        EXPECT_LT(r.below(7), 7u);
    }
    EXPECT_NE(Rng(1).fork(0).next_u64(), Rng(1).fork(1).next_u64());
    EXPECT_EQ(Rng(1).fork(3).next_u64(), Rng(1).fork(3).next_u64());
}

TEST(DType, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
    // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
    EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
    // 1 + 3 * 2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even).
    EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(INFINITY)), INFINITY);
    EXPECT_EQ(dtype_size(DType::bf16), 2u);
}

}  // namespace
}  // namespace moe
