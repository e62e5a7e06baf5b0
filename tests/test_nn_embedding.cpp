// Embedding: forward copies rows, backward scatters with repeated ids accumulating (checked
// by hand, by finite differences and against torch.nn.functional.embedding), and an id
// outside [0, V) is an error naming the position and the id.
#include <string>

#include "nn/embedding.h"
#include "test_support.h"

namespace moe {
namespace {

TEST(Embedding, ForwardCopiesRows) {
    const int64_t V = 5, C = 3;
    std::vector<float> table(size_t(V * C));
    for (size_t i = 0; i < table.size(); ++i) table[i] = float(i);
    const std::vector<int32_t> ids = {4, 0, 4, 2};
    std::vector<float> out(ids.size() * C, -1.0f);
    nn::embedding_forward(out.data(), ids.data(), table.data(), int64_t(ids.size()), V, C);
    EXPECT_EQ(out, (std::vector<float>{12, 13, 14, 0, 1, 2, 12, 13, 14, 6, 7, 8}));
}

TEST(Embedding, RepeatedIdsAccumulate) {
    const int64_t V = 4, C = 2;
    const std::vector<int32_t> ids = {1, 3, 1, 1};
    const std::vector<double> d_out = {1, 2, 10, 20, 100, 200, 1000, 2000};
    std::vector<double> d_table(size_t(V * C), 0.5);  // nonzero start: the backward adds
    nn::embedding_backward(d_table.data(), d_out.data(), ids.data(), int64_t(ids.size()), V, C);
    EXPECT_EQ(d_table, (std::vector<double>{0.5, 0.5, 1101.5, 2202.5, 0.5, 0.5, 10.5, 20.5}));
    // Twice from zero is exactly twice once.
    std::vector<double> once(size_t(V * C), 0.0), twice(size_t(V * C), 0.0);
    nn::embedding_backward(once.data(), d_out.data(), ids.data(), int64_t(ids.size()), V, C);
    for (int k = 0; k < 2; ++k)
        nn::embedding_backward(twice.data(), d_out.data(), ids.data(), int64_t(ids.size()), V, C);
    for (auto& v : once) v *= 2;
    EXPECT_EQ(twice, once);
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
    const int64_t V = 6, C = 4;
    const std::vector<int32_t> ids = {2, 5, 2, 0, 2, 5, 1};
    const int64_t N = int64_t(ids.size());
    auto table = test::random_normal(size_t(V * C), 1);
    const auto w = test::random_normal(size_t(N * C), 2);
    std::vector<double> out(size_t(N * C));
    auto loss = [&] {
        nn::embedding_forward(out.data(), ids.data(), table.data(), N, V, C);
        return test::weighted_sum(out, w);
    };
    const auto numeric = test::numeric_gradient(loss, table.data(), table.size());
    std::vector<double> d_table(table.size(), 0.0);
    nn::embedding_backward(d_table.data(), w.data(), ids.data(), N, V, C);
    EXPECT_TRUE(test::all_close(d_table, numeric, 1e-8, 1e-7));
    // Row 3 and 4 are never looked up: their gradient is exactly zero.
    for (int64_t c = 0; c < C; ++c) {
        EXPECT_EQ(d_table[size_t(3 * C + c)], 0.0);
        EXPECT_EQ(d_table[size_t(4 * C + c)], 0.0);
    }
}

TEST(Embedding, OutOfRangeIdIsAnErrorNamingPositionAndId) {
    const int64_t V = 5, C = 2;
    std::vector<float> table(size_t(V * C), 1.0f), out(8, -1.0f), d_table(size_t(V * C), 0.0f);
    const std::vector<int32_t> too_big = {0, 1, 7, 2};
    std::string msg = test::error_of(
        [&] { nn::embedding_forward(out.data(), too_big.data(), table.data(), 4, V, C); });
    EXPECT_NE(msg.find("id 7"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("5"), std::string::npos) << msg;  // V
    EXPECT_EQ(out, std::vector<float>(8, -1.0f)) << "nothing is written before the check";

    const std::vector<int32_t> negative = {3, -1};
    msg = test::error_of(
        [&] { nn::embedding_backward(d_table.data(), out.data(), negative.data(), 2, V, C); });
    EXPECT_NE(msg.find("id -1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 1"), std::string::npos) << msg;
    EXPECT_EQ(d_table, std::vector<float>(size_t(V * C), 0.0f));

    const std::vector<int32_t> exactly_v = {5};
    EXPECT_THROW(nn::embedding_forward(out.data(), exactly_v.data(), table.data(), 1, V, C), Error);
}

TEST(Embedding, MatchesTorch) {
    test::Fixture fx("embedding");
    const auto ids64 = fx.get_int("ids");
    const std::vector<int32_t> ids(ids64.begin(), ids64.end());
    const auto table = fx.get("table"), dy = fx.get("dy");
    const int64_t N = int64_t(ids.size()), V = fx.shape("table")[0], C = fx.shape("table")[1];
    std::vector<double> y(size_t(N * C)), d_table(table.size(), 0.0);
    nn::embedding_forward(y.data(), ids.data(), table.data(), N, V, C);
    EXPECT_EQ(y, fx.get("y"));  // a copy is exact
    nn::embedding_backward(d_table.data(), dy.data(), ids.data(), N, V, C);
    EXPECT_TRUE(test::all_close(d_table, fx.get("d_table"), 1e-14, 1e-14));

    // The float path: the copy is exact in float, the sums of up to 3 rows within 2 ulp.
    auto tf = test::to_f32(table), dyf = test::to_f32(dy);
    std::vector<float> yf(size_t(N * C)), d_tf(table.size(), 0.0f);
    nn::embedding_forward(yf.data(), ids.data(), tf.data(), N, V, C);
    EXPECT_EQ(yf, test::to_f32(fx.get("y")));
    nn::embedding_backward(d_tf.data(), dyf.data(), ids.data(), N, V, C);
    EXPECT_TRUE(test::all_close(d_tf, fx.get("d_table"), 1e-6, 1e-6));
}

}  // namespace
}  // namespace moe
