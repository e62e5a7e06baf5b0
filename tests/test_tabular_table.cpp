// The tabular schema, encoding and rows (tabular/tabular_table.h): schema JSON and its
// errors, reading a CSV file by header names, bad rows (errors naming file, line and
// column, or skipped and counted), the fitted vocabulary, hashing and standardisation, the
// encoding's JSON, and encoding a second file with the first one's encoding.
#include "tabular/tabular_table.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "test_support.h"

namespace moe::tabular {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class TabularTable : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_tabular_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string write(const std::string& text, const std::string& name = "t.csv") const {
        const std::string p = (dir_ / name).string();
        std::ofstream(p, std::ios::binary).write(text.data(), std::streamsize(text.size()));
        return p;
    }

    fs::path dir_;
};

// color (categorical), size (numeric), label (binary target).
TabularSchema small_schema() {
    return schema_from_json(json::parse(R"({"categorical": ["color"], "numeric": ["size"],
                                            "targets": [{"name": "label"}]})"),
                            "test");
}

// ---------------------------------------------------------------------------------------
// Schema JSON.

TEST(TabularSchema, JsonRoundTrip) {
    const json j = json::parse(R"({
        "categorical": [{"name": "workclass", "embed_dim": 8}, {"name": "user", "hash_buckets": 4096},
                        {"name": "zip", "embed_dim": 4, "min_count": 3}, "plain"],
        "numeric": ["age", {"name": "hours"}, {"name": "gain", "transform": "log1p"}],
        "targets": [{"name": "income_50k", "kind": "binary", "weight": 1.0},
                    {"name": "rating", "kind": "regression", "weight": 0.5}],
        "bad_rows": "skip"})");
    const TabularSchema s = schema_from_json(j, "cfg.json: data.columns");
    ASSERT_EQ(s.categorical.size(), 4u);
    EXPECT_EQ(s.categorical[0].name, "workclass");
    EXPECT_EQ(s.categorical[1].hash_buckets, 4096);
    EXPECT_EQ(s.categorical[1].embed_dim, 8);  // the default
    EXPECT_EQ(s.categorical[2].min_count, 3);
    EXPECT_EQ(s.categorical[3].name, "plain");
    ASSERT_EQ(s.numeric.size(), 3u);
    EXPECT_EQ(s.numeric[0].name, "age");
    EXPECT_EQ(s.numeric[1].name, "hours");
    EXPECT_EQ(s.numeric[1].transform, "none");
    EXPECT_EQ(s.numeric[2].transform, "log1p");
    ASSERT_EQ(s.n_tasks(), 2);
    EXPECT_EQ(s.targets[1].kind, TargetKind::regression);
    EXPECT_EQ(s.targets[1].weight, 0.5);
    EXPECT_TRUE(s.skip_bad_rows);

    const TabularSchema back = schema_from_json(to_json(s), "round trip");
    EXPECT_EQ(to_json(back), to_json(s));
    EXPECT_EQ(to_json(back)["bad_rows"], "skip");
    EXPECT_EQ(to_json(small_schema())["bad_rows"], "error");
    EXPECT_STREQ(target_kind_name(TargetKind::binary), "binary");
}

