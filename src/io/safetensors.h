// safetensors files: the standard format for named tensors.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON, then the data. The JSON
// maps each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}
// (offsets relative to the start of the data), plus an optional "__metadata__" object of
// string to string. We keep the model config and the tokenizer there.
//
// The reader maps the file and validates everything before handing out a byte: a truncated
// file, a header length past the end, malformed JSON, a key listed twice, an unknown dtype,
// offsets out of range or overlapping, and a shape that does not match its byte size are
// each rejected with a one-line moe::Error naming the file and the problem. A path that is
// not a regular file (a FIFO, a device) is refused without blocking, and a header nested
// deeper than io::kMaxJsonDepth is refused before parsing. (Built with
// AddressSanitizer, it reads the file into an exactly-sized heap block instead, so that
// any read past the end is caught; see tests/cmake/asan.cmake.)
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moe::io {

struct TensorToSave {
    std::string name;
    Tensor tensor;  // must be contiguous
};

// Writes atomically: a temporary file beside `path`, fsync, rename, fsync of the directory.
// A crash leaves either the old file or the new one, never half of one. Tensors are written
// in the given order (header and data); names must be unique, valid UTF-8 and not
// "__metadata__", and are checked, with contiguity, before anything touches the disk.
void save_safetensors(const std::string& path, const std::vector<TensorToSave>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

class SafetensorsFile {
  public:
    struct Info {
        DType dtype;
        Shape shape;
        uint64_t begin, end;  // byte offsets into the data section
    };

    // Maps and validates `path`; throws moe::Error on any fault.
    explicit SafetensorsFile(const std::string& path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::string& path() const { return path_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // Metadata value, or an error naming the file and the key.
    const std::string& metadata(const std::string& key) const;
    // In file order: by data offset, and in header order among zero-size tensors.
    std::vector<std::string> names() const;
    bool contains(const std::string& name) const { return infos_.count(name) != 0; }
    const Info& info(const std::string& name) const;  // error naming the tensor if absent
    // The tensor's bytes inside the mapping (possibly unaligned).
    std::span<const uint8_t> bytes(const std::string& name) const;

    // Copies a tensor into `dst`, converting f32, bf16 or f64 to R. The stored shape must
    // equal `expected`, else an error names the file, the tensor and both shapes; a NaN or
    // infinite value is an error naming the tensor.
    // NonFinite::allow is for test fixtures, which hold -inf on purpose (masked logits).
    enum class NonFinite { reject, allow };
    template <class R>
    void read(const std::string& name, const Shape& expected, R* dst,
              NonFinite non_finite = NonFinite::reject) const;
    // Throws an error naming the file, the tensor and the first element that is NaN or
    // infinite (float dtypes; integer tensors pass).
    void check_finite(const std::string& name) const;
    // Reads a tensor of any float dtype as a flat vector, values as stored (for tests and
    // tools: NaN and infinity pass).
    std::vector<float> read_f32(const std::string& name) const;

  private:
    void parse_header();  // validates the mapped file and fills the tables below

    void release();  // unmaps (or frees) the file's bytes

    std::string path_;
    const uint8_t* map_ = nullptr;  // the whole file: a mapping, or heap_ under ASan
    size_t map_size_ = 0;
    std::unique_ptr<uint8_t[]> heap_;
    const uint8_t* data_ = nullptr;  // start of the data section
    std::map<std::string, Info> infos_;
    std::vector<std::string> order_;
    std::map<std::string, std::string> metadata_;
};

// "F32" <-> DType. Unknown names return false.
bool dtype_from_safetensors(const std::string& name, DType* out);
const char* dtype_to_safetensors(DType t);

}  // namespace moe::io
