// Checkpoints: arenas with prefixes round trip exactly with their metadata; a missing
// tensor, another shape or dtype, extra tensors and a file of another model are rejected
// with errors that name the file and the tensor, and leave the arenas untouched.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/rng.h"
#include "io/safetensors.h"
#include "test_support.h"
#include "train/checkpoint.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using train::load_checkpoint;
using train::save_checkpoint;

// A small model's parameters: names are module paths, one bf16 entry, a scalar.
Arena make_params() {
    Arena a;
    a.add("embed", {7, 4});
    a.add("layers.0.attn.wq", {4, 4});
    a.add("layers.0.norm.g", {4});
    a.add("layers.1.mlp.w1", {3, 4}, DType::bf16);
    a.add("scale", {});
    a.allocate();
    return a;
}

// Every byte of every entry from a seeded generator, so a swapped or shifted tensor shows.
void fill(const Arena& a, uint64_t seed) {
    Rng rng(seed);
    for (size_t i = 0; i < a.entries().size(); ++i) {
        Tensor t = a.get(int(i));
        auto* p = static_cast<uint8_t*>(t.data);
        for (size_t k = 0; k < t.nbytes(); ++k) p[k] = uint8_t(rng.below(256));
    }
}

bool same_bytes(const Arena& a, const Arena& b) {
    if (a.entries().size() != b.entries().size()) return false;
    for (size_t i = 0; i < a.entries().size(); ++i) {
        Tensor x = a.get(int(i)), y = b.get(int(i));
        if (x.nbytes() != y.nbytes() || std::memcmp(x.data, y.data, x.nbytes()) != 0) return false;
    }
    return true;
}

class Checkpoint : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_ckpt_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        path_ = (dir_ / "ckpt.safetensors").string();
    }
    void TearDown() override { fs::remove_all(dir_); }

    fs::path dir_;
    std::string path_;
};

TEST_F(Checkpoint, RoundTripRestoresEveryArenaAndTheMetadata) {
    Arena params = make_params();
    Arena m = params.clone_layout(), v = params.clone_layout();
    fill(params, 1);
    fill(m, 2);
    fill(v, 3);
    const std::map<std::string, std::string> meta = {
        {"config", R"({"dim": 4, "layers": 2})"}, {"tokenizer", "a b c"}, {"step", "42"}};
    save_checkpoint(path_, {{"", &params}, {"optim.m.", &m}, {"optim.v.", &v}}, meta);

    // Tensors carry the module paths, so any safetensors tool can read them.
    io::SafetensorsFile f(path_);
    EXPECT_EQ(f.names().size(), 15u);
    EXPECT_EQ(f.info("layers.0.attn.wq").shape, (Shape{4, 4}));
    EXPECT_EQ(f.info("optim.v.layers.1.mlp.w1").dtype, DType::bf16);
    EXPECT_EQ(f.info("optim.m.scale").shape.rank, 0);

    Arena params2 = make_params();
    Arena m2 = params2.clone_layout(), v2 = params2.clone_layout();
    const auto got = load_checkpoint(path_, {{"", &params2}, {"optim.m.", &m2}, {"optim.v.", &v2}});
    EXPECT_EQ(got, meta);
    EXPECT_TRUE(same_bytes(params2, params));
    EXPECT_TRUE(same_bytes(m2, m));
    EXPECT_TRUE(same_bytes(v2, v));
    EXPECT_FALSE(same_bytes(m2, v2));  // the prefixes kept the groups apart
}

TEST_F(Checkpoint, ParametersAloneLoadFromATrainingCheckpointWhenOptimizerIsIgnored) {
    Arena params = make_params();
    Arena m = params.clone_layout();
    fill(params, 4);
    fill(m, 5);
    save_checkpoint(path_, {{"", &params}, {"optim.m.", &m}});

    Arena only = make_params();
    // Without the ignore list, prefix "" claims the optimizer tensors as unexpected.
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &only}});
        },
        {path_, "5 unexpected tensor(s)", "'optim.m.embed'"}));
    load_checkpoint(path_, {{"", &only}}, {"optim."});
    EXPECT_TRUE(same_bytes(only, params));
}

TEST_F(Checkpoint, MissingTensorNamesFileAndTensorAndLeavesArenasUnchanged) {
    Arena params = make_params();
    fill(params, 6);
    save_checkpoint(path_, {{"", &params}});

    Arena params2 = make_params(), m2 = params2.clone_layout();
    fill(params2, 7);
    Arena before = params2.clone_layout();
    std::memcpy(before.get(0).data, params2.get(0).data, params2.bytes());
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &params2}, {"optim.m.", &m2}});
        },
        {path_, "no tensor 'optim.m.embed'", "f32[7, 4]"}));
    // Checked before copying: the parameters that were present were not loaded.
    EXPECT_TRUE(same_bytes(params2, before));
}