TEST(TabularSchema, ErrorsNameTheKey) {
    auto err = [](const std::string& text, std::initializer_list<std::string> parts) {
        return test::throws_error_with([&] { schema_from_json(json::parse(text), "cfg.json: d"); },
                                       parts);
    };
    const std::string tgt = R"("targets": [{"name": "y"}])";
    EXPECT_TRUE(err(R"({"categorical": [{"name": "a", "embed_dims": 4}], )" + tgt + "}",
                    {"cfg.json: d.categorical[0]", "unknown key \"embed_dims\""}));
    EXPECT_TRUE(err(R"({"numeric": ["a", {"nmae": "b"}], )" + tgt + "}",
                    {"d.numeric[1]", "unknown key \"nmae\""}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": [{"name": "y", "wieght": 2}]})",
                    {"d.targets[0]", "unknown key \"wieght\""}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "target": [{"name": "y"}]})",
                    {"cfg.json: d", "unknown key \"target\""}));
    EXPECT_TRUE(err(R"({"categorical": [{"embed_dim": 4}], )" + tgt + "}",
                    {"d.categorical[0]", "missing key \"name\""}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": [{"kind": "binary"}]})",
                    {"d.targets[0]", "missing key \"name\""}));
    EXPECT_TRUE(err(R"({"categorical": ["a"], "numeric": ["b", "a"], )" + tgt + "}",
                    {"d.numeric[1].name", "\"a\" is used twice", "d.categorical[0]"}));
    EXPECT_TRUE(err(R"({"numeric": ["y"], )" + tgt + "}", {"d.targets[0].name", "\"y\""}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": [{"name": "y", "kind": "multiclass"}]})",
                    {"d.targets[0].kind", "\"multiclass\""}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": [{"name": "y", "weight": 0}]})",
                    {"d.targets[0].weight", "must be > 0", "got 0"}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": [{"name": "y", "weight": -1.5}]})",
                    {"d.targets[0].weight", "-1.5"}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": [{"name": "y", "weight": "1"}]})",
                    {"d.targets[0].weight", "expected a number"}));
    EXPECT_TRUE(err(R"({"categorical": [{"name": "a", "embed_dim": 0}], )" + tgt + "}",
                    {"d.categorical[0].embed_dim", "got 0"}));
    EXPECT_TRUE(err(R"({"categorical": [{"name": "a", "embed_dim": 2.5}], )" + tgt + "}",
                    {"d.categorical[0].embed_dim", "expected an integer", "2.5"}));
    EXPECT_TRUE(err(R"({"categorical": [{"name": "a", "hash_buckets": -1}], )" + tgt + "}",
                    {"d.categorical[0].hash_buckets", "-1"}));
    EXPECT_TRUE(err(R"({"categorical": [{"name": "a", "min_count": 0}], )" + tgt + "}",
                    {"d.categorical[0].min_count", "got 0"}));
    EXPECT_TRUE(err(R"({"numeric": [""], )" + tgt + "}", {"d.numeric[0].name", "empty"}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "targets": []})", {"cfg.json: d", "no target"}));
    EXPECT_TRUE(err("{" + tgt + "}", {"cfg.json: d", "no input column"}));
    EXPECT_TRUE(err(R"({"numeric": ["a"], "bad_rows": "ignore", )" + tgt + "}",
                    {"d.bad_rows", "\"ignore\""}));
    EXPECT_TRUE(err(R"({"numeric": "a", )" + tgt + "}", {"d.numeric", "expected a list"}));
    EXPECT_TRUE(err("[1]", {"cfg.json: d", "expected an object"}));
    EXPECT_TRUE(err(R"({"numeric": [{"name": "a", "transform": "log"}], )" + tgt + "}",
                    {"d.numeric[0].transform", "\"log\""}));
    EXPECT_TRUE(err(R"({"numeric": [{"name": "a", "transform": 1}], )" + tgt + "}",
                    {"d.numeric[0].transform"}));

    TabularSchema s = small_schema();
    s.targets[0].weight = 0;
    EXPECT_TRUE(test::throws_error_with([&] { s.validate(); },
                                        {"data.columns.targets[0].weight", "label"}));
}

// ---------------------------------------------------------------------------------------
// Reading rows.

// transform "log1p" applies log(1 + x) as the row is read, before the standardisation is
// fitted; a value <= -1 (outside log1p's domain) is a bad row naming file, line and column.
TEST_F(TabularTable, Log1pTransformAppliesBeforeStandardising) {
    TabularSchema s = small_schema();
    s.numeric[0].transform = "log1p";
    const RawTable t = read_table(s, write("color,size,label\nred,0,0\nred,99999,1\n"), true);
    EXPECT_EQ(t.nums, (std::vector<double>{0.0, std::log1p(99999.0)}));
    const TabularEncoding e = fit_encoding(s, t);
    EXPECT_DOUBLE_EQ(e.mean[0], std::log1p(99999.0) / 2);
    EXPECT_TRUE(
        test::throws_error_with([&] { read_table(s, write("color,size,label\nred,-1,0\n"), true); },
                                {"t.csv:2:", "\"size\"", "log1p", "-1"}));
}

