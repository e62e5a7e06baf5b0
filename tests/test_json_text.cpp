// JSON from users and files (io/json_text.h): a nesting limit checked before parsing, so a
// 100,000-level document is an error instead of a stack overflow; UTF-8 checks and escapes;
// short excerpts of values for messages.
#include "io/json_text.h"

#include "test_support.h"

namespace moe {
namespace {

std::string nested(int depth, char open = '[', char close = ']') {
    return std::string(size_t(depth), open) + std::string(size_t(depth), close);
}

TEST(JsonDepth, LimitIsExactAndNamesSourceAndByte) {
    EXPECT_NO_THROW(io::check_json_text(nested(io::kMaxJsonDepth), "doc"));
    EXPECT_TRUE(test::throws_error_with(
        [] { io::check_json_text(nested(io::kMaxJsonDepth + 1), "cfg.json"); },
        {"cfg.json", "nested deeper than 32 levels", "at byte 32"}));
    // Objects count as levels too.
    std::string objs;
    for (int i = 0; i <= io::kMaxJsonDepth; ++i) objs += "{\"a\":";
    objs += "1" + std::string(size_t(io::kMaxJsonDepth + 1), '}');
    EXPECT_TRUE(test::throws_error_with([&] { io::check_json_text(objs, "o"); }, {"o", "nested"}));
}

TEST(JsonDepth, HundredThousandLevelsIsAnErrorNotACrash) {
    for (const char* source : {"header", "config"})
        EXPECT_TRUE(test::throws_error_with([&] { io::parse_json(nested(100000), source); },
                                            {source, "nested deeper"}));
}

// Found by fuzzing: nlohmann's parser stops at a NUL byte, so a header "{...}\0garbage"
// parsed as its first part, and the key scan over the whole text then met the garbage.
TEST(JsonText, NulByteIsRefusedWhereverItIs) {
    for (const std::string& text : {std::string("{}\0{\"x\": 1}", 11),
                                   std::string("{\"a\0\": 1}", 9), std::string("\0", 1)}) {
        EXPECT_TRUE(test::throws_error_with([&] { io::check_json_text(text, "h"); },
                                            {"h: JSON text holds a NUL byte at byte"}))
            << io::escape_invalid_utf8(text);
        EXPECT_TRUE(test::throws_error_with([&] { io::parse_json(text, "h"); }, {"NUL byte"}));
    }
}

TEST(JsonDepth, BracketsInsideStringsDoNotCount) {
    const std::string s = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
    EXPECT_NO_THROW(io::check_json_text(s, "s"));
    const nlohmann::json j = io::parse_json(s, "s");
    EXPECT_EQ(j[0].get<std::string>().size(), 2001u);
}

TEST(ParseJson, ErrorsNameTheSourceAndStayShort) {
    const std::string long_token = "[" + std::string(1 << 20, 'x') + "]";
    const std::string msg = test::error_of([&] { io::parse_json(long_token, "tok.json"); });
    EXPECT_NE(msg.find("tok.json: not valid JSON"), std::string::npos) << msg.substr(0, 300);
    EXPECT_LT(msg.size(), 400u);
    EXPECT_TRUE(io::parse_json("// c\n{\"a\": 1}", "c", /*allow_comments=*/true).is_object());
    EXPECT_TRUE(test::throws_error_with([] { io::parse_json("// c\n{}", "c"); }, {"c"}));
}

TEST(TopLevelKeys, InWrittenOrderWithRepeatsAndEscapesDecoded) {
    const std::string text =
        R"({"b": {"x": 1, "y": [ "s", {"z": 2}]}, "a\"q": "v, \"w\": 3", "\u00e9": [],)"
        R"( "b": null, "k}": "{"})";
    ASSERT_NO_THROW(io::parse_json(text, "t"));
    EXPECT_EQ(io::top_level_keys(text),
              (std::vector<std::string>{"b", "a\"q", "\u00e9", "b", "k}"}));
    EXPECT_TRUE(io::top_level_keys("{}").empty());
    EXPECT_EQ(io::top_level_keys(" { \"only\" : 1 } "), std::vector<std::string>{"only"});
}

TEST(Utf8, ValidityAndEscapes) {
    EXPECT_TRUE(io::is_valid_utf8("plain"));
    EXPECT_TRUE(io::is_valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
    for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"})
        EXPECT_FALSE(io::is_valid_utf8(bad)) << io::escape_invalid_utf8(bad);
    EXPECT_EQ(io::escape_invalid_utf8("ab\xff"
                                      "c.txt"),
              "ab\\xffc.txt");
    EXPECT_EQ(io::escape_invalid_utf8("caf\xc3\xa9"), "caf\xc3\xa9");
    // The escaped form can always be stored as JSON.
    EXPECT_NO_THROW(nlohmann::json(io::escape_invalid_utf8("\xfe\xff\x80")).dump());
}

TEST(JsonExcerpt, CutsLongValuesAndSurvivesInvalidUtf8) {
    nlohmann::json big = nlohmann::json::array();
    for (int i = 0; i < 10000; ++i) big.push_back(i);
    const std::string e = io::json_excerpt(big, 20);
    EXPECT_EQ(e.size(), 23u);
    EXPECT_EQ(e.substr(20), "...");
    EXPECT_NO_THROW(io::json_excerpt(nlohmann::json(std::string("\xff"))));
}

}  // namespace
}  // namespace moe