// A checkpoint written by a run that diverged (or damaged on disk) must not load: one NaN
// weight makes every later loss NaN, and a resumed run would save it again.
TEST_F(Checkpoint, NonFiniteWeightIsRejectedByNameAndLeavesArenasUnchanged) {
    for (const float bad : {std::nanf(""), INFINITY, -INFINITY}) {
        Arena params = make_params();
        fill(params, 6);
        for (size_t i = 0; i < params.entries().size(); ++i) {  // finite random values
            Tensor t = params.get(int(i));
            if (t.dtype != DType::f32) continue;
            for (int64_t k = 0; k < t.numel(); ++k) t.ptr<float>()[k] = float(k) * 0.25f - 1;
        }
        params.get("layers.0.attn.wq").ptr<float>()[5] = bad;
        save_checkpoint(path_, {{"", &params}});

        Arena params2 = make_params();
        fill(params2, 7);
        Arena before = params2.clone_layout();
        std::memcpy(before.get(0).data, params2.get(0).data, params2.bytes());
        EXPECT_TRUE(test::throws_error_with(
            [&] {
                load_checkpoint(path_, {{"", &params2}});
            },
            {path_, "'layers.0.attn.wq'", "element 5"}))
            << bad;
        EXPECT_TRUE(same_bytes(params2, before));
    }
}

TEST_F(Checkpoint, WrongShapeNamesTensorAndBothShapes) {
    Arena a;
    a.add("layers.0.w", {3, 4});
    a.allocate();
    save_checkpoint(path_, {{"", &a}});
    Arena b;
    b.add("layers.0.w", {4, 3});
    b.allocate();
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &b}});
        },
        {path_, "'layers.0.w'", "f32[3, 4] in the checkpoint", "f32[4, 3] in the model"}));
}

TEST_F(Checkpoint, WrongDtypeNamesTensorAndBothDtypes) {
    Arena a;
    a.add("w", {2, 2}, DType::bf16);
    a.allocate();
    save_checkpoint(path_, {{"", &a}});
    Arena b;
    b.add("w", {2, 2});
    b.allocate();
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &b}});
        },
        {path_, "'w'", "bf16[2, 2] in the checkpoint", "f32[2, 2]"}));
}

TEST_F(Checkpoint, FileFromADifferentModelIsRejected) {
    Arena other;
    other.add("tok_embeddings", {7, 4});
    other.add("blocks.0.ffn", {4, 4});
    other.allocate();
    save_checkpoint(path_, {{"", &other}}, {{"config", "other"}});
    Arena params = make_params();
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &params}});
        },
        {path_, "no tensor 'embed'"}));
}

TEST_F(Checkpoint, LargerModelWithExtraLayersListsTheExtraTensors) {
    Arena big = make_params();
    Arena extra;
    extra.add("layers.2.attn.wq", {4, 4});
    extra.add("layers.2.norm.g", {4});
    extra.allocate();
    save_checkpoint(path_, {{"", &big}, {"", &extra}});
    Arena small = make_params();
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &small}});
        },
        {path_, "2 unexpected tensor(s)", "'layers.2.attn.wq'", "'layers.2.norm.g'"}));
}

TEST_F(Checkpoint, ExtraTensorUnderAGroupPrefixIsAnErrorOthersAreIgnored) {
    Arena params = make_params(), m = params.clone_layout(), stray;
    stray.add("extra", {2});
    stray.allocate();
    save_checkpoint(path_,
                    {{"model.", &params}, {"optim.m.", &m}, {"optim.m.", &stray}, {"ema.", &m}});
    Arena p2 = make_params(), m2 = p2.clone_layout();
    // "optim.m.extra" starts with a group's prefix but is not in its arena.
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"model.", &p2}, {"optim.m.", &m2}});
        },
        {path_, "1 unexpected tensor(s)", "'optim.m.extra'"}));
    // "ema.*" belongs to no group: ignored.
    load_checkpoint(path_, {{"model.", &p2}}, {});
    EXPECT_TRUE(same_bytes(p2, params));
}

TEST_F(Checkpoint, CollidingNamesAndUnallocatedArenasAreRejected) {
    Arena a = make_params(), b = make_params();
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            save_checkpoint(path_, {{"", &a}, {"", &b}});
        },
        {"tensor 'embed'", "given twice"}));
    Arena unallocated;
    unallocated.add("w", {2});
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            save_checkpoint(path_, {{"opt.", &unallocated}});
        },
        {"'opt.'", "not allocated"}));
    EXPECT_FALSE(fs::exists(path_));
    save_checkpoint(path_, {{"", &a}});
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &unallocated}});
        },
        {"not allocated"}));
}

TEST_F(Checkpoint, MissingFileNamesThePath) {
    Arena a = make_params();
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            load_checkpoint(path_, {{"", &a}});
        },
        {path_, "cannot open"}));
}

}  // namespace
}  // namespace moe