TEST_F(TabularTable, ColumnsAreFoundByNameInAnyOrderAndExtrasIgnored) {
    const std::string p = write(
        "id,label,note, size ,color\n"
        "1,1,x,2.5,red\n"
        "2,0,\"a, b\", -1e1 ,\n"
        "3,1,,,blue\n");
    const RawTable t = read_table(small_schema(), p, true);
    EXPECT_EQ(t.path, p);
    ASSERT_EQ(t.n, 3);
    EXPECT_EQ(t.cats, (std::vector<std::string>{"red", "", "blue"}));
    ASSERT_EQ(t.nums.size(), 3u);
    EXPECT_EQ(t.nums[0], 2.5);
    EXPECT_EQ(t.nums[1], -10.0);
    EXPECT_TRUE(std::isnan(t.nums[2]));
    EXPECT_EQ(t.targets, (std::vector<float>{1, 0, 1}));
    EXPECT_EQ(t.lines, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(t.skipped, 0);

    // For scoring, target columns need not exist.
    const std::string q = write("color,size\ngreen,1\n", "score.csv");
    const RawTable u = read_table(small_schema(), q, false);
    EXPECT_EQ(u.n, 1);
    EXPECT_TRUE(u.targets.empty());
    EXPECT_TRUE(test::throws_error_with([&] { read_table(small_schema(), q, true); },
                                        {q, "target column \"label\"", "not in the header"}));
}

TEST_F(TabularTable, MissingColumnOrFileIsAnError) {
    const std::string p = write("color,label,weight\nred,1,3\n");
    EXPECT_TRUE(test::throws_error_with(
        [&] { read_table(small_schema(), p, true); },
        {p, "numeric column \"size\"", "not in the header", "color, label, weight"}));
    const std::string e = write("", "empty.csv");
    EXPECT_TRUE(test::throws_error_with([&] { read_table(small_schema(), e, true); },
                                        {e, "empty CSV file"}));
    const std::string d = write("color,size,label,size\nred,1,1,2\n", "dup.csv");
    EXPECT_TRUE(test::throws_error_with([&] { read_table(small_schema(), d, true); },
                                        {d, "\"size\"", "twice"}));
    const std::string m = (dir_ / "missing.csv").string();
    EXPECT_TRUE(
        test::throws_error_with([&] { read_table(small_schema(), m, true); }, {m, "cannot open"}));
}

TEST_F(TabularTable, BadRowsNameFileLineAndColumn) {
    const std::string head = "color,size,label\nred,1,0\n";
    struct Case {
        std::string row;
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases = {
        {"red,1\n", {":3:", "2 fields, the header has 3"}},
        {"red,1,0,9\n", {":3:", "4 fields"}},
        {"red,abc,1\n", {":3:", "\"size\"", "'abc'"}},
        {"red,1.5x,1\n", {":3:", "\"size\"", "'1.5x'"}},
        {"red,nan,1\n", {":3:", "\"size\"", "'nan'"}},
        {"red,inf,1\n", {":3:", "\"size\"", "'inf'"}},
        {"red,1e999,1\n", {":3:", "\"size\"", "'1e999'"}},
        {"red,+1,1\n", {":3:", "\"size\"", "'+1'"}},
        {"red,1,\n", {":3:", "target column \"label\"", "empty"}},
        {"red,1,2\n", {":3:", "\"label\"", "expected 0 or 1", "'2'"}},
        {"red,1,1.0\n", {":3:", "\"label\"", "'1.0'"}},
    };
    for (const Case& c : cases) {
        const std::string p = write(head + c.row);
        std::vector<std::string> parts = c.parts;
        parts[0] = p + parts[0];
        try {
            read_table(small_schema(), p, true);
            ADD_FAILURE() << "no error for " << c.row;
        } catch (const Error& e) {
            for (const std::string& part : parts)
                EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
                    << e.what() << " lacks " << part;
        }
    }
    // A regression target takes any finite number.
    TabularSchema s = small_schema();
    s.targets[0].kind = TargetKind::regression;
    const RawTable t = read_table(s, write(head + "blue,2, 3.25 \n"), true);
    EXPECT_EQ(t.targets, (std::vector<float>{0, 3.25f}));
    EXPECT_TRUE(test::throws_error_with([&] { read_table(s, write(head + "blue,2,x\n"), true); },
                                        {":3:", "\"label\"", "'x'"}));
}

TEST_F(TabularTable, SkippedBadRowsAreDroppedAndCounted) {
    TabularSchema s = small_schema();
    s.skip_bad_rows = true;
    const std::string p = write(
        "color,size,label\n"
        "red,1,0\n"
        "green,x,1\n"
        "blue,2\n"
        "\n"
        "pink,3,\n"
        "gray,4,7\n"
        "teal,5,1\n");
    const RawTable t = read_table(s, p, true);
    EXPECT_EQ(t.n, 2);
    EXPECT_EQ(t.skipped, 4);
    EXPECT_EQ(t.cats, (std::vector<std::string>{"red", "teal"}));
    EXPECT_EQ(t.nums, (std::vector<double>{1, 5}));
    EXPECT_EQ(t.targets, (std::vector<float>{0, 1}));
    EXPECT_EQ(t.lines, (std::vector<int64_t>{2, 8}));
}

// ---------------------------------------------------------------------------------------
// Fitting and encoding.

// A table of categorical values only (one column "c"), with a numeric column "x".
RawTable raw(const std::vector<std::string>& cats, const std::vector<double>& nums) {
    RawTable t;
    t.path = "mem.csv";
    t.n = int64_t(cats.size());
    t.cats = cats;
    t.nums = nums;
    t.targets.assign(cats.size(), 0.0f);
    for (int64_t i = 0; i < t.n; ++i) t.lines.push_back(i + 2);
    return t;
}

TabularSchema schema_cx(int64_t min_count = 1, int64_t buckets = 0) {
    TabularSchema s;
    s.categorical.push_back({"c", 4, buckets, min_count});
    s.numeric.push_back({"x"});
    s.targets.push_back({"y", TargetKind::binary, 1.0});
    return s;
}

TEST(TabularEncoding, VocabularyByCountThenValueWhateverTheRowOrder) {
    std::vector<std::string> cats = {"b", "a", "c", "b", "", "d", "c", "b", "a", "e", "", "d"};
    // counts: b 3, a 2, c 2, d 2, e 1; empty fields are not values.
    const std::vector<std::string> want = {"b", "a", "c", "d", "e"};
    std::mt19937 gen(5);
    for (int trial = 0; trial < 5; ++trial) {
        const RawTable t = raw(cats, std::vector<double>(cats.size(), 1.0));
        const TabularEncoding e = fit_encoding(schema_cx(), t);
        EXPECT_EQ(e.vocab[0], want) << "trial " << trial;
        EXPECT_EQ(e.table_rows(schema_cx(), 0), 6);
        std::shuffle(cats.begin(), cats.end(), gen);
    }
    const TabularEncoding e2 =
        fit_encoding(schema_cx(2), raw(cats, std::vector<double>(cats.size(), 1.0)));
    EXPECT_EQ(e2.vocab[0], (std::vector<std::string>{"b", "a", "c", "d"}));
    const TabularEncoding e4 =
        fit_encoding(schema_cx(4), raw(cats, std::vector<double>(cats.size(), 1.0)));
    EXPECT_TRUE(e4.vocab[0].empty());
    EXPECT_EQ(e4.table_rows(schema_cx(4), 0), 1);
}

TEST(TabularEncoding, VocabularyMustBeUtf8) {
    // Latin-1 "é" (0xE9) alone: the vocabulary could not be written as JSON.
    const RawTable t = raw({"ok", "caf\xE9", "ok"}, {1, 2, 3});
    EXPECT_TRUE(test::throws_error_with([&] { fit_encoding(schema_cx(), t); },
                                        {"mem.csv:3:", "\"c\"", "caf\\xe9", "UTF-8"}));
    // Below min_count it is never written: no error. Hashed columns keep no vocabulary.
    EXPECT_EQ(fit_encoding(schema_cx(2), t).vocab[0], (std::vector<std::string>{"ok"}));
    EXPECT_TRUE(fit_encoding(schema_cx(1, 8), t).vocab[0].empty());
    EXPECT_EQ(fit_encoding(schema_cx(), raw({"caf\xC3\xA9"}, {1})).vocab[0][0], "caf\xC3\xA9");
}

TEST(TabularEncoding, RowsOfValuesUnseenAndEmpty) {
    const TabularSchema s = schema_cx(2);
    const RawTable train = raw({"x", "y", "x", "y", "y", "z"}, {1, 2, 3, 4, 5, 6});
    const TabularEncoding e = fit_encoding(s, train);
    ASSERT_EQ(e.vocab[0], (std::vector<std::string>{"y", "x"}));
    const RawTable test = raw({"x", "y", "z", "w", "", " y"}, {0, 0, 0, 0, 0, 0});
    const EncodedRows r = encode(s, e, test);
    EXPECT_EQ(r.n, 6);
    // z is below min_count, w unseen, "" empty, " y" not "y": all the OOV row 0.
    EXPECT_EQ(r.cats, (std::vector<int32_t>{2, 1, 0, 0, 0, 0}));
    EXPECT_EQ(r.targets, test.targets);
}

TEST(TabularEncoding, HashedColumns) {
    // FNV-1a 64 of "hello" is 0xa430d84680aabd0b = 11831194018420276491 (the published test
    // vector); % 1000 = 491.
    EXPECT_EQ(hashed_row("hello", 1000), 492);
    EXPECT_EQ(hashed_row("", 7), int32_t(1 + 14695981039346656037ull % 7));  // the offset basis
    EXPECT_EQ(hashed_row("anything", 1), 1);
    for (int i = 0; i < 1000; ++i) {
        const int32_t r = hashed_row("user" + std::to_string(i), 37);
        EXPECT_GE(r, 1);
        EXPECT_LE(r, 37);
    }
    const TabularSchema s = schema_cx(1, 16);
    const TabularEncoding e = fit_encoding(s, raw({"a", "b", "a"}, {1, 2, 3}));
    EXPECT_TRUE(e.vocab[0].empty());
    EXPECT_EQ(e.table_rows(s, 0), 17);
    const EncodedRows r = encode(s, e, raw({"a", "", "never seen"}, {0, 0, 0}));
    EXPECT_EQ(r.cats, (std::vector<int32_t>{hashed_row("a", 16), 0, hashed_row("never seen", 16)}));
}

TEST(TabularEncoding, NumericStandardisedWithTrainingStatistics) {
    const double nan = std::nan("");
    const TabularSchema s = schema_cx();
    const TabularEncoding e = fit_encoding(s, raw({"a", "a", "a", "a", "a"}, {2, 4, nan, 4, 6}));
    EXPECT_DOUBLE_EQ(e.mean[0], 4.0);
    EXPECT_DOUBLE_EQ(e.std[0], std::sqrt(2.0));  // population std of 2, 4, 4, 6
    const EncodedRows r = encode(s, e, raw({"a", "a", "a"}, {4 + std::sqrt(2.0), nan, 1}));
    EXPECT_NEAR(r.nums[0], 1.0f, 1e-6);
    EXPECT_EQ(r.nums[1], 0.0f);  // empty: the mean
    EXPECT_NEAR(r.nums[2], -3.0 / std::sqrt(2.0), 1e-6);
    // A constant column: std 0 is taken as 1.
    const TabularEncoding c = fit_encoding(s, raw({"a", "a"}, {7, 7}));
    EXPECT_EQ(c.mean[0], 7.0);
    EXPECT_EQ(c.std[0], 1.0);
    EXPECT_EQ(encode(s, c, raw({"a"}, {9})).nums[0], 2.0f);
    // A column with every field empty: mean 0, std 1.
    const TabularEncoding n = fit_encoding(s, raw({"a", "a"}, {nan, nan}));
    EXPECT_EQ(n.mean[0], 0.0);
    EXPECT_EQ(n.std[0], 1.0);
    // Nothing to fit on.
    EXPECT_TRUE(test::throws_error_with([&] { fit_encoding(s, raw({}, {})); },
                                        {"mem.csv", "no data rows"}));
}

TEST(TabularEncoding, JsonRoundTripAndErrors) {
    TabularSchema s = schema_cx();
    s.categorical.push_back({"h", 4, 32, 1});
    RawTable t = raw({}, {});
    t.n = 3;
    t.cats = {"p", "u", "q", "u", "p", "v"};
    t.nums = {1, 2, 3};
    const TabularEncoding e = fit_encoding(s, t);
    const json j = to_json(e);
    const TabularEncoding back = encoding_from_json(json::parse(j.dump()), s, "ckpt");
    EXPECT_EQ(back.vocab, e.vocab);
    EXPECT_EQ(back.mean, e.mean);  // doubles survive dump and parse exactly
    EXPECT_EQ(back.std, e.std);
    EXPECT_EQ(to_json(back), j);

    auto err = [&](json bad, std::initializer_list<std::string> parts) {
        return test::throws_error_with([&] { encoding_from_json(bad, s, "ckpt: encoding"); },
                                       parts);
    };
    json bad = j;
    bad["numeric"][0]["std"] = 0;
    EXPECT_TRUE(err(bad, {"ckpt: encoding.numeric[0].std", "> 0"}));
    bad = j;
    bad["categorical"][0]["vocab"].push_back("p");
    EXPECT_TRUE(err(bad, {"ckpt: encoding.categorical[0].vocab[2]", "twice"}));
    bad = j;
    bad["categorical"].erase(1);
    EXPECT_TRUE(err(bad, {"ckpt: encoding.categorical", "1 columns, the schema has 2"}));
    bad = j;
    bad["categorical"][1]["vocab"] = {"x"};
    EXPECT_TRUE(err(bad, {"ckpt: encoding.categorical[1]", "hashed column \"h\""}));
    bad = j;
    bad["numeric"][0]["scale"] = 1;
    EXPECT_TRUE(err(bad, {"ckpt: encoding.numeric[0]", "unknown key \"scale\""}));
}

TEST_F(TabularTable, SecondFileEncodedWithTheFirstFilesEncoding) {
    const TabularSchema s = small_schema();
    const RawTable train = read_table(s,
                                      write("color,size,label\n"
                                            "red,1,0\nblue,3,1\nred,5,1\n",
                                            "train.csv"),
                                      true);
    const TabularEncoding e = fit_encoding(s, train);
    // Columns in another order, a colour never seen in training.
    const RawTable test =
        read_table(s, write("label,size,color\n1,3,blue\n0,7,green\n", "test.csv"), true);
    const EncodedRows r = encode(s, encoding_from_json(to_json(e), s, "saved"), test);
    ASSERT_EQ(r.n, 2);
    EXPECT_EQ(r.cats, (std::vector<int32_t>{2, 0}));  // red 1, blue 2
    const double sd = std::sqrt(8.0 / 3.0);
    EXPECT_NEAR(r.nums[0], 0.0, 1e-6);
    EXPECT_NEAR(r.nums[1], 4.0 / sd, 1e-6);
    EXPECT_EQ(r.targets, (std::vector<float>{1, 0}));
}

TEST_F(TabularTable, HundredThousandRowsReadQuickly) {
    // MovieLens-100k's size: 100k rows of 3 categorical, 2 numeric and 2 target columns.
    std::string text = "user,item,genre,age,ts,clicked,rating\n";
    std::mt19937 gen(1);
    // Appended piece by piece: GCC 12 warns (-Wrestrict, wrongly) on "," + to_string(...).
    auto field = [&](const char* before, uint64_t v) {
        text += before;
        text += std::to_string(v);
    };
    for (int i = 0; i < 100000; ++i) {
        field("u", gen() % 943);
        field(",i", gen() % 1682);
        text += i % 3 ? ",Drama" : ",\"Comedy, Romance\"";
        field(",", gen() % 80);
        field(",", 874724710 + gen() % 1000000);
        field(",", gen() % 2);
        field(",", 1 + gen() % 5);
        text += '\n';
    }
    const std::string p = write(text);
    const TabularSchema s = schema_from_json(json::parse(R"({
        "categorical": ["user", {"name": "item", "hash_buckets": 2048}, "genre"],
        "numeric": ["age", "ts"],
        "targets": [{"name": "clicked"}, {"name": "rating", "kind": "regression"}]})"),
                                             "test");
    const auto t0 = std::chrono::steady_clock::now();
    const RawTable t = read_table(s, p, true);
    const TabularEncoding e = fit_encoding(s, t);
    const EncodedRows r = encode(s, e, t);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.n, 100000);
    EXPECT_EQ(e.vocab[2], (std::vector<std::string>{"Drama", "Comedy, Romance"}));
    EXPECT_LT(sec, 1.0 * test::time_limit_scale()) << "read, fit and encode took " << sec << " s";
}

}  // namespace
}  // namespace moe::tabular
