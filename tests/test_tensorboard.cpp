// TensorBoard event files: CRC-32C against its published test vectors, the exact bytes of
// a record, our reader on what we wrote (and on corrupt files), and TensorBoard itself
// (Python, through the project venv) reading our files back.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "test_support.h"
#include "train/tensorboard.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using train::crc32c;
using train::masked_crc32c;

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string bytes(std::initializer_list<int> b) {
    std::string s;
    for (int c : b) s += char(c);
    return s;
}

double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class TensorBoard : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_tb_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::vector<std::string> event_files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().string());
        std::sort(out.begin(), out.end());
        return out;
    }
    fs::path dir_;
};

TEST(Crc32c, MatchesPublishedTestVectors) {
    // The CRC catalogue's check value for CRC-32C ("123456789"), and RFC 3720 (iSCSI)
    // appendix B.4: 32 bytes of zeros, of ones, ascending and descending.
    EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
    std::vector<uint8_t> b(32, 0);
    EXPECT_EQ(crc32c(b.data(), 32), 0x8A9136AAu);
    std::fill(b.begin(), b.end(), 0xff);
    EXPECT_EQ(crc32c(b.data(), 32), 0x62A8AB43u);
    for (int i = 0; i < 32; ++i) b[size_t(i)] = uint8_t(i);
    EXPECT_EQ(crc32c(b.data(), 32), 0x46DD794Eu);
    for (int i = 0; i < 32; ++i) b[size_t(i)] = uint8_t(31 - i);
    EXPECT_EQ(crc32c(b.data(), 32), 0x113FDB5Cu);
    EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, ExtendsAndMasks) {
    const std::string s = "The quick brown fox jumps over the lazy dog";
    for (size_t cut : {0ul, 1ul, 7ul, 20ul, s.size()})
        EXPECT_EQ(crc32c(s.data() + cut, s.size() - cut, crc32c(s.data(), cut)),
                  crc32c(s.data(), s.size()))
            << "cut " << cut;
    // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, modulo 2^32.
    EXPECT_EQ(masked_crc32c("123456789", 9), 0xC78AB0E5u);
}

TEST_F(TensorBoard, FileNameAndExactRecordBytes) {
    const double before = unix_now();
    std::string path;
    {
        train::TensorBoardWriter w(dir_.string());
        path = w.path();
        w.add_scalar("a", 1.0, 3);
    }
    const double after = unix_now();
    // events.out.tfevents.<unix time>.<hostname>
    const std::string name = fs::path(path).filename().string();
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    const std::string prefix = "events.out.tfevents.";
    ASSERT_EQ(name.rfind(prefix, 0), 0u) << name;
    const size_t dot = name.find('.', prefix.size());
    const double t = std::stod(name.substr(prefix.size(), dot - prefix.size()));
    EXPECT_GE(t, std::floor(before));
    EXPECT_LE(t, after);
    EXPECT_EQ(name.substr(dot + 1), host);

    const std::string f = read_all(path);
    auto u32 = [&](size_t at) {
        uint32_t v;
        std::memcpy(&v, f.data() + at, 4);
        return v;
    };
    // Record 0: wall_time (key 0x09, then 8 bytes of double) and file_version (key 0x1a,
    // length 13).
    const std::string version = bytes({0x1a, 13}) + "brain.Event:2";
    ASSERT_GE(f.size(), 12u + 9 + version.size() + 4);
    uint64_t len0;
    std::memcpy(&len0, f.data(), 8);
    ASSERT_EQ(len0, 9 + version.size());
    EXPECT_EQ(u32(8), masked_crc32c(f.data(), 8));
    EXPECT_EQ(f[12], '\x09');
    double wall;
    std::memcpy(&wall, f.data() + 13, 8);
    EXPECT_GE(wall, before);
    EXPECT_LE(wall, after);
    EXPECT_EQ(f.substr(21, version.size()), version);
    EXPECT_EQ(u32(12 + len0), masked_crc32c(f.data() + 12, len0));

    // Record 1: Event{wall_time, step 3, summary{value{tag "a", simple_value 1.0f}}}.
    const size_t r1 = 12 + len0 + 4;
    // step: key 0x10, varint 3; summary: key 0x2a, 10 bytes; value: key 0x0a, 8 bytes;
    // tag: key 0x0a, 1 byte "a"; simple_value: key 0x15, 1.0f little-endian.
    const std::string tail =
        bytes({0x10, 3, 0x2a, 10, 0x0a, 8, 0x0a, 1, 'a', 0x15, 0x00, 0x00, 0x80, 0x3f});
    uint64_t len1;
    std::memcpy(&len1, f.data() + r1, 8);
    ASSERT_EQ(len1, 9 + tail.size());
    ASSERT_EQ(f.size(), r1 + 12 + len1 + 4);
    EXPECT_EQ(u32(r1 + 8), masked_crc32c(f.data() + r1, 8));
    EXPECT_EQ(f[r1 + 12], '\x09');
    EXPECT_EQ(f.substr(r1 + 21, tail.size()), tail);
    EXPECT_EQ(u32(r1 + 12 + len1), masked_crc32c(f.data() + r1 + 12, len1));
}

