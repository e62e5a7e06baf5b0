// Helpers of the safetensors tests (tests/test_safetensors.cpp, test_safetensors_hostile.cpp):
// whole-file reads and writes, hand-made files from a header, and a fixture giving each test
// its own directory.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "test_support.h"

namespace moe::test {

namespace fs = std::filesystem;

inline std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

inline void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string le64(uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(n >> (8 * i)));
    return s;
}

// A file as a hand-written header and `data_bytes` bytes of data.
inline std::string raw_file(const std::string& header, size_t data_bytes) {
    return le64(header.size()) + header + std::string(data_bytes, '\x11');
}

inline uint64_t header_length(const std::string& file) {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(file[i])) << (8 * i);
    return n;
}

inline ::testing::AssertionResult open_fails_with(const std::string& path,
                                                  std::initializer_list<std::string> parts) {
    return test::throws_error_with([&] { io::SafetensorsFile f(path); }, parts);
}

// Each test gets its own directory: ctest runs test_safetensors and test_safetensors_asan
// in parallel, and they share test names.
class Safetensors : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_st_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string file(const std::string& name) const { return (dir_ / name).string(); }
    std::vector<std::string> temp_files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(dir_))
            if (e.path().filename().string().find(".tmp.") != std::string::npos)
                out.push_back(e.path().filename().string());
        return out;
    }

    fs::path dir_;
};

}  // namespace moe::test
