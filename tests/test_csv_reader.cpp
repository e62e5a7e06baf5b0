// CsvReader (tabular/csv_reader.h): quoting, line ends, byte order marks, blank lines, the
// line each record started on, and every malformed input, each an error naming file and
// line.
#include "tabular/csv_reader.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "test_support.h"

namespace moe::tabular {
namespace {

namespace fs = std::filesystem;
using Fields = std::vector<std::string>;

class CsvReaderTest : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_csv_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    // Writes `text` byte for byte and returns its path.
    std::string write(const std::string& text, const std::string& name = "t.csv") const {
        const std::string p = (dir_ / name).string();
        std::ofstream(p, std::ios::binary).write(text.data(), std::streamsize(text.size()));
        return p;
    }

    // Every record of `text` with the line it started on.
    std::vector<std::pair<int64_t, Fields>> read_all(const std::string& text,
                                                     const CsvOptions& opt = {}) const {
        CsvReader r(write(text), opt);
        std::vector<std::pair<int64_t, Fields>> out;
        Fields f;
        while (r.next(f)) out.emplace_back(r.line(), f);
        return out;
    }

    fs::path dir_;
};

TEST_F(CsvReaderTest, PlainRecordsAndLines) {
    const auto recs = read_all("a,b,c\n1,2,3\n");
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[0].first, 1);
    EXPECT_EQ(recs[0].second, (Fields{"a", "b", "c"}));
    EXPECT_EQ(recs[1].first, 2);
    EXPECT_EQ(recs[1].second, (Fields{"1", "2", "3"}));
}

TEST_F(CsvReaderTest, QuotedFieldsHoldDelimitersQuotesAndLineBreaks) {
    const auto recs = read_all("x,\"a,b\",\"say \"\"hi\"\"\"\n\"two\nlines\",\"\",z\nlast,1,2\n");
    ASSERT_EQ(recs.size(), 3u);
    EXPECT_EQ(recs[0].second, (Fields{"x", "a,b", "say \"hi\""}));
    EXPECT_EQ(recs[1].first, 2);
    EXPECT_EQ(recs[1].second, (Fields{"two\nlines", "", "z"}));
    // The line break inside the quotes counts: the next record starts on line 4.
    EXPECT_EQ(recs[2].first, 4);
    EXPECT_EQ(recs[2].second, (Fields{"last", "1", "2"}));
}

TEST_F(CsvReaderTest, EmptyFields) {
    const auto recs = read_all("a,,c\n,\n1,2,\n,,\n");
    ASSERT_EQ(recs.size(), 4u);
    EXPECT_EQ(recs[0].second, (Fields{"a", "", "c"}));
    EXPECT_EQ(recs[1].second, (Fields{"", ""}));
    EXPECT_EQ(recs[2].second, (Fields{"1", "2", ""}));  // a trailing comma: an empty last field
    EXPECT_EQ(recs[3].second, (Fields{"", "", ""}));
}

TEST_F(CsvReaderTest, CrlfAndLfGiveTheSameRecords) {
    const auto lf = read_all("a,b\n\"q\nr\",2\nx,\"y\"\n");
    const auto crlf = read_all("a,b\r\n\"q\nr\",2\r\nx,\"y\"\r\n");
    ASSERT_EQ(lf.size(), 3u);
    EXPECT_EQ(lf, crlf);
    EXPECT_EQ(crlf[2].first, 4);
    EXPECT_EQ(crlf[2].second, (Fields{"x", "y"}));
    // A CR not before LF is data.
    const auto cr = read_all("a\rb,c\n");
    ASSERT_EQ(cr.size(), 1u);
    EXPECT_EQ(cr[0].second, (Fields{"a\rb", "c"}));
}

TEST_F(CsvReaderTest, ByteOrderMarkIsSkipped) {
    const auto recs = read_all("\xEF\xBB\xBFname,age\nx,1\n");
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[0].second, (Fields{"name", "age"}));
    EXPECT_EQ(recs[0].first, 1);
    // Bytes that only start like a BOM are data, in order.
    const auto part = read_all("\xEF\xBBz,1\n");
    ASSERT_EQ(part.size(), 1u);
    EXPECT_EQ(part[0].second, (Fields{"\xEF\xBBz", "1"}));
    // A BOM alone is an empty file.
    EXPECT_TRUE(read_all("\xEF\xBB\xBF").empty());
}

TEST_F(CsvReaderTest, NoFinalNewline) {
    const auto recs = read_all("a,b\n1,\"2\"");
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[1].second, (Fields{"1", "2"}));
    const auto empty_last = read_all("a,b\n1,");
    EXPECT_EQ(empty_last[1].second, (Fields{"1", ""}));
    EXPECT_TRUE(read_all("").empty());
}

TEST_F(CsvReaderTest, BlankLinesAreSkippedAndCounted) {
    const auto recs = read_all("\n\na,b\n\r\n\nc,d\n\n");
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[0].first, 3);
    EXPECT_EQ(recs[1].first, 6);
    EXPECT_EQ(recs[1].second, (Fields{"c", "d"}));
}

TEST_F(CsvReaderTest, OtherDelimiter) {
    CsvOptions opt;
    opt.delimiter = '\t';
    const auto recs = read_all("a\tb,c\t\"d\te\"\n", opt);
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_EQ(recs[0].second, (Fields{"a", "b,c", "d\te"}));
}