TEST_F(TensorBoard, OurReaderDecodesWhatWeWrote) {
    train::TensorBoardWriter w(dir_.string());
    const int64_t big = int64_t(1) << 40;
    w.add_scalar("loss/train", 2.5, 0);
    w.add_scalar("lr", 0.1, 1);                 // stored as the float nearest 0.1
    w.add_scalar("\xce\xb4/grad", -1e30, big);  // UTF-8 tag, a multi-byte varint step
    w.add_scalar("neg", 7.0, -5);               // int64: ten-byte varint
    w.flush();                                  // visible to a reader while the writer is open
    const auto ev = train::read_tensorboard_events(w.path());
    ASSERT_EQ(ev.size(), 5u);
    EXPECT_EQ(ev[0].file_version, "brain.Event:2");
    EXPECT_TRUE(ev[0].values.empty());
    const std::vector<std::tuple<std::string, float, int64_t>> want = {
        {"loss/train", 2.5f, 0}, {"lr", 0.1f, 1}, {"\xce\xb4/grad", -1e30f, big}, {"neg", 7.f, -5}};
    for (size_t i = 0; i < want.size(); ++i) {
        const auto& e = ev[i + 1];
        EXPECT_TRUE(e.file_version.empty());
        EXPECT_EQ(e.step, std::get<2>(want[i]));
        ASSERT_EQ(e.values.size(), 1u);
        EXPECT_EQ(e.values[0].first, std::get<0>(want[i]));
        EXPECT_EQ(e.values[0].second, std::get<1>(want[i]));
        EXPECT_GE(e.wall_time, ev[0].wall_time);
    }
}

TEST_F(TensorBoard, ReaderRejectsCorruptFiles) {
    std::string path;
    {
        train::TensorBoardWriter w(dir_.string());
        w.add_scalar("x", 1.0, 1);
        path = w.path();
    }
    const std::string good = read_all(path);
    std::string bad = good;
    bad[good.size() - 6] ^= 0x40;  // inside the last record's data
    write_all(path, bad);
    EXPECT_TRUE(test::throws_error_with([&] { train::read_tensorboard_events(path); },
                                        {path, "record 1", "data CRC mismatch"}));
    bad = good;
    bad[2] ^= 1;  // the first record's length
    write_all(path, bad);
    EXPECT_TRUE(test::throws_error_with([&] { train::read_tensorboard_events(path); },
                                        {"record 0 at byte 0", "length CRC mismatch"}));
    write_all(path, good.substr(0, good.size() - 3));
    EXPECT_TRUE(test::throws_error_with([&] { train::read_tensorboard_events(path); },
                                        {"record 1", "truncated data"}));
    write_all(path, good.substr(0, good.size() - 20));
    EXPECT_TRUE(test::throws_error_with([&] { train::read_tensorboard_events(path); },
                                        {"record 1", "truncated"}));
}

