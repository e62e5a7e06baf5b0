// Strict integer and number parsing (core/parse_number.h): the whole text must be the
// number and in range; errors name what was being read and quote the text, shortened.
#include "core/parse_number.h"

#include "test_support.h"

namespace moe {
namespace {

TEST(ParseInt64, AcceptsExactlyTheDecimalIntegersInRange) {
    EXPECT_EQ(parse_int64("0", "x"), 0);
    EXPECT_EQ(parse_int64("-5", "x"), -5);
    EXPECT_EQ(parse_int64("9223372036854775807", "x"), INT64_MAX);
    EXPECT_EQ(parse_int64("-9223372036854775808", "x"), INT64_MIN);
    EXPECT_EQ(parse_int64("12", "x", 0, 12), 12);
}

TEST(ParseInt64, RefusesWhatStollWouldBendIntoANumber) {
    // Each of these std::stoll accepted (as 12, 7, 5, 0) or failed with the bare word "stoll".
    for (const char* text : {"12abc", " 7", "+5", "0x10", "", "abc", "1.5", "1e3", "7 "})
        EXPECT_TRUE(test::throws_error_with([&] { parse_int64(text, "metadata 'step'"); },
                                            {"metadata 'step'", "expected an integer"}))
            << "'" << text << "'";
    EXPECT_TRUE(test::throws_error_with([] { parse_int64("99999999999999999999", "step"); },
                                        {"step", "99999999999999999999", "out of range"}));
    EXPECT_TRUE(test::throws_error_with([] { parse_int64("-5", "step", 0); },
                                        {"step", "-5", "out of range [0, "}));
}

TEST(ParseDouble, AcceptsFiniteNumbersOnly) {
    EXPECT_EQ(parse_double("0.5", "t"), 0.5);
    EXPECT_EQ(parse_double("1e-3", "t"), 1e-3);
    EXPECT_EQ(parse_double("-2", "t"), -2.0);
    for (const char* text : {"0.5x", "", "nan", "inf", "1e999", " 1"})
        EXPECT_TRUE(test::throws_error_with([&] { parse_double(text, "option --top-p"); },
                                            {"option --top-p", "finite number"}))
            << "'" << text << "'";
}

TEST(Excerpt, ShortensAndShowsControlBytes) {
    EXPECT_EQ(excerpt("abc"), "abc");
    EXPECT_EQ(excerpt(std::string(100, 'x'), 10), "xxxxxxxxxx...");
    EXPECT_EQ(excerpt(std::string("a\nb\xff", 4)), "a\\x0ab\\xff");
    // A message quoting a 1 MB value stays short.
    const std::string huge(1 << 20, '7');
    const std::string msg = test::error_of([&] { parse_int64(huge, "x"); });
    EXPECT_LT(msg.size(), 200u) << msg.substr(0, 300);
}

}  // namespace
}  // namespace moe