TEST_F(CsvReaderTest, QuoteInsideUnquotedFieldIsData) {
    const auto recs = read_all("5'10\",ab\"c\n");
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_EQ(recs[0].second, (Fields{"5'10\"", "ab\"c"}));
}

TEST_F(CsvReaderTest, HugeFieldWorks) {
    const std::string big(1 << 20, 'x');
    const auto recs = read_all("a,b\n1,\"" + big + "\"\n" + big + ",2\n");
    ASSERT_EQ(recs.size(), 3u);
    EXPECT_EQ(recs[1].second[1], big);
    EXPECT_EQ(recs[2].second[0], big);
    EXPECT_EQ(recs[2].first, 3);
}

TEST_F(CsvReaderTest, RandomRecordsReadBackAsWritten) {
    // Fields of the bytes that matter (delimiter, quote, CR, LF, space), quoted when they
    // hold one of them; LF or CRLF line ends at random. Every record comes back with the
    // line it started on.
    std::mt19937 gen(11);
    const std::string alphabet = "ab,\"\r\n \xC3\xA9";
    std::vector<std::pair<int64_t, Fields>> want;
    std::string text;
    int64_t line = 1;
    for (int r = 0; r < 300; ++r) {
        Fields rec(1 + gen() % 5);
        for (std::string& f : rec)
            for (size_t len = gen() % 6; len > 0; --len) f += alphabet[gen() % alphabet.size()];
        want.emplace_back(line, rec);
        for (size_t i = 0; i < rec.size(); ++i) {
            const std::string& f = rec[i];
            // An empty lone field would be a blank line: it is quoted too.
            const bool quote =
                f.find_first_of(",\"\r\n") != std::string::npos || (rec.size() == 1 && f.empty());
            if (i) text += ',';
            if (!quote) {
                text += f;
                continue;
            }
            text += '"';
            for (char ch : f) text += ch == '"' ? std::string("\"\"") : std::string(1, ch);
            text += '"';
        }
        text += gen() % 2 ? "\r\n" : "\n";
        line = 1 + int64_t(std::count(text.begin(), text.end(), '\n'));
    }
    EXPECT_EQ(read_all(text), want);
}

TEST_F(CsvReaderTest, RecordLongerThanTheLimitIsAnError) {
    CsvOptions opt;
    opt.max_record_bytes = 1000;
    // A record of 10 MB without any line break: the error comes after 1000 bytes.
    const std::string p = write("a,b\nok,1\n" + std::string(10 << 20, 'y') + ",2\n");
    CsvReader r(p, opt);
    Fields f;
    ASSERT_TRUE(r.next(f));
    ASSERT_TRUE(r.next(f));
    EXPECT_TRUE(test::throws_error_with([&] { r.next(f); }, {p + ":3:", "max_record_bytes"}));
    // An unclosed quote swallowing the rest of the file stops at the limit as well.
    const std::string q = write("a,b\n\"" + std::string(5000, '\n'), "q.csv");
    CsvReader rq(q, opt);
    ASSERT_TRUE(rq.next(f));
    EXPECT_TRUE(test::throws_error_with([&] { rq.next(f); }, {q + ":2:", "max_record_bytes"}));
}

TEST_F(CsvReaderTest, UnterminatedQuoteNamesTheLine) {
    const std::string p = write("a,b\n1,2\nx,\"open\nmore\n");
    CsvReader r(p);
    Fields f;
    ASSERT_TRUE(r.next(f));
    ASSERT_TRUE(r.next(f));
    EXPECT_TRUE(test::throws_error_with([&] { r.next(f); }, {p + ":3:", "unterminated quote"}));
}

TEST_F(CsvReaderTest, TextAfterClosingQuoteIsAnError) {
    const std::string p = write("a,b\n\"x\"y,2\n");
    CsvReader r(p);
    Fields f;
    ASSERT_TRUE(r.next(f));
    EXPECT_TRUE(test::throws_error_with([&] { r.next(f); },
                                        {p + ":2:", "text after a closing quote", "'y'"}));
    // On a later line of a multi-line record, that line is named.
    const std::string q = write("\"a\nb\" c\n", "q.csv");
    CsvReader rq(q);
    EXPECT_TRUE(test::throws_error_with([&] { rq.next(f); },
                                        {q + ":2:", "text after a closing quote", "line 1"}));
}

TEST_F(CsvReaderTest, MissingFileNamesThePath) {
    const std::string p = (dir_ / "nope.csv").string();
    EXPECT_TRUE(test::throws_error_with([&] { CsvReader r(p); }, {p, "cannot open"}));
    EXPECT_TRUE(test::throws_error_with([&] { CsvReader r(dir_.string()); },
                                        {dir_.string(), "a directory"}));
}

TEST_F(CsvReaderTest, FieldsVectorIsResizedEachRecord) {
    CsvReader r(write("a,b,c,d\n1\n2,3\n"));
    Fields f = {"stale", "x", "y", "z", "w", "v"};
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f.size(), 4u);
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f, (Fields{"1"}));
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f, (Fields{"2", "3"}));
    EXPECT_FALSE(r.next(f));
    EXPECT_FALSE(r.next(f));  // stays at the end
}

}  // namespace
}  // namespace moe::tabular