TEST_F(TensorBoard, WritersInTheSameSecondGetTheirOwnFiles) {
    train::TensorBoardWriter a(dir_.string());
    train::TensorBoardWriter b(dir_.string());
    train::TensorBoardWriter c(dir_.string());
    EXPECT_NE(a.path(), b.path());
    EXPECT_NE(b.path(), c.path());
    EXPECT_NE(a.path(), c.path());
    EXPECT_EQ(event_files().size(), 3u);
    EXPECT_TRUE(
        test::throws_error_with([&] { train::TensorBoardWriter bad("/proc/no_such_dir/tb"); },
                                {"/proc/no_such_dir/tb", "cannot create"}));
}

std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

TEST_F(TensorBoard, TensorBoardReadsOurFiles) {
    // Two files in one run directory, as a resumed training run leaves them: TensorBoard
    // must join them in name order.
    std::vector<std::tuple<std::string, int64_t, float>> written;
    {
        train::TensorBoardWriter w(dir_.string());
        for (int64_t step = 1; step <= 50; ++step) {
            const float loss = 5.f * std::exp(-0.05f * float(step)) + 0.001f * float(step % 3);
            w.add_scalar("train/loss", loss, step);
            written.emplace_back("train/loss", step, loss);
            if (step % 10 == 0) {
                w.add_scalar("val/loss", loss + 0.25f, step);
                written.emplace_back("val/loss", step, loss + 0.25f);
            }
        }
    }
    {
        train::TensorBoardWriter w(dir_.string());
        for (int64_t step = 51; step <= 60; ++step) {
            w.add_scalar("train/loss", 1.0 / double(step), step);
            written.emplace_back("train/loss", step, float(1.0 / double(step)));
        }
        const int64_t big = (int64_t(1) << 40) + 7;
        w.add_scalar("lr", 3e-4, big);
        written.emplace_back("lr", big, 3e-4f);
    }
    ASSERT_EQ(event_files().size(), 2u);

    const std::string script = test::source_dir() + "/tests/reference/read_tensorboard.py";
    const std::string err = (dir_ / "stderr.txt").string();
    const std::string run_dir = dir_.string();
    const std::string cmd = shell_quote(test::python()) + " " + shell_quote(script) + " " +
                            shell_quote(run_dir) + " 2>" + shell_quote(err);
    FILE* pipe = ::popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buf[4096];
    while (size_t k = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, k);
    const int status = ::pclose(pipe);
    ASSERT_EQ(status, 0) << cmd << "\n"
                         << read_all(err) << "\n(tensorboard missing? run scripts/setup.sh)";
    const nlohmann::json got = nlohmann::json::parse(out);

    EXPECT_EQ(got["file_versions"], nlohmann::json::array({"brain.Event:2", "brain.Event:2"}));
    std::map<std::string, std::vector<std::pair<int64_t, float>>> want;
    for (const auto& [tag, step, value] : written) want[tag].emplace_back(step, value);
    ASSERT_EQ(got["scalars"].size(), want.size()) << got["scalars"].dump();
    const double now = unix_now();
    for (const auto& [tag, points] : want) {
        ASSERT_TRUE(got["scalars"].contains(tag)) << tag << " missing from " << out;
        const auto& series = got["scalars"][tag];
        ASSERT_EQ(series.size(), points.size()) << tag;
        for (size_t i = 0; i < points.size(); ++i) {
            EXPECT_EQ(series[i][0].get<int64_t>(), points[i].first) << tag << " point " << i;
            // TensorBoard holds the float widened to a double: exact.
            EXPECT_EQ(float(series[i][1].get<double>()), points[i].second) << tag << " point " << i;
            EXPECT_NEAR(series[i][2].get<double>(), now, 60.0) << tag << " wall time";
        }
    }
}

}  // namespace
}  // namespace moe
