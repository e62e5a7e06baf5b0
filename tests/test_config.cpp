// Config files and --set overrides (io/config.h): strict keys (no dotted or empty names
// that would be silently ignored), UTF-8 values only, a nesting limit, short excerpts of
// bad values in errors, and files that must be regular and small.
#include "io/config.h"

#include <filesystem>
#include <fstream>

#include "test_support.h"

namespace moe {
namespace {

TEST(Config, DottedTopLevelKeyIsRefusedNotIgnored) {
    // "train.steps" at the top level matched the dotted name in finish() and was ignored.
    EXPECT_TRUE(test::throws_error_with([] { io::Config c(R"({"train.steps": 5})", "run.json"); },
                                        {"run.json", "'train.steps'", "contains '.'"}));
    EXPECT_TRUE(
        test::throws_error_with([] { io::Config c(R"({"train": {"lr.max": 5}})", "run.json"); },
                                {"'lr.max'", "in section 'train'"}));
    EXPECT_TRUE(test::throws_error_with([] { io::Config c(R"({"": 1})", "run.json"); },
                                        {"run.json", "empty key"}));
}

// section() hands a whole subtree to a reader that checks its own keys: every key under it
// counts as read, keys beside it still do not.
TEST(Config, SectionMarksItsKeysReadAndOnlyThose) {
    io::Config c(R"({"data": {"columns": {"numeric": ["a"], "x": {"y": 1}}, "path": "p"}})", "t");
    const nlohmann::json cols = c.section("data.columns");
    EXPECT_EQ(cols["numeric"][0], "a");
    EXPECT_TRUE(c.section("data.missing").is_null());
    EXPECT_TRUE(test::throws_error_with([&] { c.finish(); }, {"data.path"}));
    c.get<std::string>("data.path", "");
    c.finish();
}

TEST(Config, SetWithEmptyKeyPartsIsRefused) {
    for (const char* bad : {".train.steps=7", "train..steps=7", "train.steps.=7", ".=1"}) {
        io::Config c;
        EXPECT_TRUE(test::throws_error_with([&] { c.set(bad); }, {"--set", "is not a key"})) << bad;
    }
    io::Config c;
    EXPECT_TRUE(
        test::throws_error_with([&] { c.set("train={\"steps.x\": 1}"); }, {"contains '.'"}));
    c.set("train.steps=7");
    EXPECT_EQ(c.get<int64_t>("train.steps", 0), 7);
    c.finish();
}

TEST(Config, SetKeyOfManyPartsIsRefused) {
    std::string key = "a";
    for (int i = 0; i < 60000; ++i) key += ".a";
    io::Config c;
    EXPECT_TRUE(test::throws_error_with([&] { c.set(key + "=1"); },
                                        {"--set", "key has 60001 parts", "32 levels"}));
    EXPECT_TRUE(c.doc().empty());
}

TEST(Config, SetValueMustBeUtf8) {
    io::Config c;
    EXPECT_TRUE(test::throws_error_with([&] { c.set("data.path=/tmp/caf\xe9.txt"); },
                                        {"--set", "not valid UTF-8", "\\xe9"}));
    c.set("data.path=/tmp/caf\xc3\xa9.txt");
    EXPECT_EQ(c.get<std::string>("data.path", ""), "/tmp/caf\xc3\xa9.txt");
}

TEST(Config, DeepNestingIsAnErrorInFilesAndOverrides) {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    EXPECT_TRUE(
        test::throws_error_with([&] { io::Config c("{\"model\": " + deep + "}", "deep.json"); },
                                {"deep.json", "nested deeper than 32 levels"}));
    io::Config c;
    EXPECT_TRUE(test::throws_error_with([&] { c.set("model.x=" + deep); },
                                        {"--set model.x", "nested deeper"}));
}

TEST(Config, TypeErrorsQuoteAShortExcerpt) {
    std::string big = "[";
    for (int i = 0; i < 10000; ++i) big += std::to_string(i) + ",";
    big += "0]";
    io::Config c("{\"train\": {\"steps\": " + big + "}}", "big.json");
    const std::string msg = test::error_of([&] { c.get<int64_t>("train.steps", 0); });
    EXPECT_NE(msg.find("big.json: key 'train.steps' must be an integer"), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 200u) << msg;
}

TEST(Config, FileMustBeARegularFile) {
    EXPECT_TRUE(test::throws_error_with([] { io::Config::from_file("/dev/zero"); },
                                        {"/dev/zero", "config file", "a character device"}));
    const auto dir = std::filesystem::temp_directory_path();
    EXPECT_TRUE(test::throws_error_with([&] { io::Config::from_file(dir.string()); },
                                        {dir.string(), "a directory"}));
}

}  // namespace
}  // namespace moe
