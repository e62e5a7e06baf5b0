// libFuzzer harness: the safetensors reader (io::SafetensorsFile) on arbitrary bytes.
//
// The input is the whole file. A file the reader rejects must be rejected with moe::Error;
// any other exception escaping (std::terminate, reported as a crash), a sanitizer report,
// a leak or a hang is a finding. On a file it accepts, every accessor is exercised the way
// `moe info` and checkpoint loading use them, and the reader's own promises are checked:
// each tensor's byte range matches its shape and dtype, and reading it gives that many
// values.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "fuzz_check.h"
#include "io/safetensors.h"
#include "memory_file.h"

namespace {

using moe::io::SafetensorsFile;

bool is_float(moe::DType t) {
    return t == moe::DType::f32 || t == moe::DType::bf16 || t == moe::DType::f64;
}

// Expects fn to throw moe::Error (a lookup of a name that is not there).
template <class F>
void expect_error(F&& fn, const char* what) {
    try {
        fn();
    } catch (const moe::Error&) {
        return;
    }
    FUZZ_CHECK(false, what);
}

void exercise(const SafetensorsFile& f) {
    const std::vector<std::string> names = f.names();
    for (const std::string& name : names) {
        FUZZ_CHECK(f.contains(name), "names() lists a tensor that contains() denies");
        const SafetensorsFile::Info& info = f.info(name);
        FUZZ_CHECK(info.begin <= info.end, "a tensor ends before it begins");
        const uint64_t nbytes = info.end - info.begin;
        FUZZ_CHECK(nbytes == uint64_t(info.shape.numel()) * moe::dtype_size(info.dtype),
                   "byte range does not match shape and dtype");
        FUZZ_CHECK(f.bytes(name).size() == nbytes, "bytes() size differs from info()");
        if (is_float(info.dtype)) {
            // Every byte was validated at open, so reading an accepted tensor at its own
            // shape cannot fail once non-finite values are allowed...
            std::vector<double> as_f64(size_t(info.shape.numel()));
            try {
                f.read<double>(name, info.shape, as_f64.data(), SafetensorsFile::NonFinite::allow);
            } catch (const moe::Error& e) {
                std::fprintf(stderr, "read of an accepted tensor failed: %s\n", e.what());
                FUZZ_CHECK(false, "read<double>(allow) of an accepted tensor threw");
            }
            // ...while the default rejects NaN and infinity with a moe::Error.
            try {
                const std::vector<float> values = f.read_f32(name);
                FUZZ_CHECK(int64_t(values.size()) == info.shape.numel(), "read_f32 size");
            } catch (const moe::Error&) {
            }
        } else {
            expect_error([&] { f.read_f32(name); }, "read_f32 of an integer tensor must fail");
        }
    }
    for (const auto& [key, value] : f.metadata())
        FUZZ_CHECK(f.metadata(key) == value, "metadata(key) differs from metadata()[key]");
    // Lookups of absent names are errors, never a crash. The name is invalid UTF-8, which
    // no accepted header can hold (JSON text must be UTF-8), so it is absent from every file.
    const std::string absent = "\xff absent";
    expect_error([&] { f.info(absent); }, "info() of an absent tensor must fail");
    expect_error([&] { f.metadata(absent); }, "metadata() of an absent key must fail");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static moe::fuzz::MemoryFile file("fuzz_safetensors");
    const std::string& path = file.write(data, size);
    try {
        const SafetensorsFile f(path);
        FUZZ_CHECK(f.path() == path, "path()");
        exercise(f);
    } catch (const moe::Error&) {
        // Rejected with a message: the expected outcome for a malformed file.
    }
    return 0;
}
