#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/parse_number.h"
#include "io/atomic_file.h"
#include "io/input_file.h"
#include "io/json_text.h"

namespace moe::io {

// std::map-backed json: nlohmann::ordered_json finds a key by linear search, which made a
// header of 200,000 tensors take 31 s to parse (and as long to build). Header order, which
// names() needs for zero-size tensors (they share a data offset with their neighbour), comes
// from io::top_level_keys instead, and the writer emits entries in the caller's order.
using json = nlohmann::json;

// GCC defines __SANITIZE_ADDRESS__ under -fsanitize=address; clang reports it as a feature.
#if defined(__SANITIZE_ADDRESS__)
#define MOE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_ASAN 1
#endif
#endif
#ifndef MOE_ASAN
#define MOE_ASAN 0
#endif

namespace {

constexpr const char* kMetadataKey = "__metadata__";
// The reference implementation refuses headers over 100 MB; so do we, so that a corrupt
// length cannot make us parse gigabytes of tensor data as JSON.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Sizes above 2^62 cannot be stored as int64 in a Shape and multiplied by a dtype size.
constexpr uint64_t kMaxDim = uint64_t(1) << 62;

[[noreturn]] void bad(const std::string& path, const std::string& what) {
    MOE_FAIL(path, ": not a valid safetensors file: ", what);
}

// detail::concat rather than "[" + std::to_string(..): GCC 12 warns falsely (-Wrestrict)
// on a literal plus a temporary string.
std::string range_str(uint64_t begin, uint64_t end) {
    return detail::concat("[", begin, ", ", end, "]");
}

// Checks one tensor entry of the header and returns what it describes. Every size is
// checked against `data_size` before it is used, so later reads cannot leave the mapping.
SafetensorsFile::Info parse_entry(const std::string& path, const std::string& name, const json& v,
                                  uint64_t data_size) {
    const std::string where = "tensor '" + excerpt(name, 80) + "': ";
    if (!v.is_object()) bad(path, where + "entry is not an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
        if (!v.contains(key)) bad(path, where + "entry has no \"" + key + "\"");

    SafetensorsFile::Info info{};
    const json& dt = v["dtype"];
    if (!dt.is_string()) bad(path, where + "dtype " + json_excerpt(dt) + " is not a string");
    const std::string dt_name = dt.get<std::string>();
    if (!dtype_from_safetensors(dt_name, &info.dtype))
        bad(path, where + "unknown dtype '" + dt_name + "'");

    const json& shape = v["shape"];
    if (!shape.is_array()) bad(path, where + "shape " + json_excerpt(shape) + " is not an array");
    if (shape.size() > size_t(kMaxDims))
        bad(path, where + "shape has " + std::to_string(shape.size()) + " dimensions, at most " +
                      std::to_string(kMaxDims) + " supported");
    // The byte size is exact unless a product overflows; a zero anywhere makes it 0.
    uint64_t numel = 1;
    bool has_zero = false, overflow = false;
    for (const json& d : shape) {
        if (!d.is_number_unsigned())
            bad(path, where + "shape size " + json_excerpt(d) + " is not a non-negative integer");
        const uint64_t dim = d.get<uint64_t>();
        if (dim > kMaxDim) bad(path, where + "shape size " + std::to_string(dim) + " is too large");
        if (dim == 0)
            has_zero = true;
        else if (__builtin_mul_overflow(numel, dim, &numel))
            overflow = true;
        info.shape.dims[info.shape.rank++] = int64_t(dim);
    }
    uint64_t nbytes = 0;
    if (!has_zero && (overflow || __builtin_mul_overflow(numel, dtype_size(info.dtype), &nbytes)))
        bad(path, where + "shape " + info.shape.str() + " is too large");

    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
        bad(path, where + "data_offsets " + json_excerpt(off) +
                      " is not a pair of non-negative integers");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.begin > info.end)
        bad(path, where + "data_offsets " + range_str(info.begin, info.end) + " are reversed");
    if (info.end > data_size)
        bad(path, where + "data_offsets " + range_str(info.begin, info.end) +
                      " run past the end of the " + std::to_string(data_size) +
                      "-byte data section (file truncated?)");
    if (info.end - info.begin != nbytes)
        bad(path, where + "shape " + info.shape.str() + " of " + dt_name + " needs " +
                      std::to_string(nbytes) + " bytes but data_offsets " +
                      range_str(info.begin, info.end) + " hold " +
                      std::to_string(info.end - info.begin));
    return info;
}

}  // namespace

bool dtype_from_safetensors(const std::string& name, DType* out) {
    static const std::map<std::string, DType> table = {{"F32", DType::f32}, {"BF16", DType::bf16},
                                                       {"F64", DType::f64}, {"I32", DType::i32},
                                                       {"I64", DType::i64}, {"U8", DType::u8}};
    auto it = table.find(name);
    if (it == table.end()) return false;
    *out = it->second;
    return true;
}

const char* dtype_to_safetensors(DType t) {
    switch (t) {
        case DType::f32:
            return "F32";
        case DType::bf16:
            return "BF16";
        case DType::f64:
            return "F64";
        case DType::i32:
            return "I32";
        case DType::i64:
            return "I64";
        case DType::u8:
            return "U8";
    }
    return "?";
}

void save_safetensors(const std::string& path, const std::vector<TensorToSave>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    // Everything is validated before the temporary file exists, so a bad argument never
    // touches the disk. The header text is built entry by entry, in the caller's order.
    std::string text = "{";
    try {
        if (!metadata.empty())
            text += "\"" + std::string(kMetadataKey) + "\":" + json(metadata).dump();
        std::unordered_set<std::string> seen;
        uint64_t offset = 0;
        for (const auto& t : tensors) {
            const std::string where =
                path + ": save_safetensors: tensor '" + excerpt(t.name, 80) + "' ";
            if (t.name == kMetadataKey) MOE_FAIL(where, "uses the reserved name");
            if (!seen.insert(t.name).second) MOE_FAIL(where, "given twice");
            if (!t.tensor.is_contiguous()) MOE_FAIL(where, t.tensor.str(), " is not contiguous");
            if (t.tensor.device != Device::cpu) MOE_FAIL(where, "is not on the CPU");
            if (t.tensor.data == nullptr && t.tensor.nbytes() != 0)
                MOE_FAIL(where, t.tensor.str(), " has no data");
            std::vector<int64_t> shape(t.tensor.shape.dims.begin(),
                                       t.tensor.shape.dims.begin() + t.tensor.rank());
            const json entry = {{"dtype", dtype_to_safetensors(t.tensor.dtype)},
                                {"shape", shape},
                                {"data_offsets", {offset, offset + t.tensor.nbytes()}}};
            if (text.size() > 1) text += ',';
            text += json(t.name).dump() + ":" + entry.dump();
            offset += t.tensor.nbytes();
        }
    } catch (const nlohmann::json::exception& e) {  // a name or value that is not UTF-8
        MOE_FAIL(path, ": save_safetensors: cannot encode the header: ", e.what());
    }
    text += '}';
    // Pad with spaces so the data section starts 8-byte aligned, as the reference
    // implementation does; readers that map the file can then view f32/f64 in place.
    text.append((8 - (text.size() % 8)) % 8, ' ');

    AtomicFile file(path);
    const uint64_t n = text.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
    file.write(len, 8);
    file.write(text.data(), text.size());
    for (const auto& t : tensors) file.write(t.tensor.data, t.tensor.nbytes());
    file.commit();
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    // Non-blocking open and a regular-file check: a FIFO would block open() forever.
    uint64_t size = 0;
    const int fd = open_regular_file(path, "checkpoint (safetensors file)", &size);
    map_size_ = size_t(size);
    if (map_size_ < 8) {
        ::close(fd);
        bad(path, "file is " + std::to_string(map_size_) +
                      " bytes, shorter than the 8-byte header length");
    }
#if MOE_ASAN
    // AddressSanitizer cannot see a read past the end of a mapping (the rest of the last
    // page reads as zeros), so sanitized builds read the file into a heap block of exactly
    // its size, where one byte too far is reported.
    heap_.reset(new uint8_t[map_size_]);
    for (size_t done = 0; done < map_size_;) {
        const ssize_t r = ::pread(fd, heap_.get() + done, map_size_ - done, off_t(done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int err = r < 0 ? errno : EIO;
            ::close(fd);
            heap_.reset();
            MOE_FAIL(path, ": cannot read: ", std::strerror(err));
        }
        done += size_t(r);
    }
    ::close(fd);
    map_ = heap_.get();
#else
    void* p = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    ::close(fd);
    if (p == MAP_FAILED) MOE_FAIL(path, ": cannot map: ", std::strerror(map_err));
    map_ = static_cast<const uint8_t*>(p);
#endif
    try {
        parse_header();
    } catch (...) {
        release();
        throw;
    }
}

void SafetensorsFile::release() {
    if (map_ && !heap_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
    heap_.reset();
    map_ = nullptr;
}

void SafetensorsFile::parse_header() {
    const std::string& path = path_;
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(map_[i]) << (8 * i);
    // Written as a subtraction: 8 + n overflows for n near 2^64.
    if (n > map_size_ - 8)
        bad(path, "header length " + std::to_string(n) + " runs past the end of the " +
                      std::to_string(map_size_) + "-byte file");
    if (n > kMaxHeaderBytes)
        bad(path, "header length " + std::to_string(n) + " is over the limit of " +
                      std::to_string(kMaxHeaderBytes) + " bytes");
    data_ = map_ + 8 + n;
    const uint64_t data_size = map_size_ - 8 - n;

    const std::string_view text(reinterpret_cast<const char*>(map_ + 8), size_t(n));
    check_json_text(text, path + ": header");
    json header;
    try {
        header = json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        bad(path, "malformed JSON header: " + excerpt(e.what(), 200));
    }
    if (!header.is_object()) bad(path, "JSON header is not an object");
    // The parser keeps one of two equal keys silently; a tensor listed twice with two
    // different offsets is ambiguous. The keys in header order come from a separate scan.
    const std::vector<std::string> key_order = top_level_keys(text);
    if (key_order.size() != header.size()) {
        std::unordered_set<std::string> seen;
        for (const std::string& key : key_order)
            if (!seen.insert(key).second)
                bad(path, "key '" + excerpt(key, 80) + "' appears twice in the header");
        MOE_CHECK(false, path, ": header keys scanned ", key_order.size(), ", parsed ",
                  header.size());
    }

    struct Range {
        uint64_t begin, end;
        const std::string* name;
    };
    std::vector<Range> ranges;
    for (const std::string& name : key_order) {
        const json& v = header.at(name);
        if (name == kMetadataKey) {
            if (!v.is_object()) bad(path, "__metadata__ is not an object");
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string())
                    bad(path, "metadata value '" + excerpt(m.key()) + "' is " +
                                  json_excerpt(m.value()) + ", not a string");
                metadata_[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        const Info info = parse_entry(path, name, v, data_size);
        auto pos = infos_.emplace(name, info).first;
        order_.push_back(name);
        if (info.end > info.begin) ranges.push_back({info.begin, info.end, &pos->first});
    }
    // After sorting by start, any overlap shows up between neighbours.
    std::sort(ranges.begin(), ranges.end(),
              [](const Range& a, const Range& b) { return a.begin < b.begin; });
    for (size_t i = 1; i < ranges.size(); ++i) {
        const Range &a = ranges[i - 1], &b = ranges[i];
        if (b.begin < a.end)
            bad(path, "tensors '" + excerpt(*a.name, 80) + "' " + range_str(a.begin, a.end) +
                          " and '" + excerpt(*b.name, 80) + "' " + range_str(b.begin, b.end) +
                          " overlap");
    }
    // File order is data order; a stable sort keeps header order among equal offsets.
    std::stable_sort(order_.begin(), order_.end(), [&](const std::string& a, const std::string& b) {
        return infos_.at(a).begin < infos_.at(b).begin;
    });
}

SafetensorsFile::~SafetensorsFile() {
    release();
}

const std::string& SafetensorsFile::metadata(const std::string& key) const {
    auto it = metadata_.find(key);
    if (it == metadata_.end()) MOE_FAIL(path_, ": metadata has no key '", key, "'");
    return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
    return order_;
}

const SafetensorsFile::Info& SafetensorsFile::info(const std::string& name) const {
    auto it = infos_.find(name);
    if (it == infos_.end()) MOE_FAIL(path_, ": no tensor named '", name, "'");
    return it->second;
}

std::span<const uint8_t> SafetensorsFile::bytes(const std::string& name) const {
    const Info& i = info(name);
    return {data_ + i.begin, size_t(i.end - i.begin)};
}

void SafetensorsFile::check_finite(const std::string& name) const {
    const Info& i = info(name);
    const uint8_t* src = data_ + i.begin;
    const int64_t n = i.shape.numel();
    // One pass, no early exit in the common (all finite) case; then find the first culprit.
    auto first_bad = [&](auto load) -> int64_t {
        bool all_finite = true;
        for (int64_t k = 0; k < n; ++k) all_finite &= std::isfinite(load(k));
        if (all_finite) return -1;
        for (int64_t k = 0; k < n; ++k)
            if (!std::isfinite(load(k))) return k;
        return -1;
    };
    int64_t bad_at = -1;
    double value = 0;
    switch (i.dtype) {
        case DType::f32:
            bad_at = first_bad([&](int64_t k) {
                float v;
                std::memcpy(&v, src + 4 * k, 4);
                return v;
            });
            if (bad_at >= 0) {
                float v;
                std::memcpy(&v, src + 4 * bad_at, 4);
                value = v;
            }
            break;
        case DType::f64:
            bad_at = first_bad([&](int64_t k) {
                double v;
                std::memcpy(&v, src + 8 * k, 8);
                return v;
            });
            if (bad_at >= 0) std::memcpy(&value, src + 8 * bad_at, 8);
            break;
        case DType::bf16:
            bad_at = first_bad([&](int64_t k) {
                uint16_t v;
                std::memcpy(&v, src + 2 * k, 2);
                return bf16_to_f32(v);
            });
            if (bad_at >= 0) {
                uint16_t v;
                std::memcpy(&v, src + 2 * bad_at, 2);
                value = bf16_to_f32(v);
            }
            break;
        default:
            return;  // integers are always finite
    }
    if (bad_at >= 0)
        MOE_FAIL(path_, ": tensor '", excerpt(name, 80), "' holds ", value, " at element ", bad_at,
                 " (flat index) of ", i.shape.str(),
                 "; a checkpoint with non-finite weights cannot be used (the run that wrote it had "
                 "diverged, or the file is damaged)");
}

template <class R>
void SafetensorsFile::read(const std::string& name, const Shape& expected, R* dst,
                           NonFinite non_finite) const {
    const Info& i = info(name);
    if (!(i.shape == expected))
        MOE_FAIL(path_, ": tensor '", name, "' has shape ", i.shape.str(), ", expected ",
                 expected.str());
    if (non_finite == NonFinite::reject) check_finite(name);
    // memcpy per element: the data section is 8-byte aligned but a tensor inside it need
    // not be (a bf16 tensor of odd length shifts every later one).
    const uint8_t* src = data_ + i.begin;
    const int64_t n = i.shape.numel();
    switch (i.dtype) {
        case DType::f32:
            for (int64_t k = 0; k < n; ++k) {
                float v;
                std::memcpy(&v, src + 4 * k, 4);
                dst[k] = R(v);
            }
            break;
        case DType::f64:
            for (int64_t k = 0; k < n; ++k) {
                double v;
                std::memcpy(&v, src + 8 * k, 8);
                dst[k] = R(v);
            }
            break;
        case DType::bf16:
            for (int64_t k = 0; k < n; ++k) {
                uint16_t v;
                std::memcpy(&v, src + 2 * k, 2);
                dst[k] = R(bf16_to_f32(v));
            }
            break;
        default:
            MOE_FAIL(path_, ": tensor '", name, "' has dtype ", dtype_name(i.dtype),
                     ", expected a floating-point dtype");
    }
}

template void SafetensorsFile::read<float>(const std::string&, const Shape&, float*,
                                           NonFinite) const;
template void SafetensorsFile::read<double>(const std::string&, const Shape&, double*,
                                            NonFinite) const;

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
    const Info& i = info(name);
    std::vector<float> out(size_t(i.shape.numel()));
    read(name, i.shape, out.data(), NonFinite::allow);
    return out;
}

}  // namespace moe::io
