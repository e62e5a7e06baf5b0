#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"

namespace moe::io {

using json = nlohmann::json;

bool dtype_from_safetensors(const std::string& name, DType* out) {
    static const std::map<std::string, DType> table = {
        {"F32", DType::f32}, {"BF16", DType::bf16}, {"F64", DType::f64},
        {"I32", DType::i32}, {"I64", DType::i64},   {"U8", DType::u8}};
    auto it = table.find(name);
    if (it == table.end()) return false;
    *out = it->second;
    return true;
}

const char* dtype_to_safetensors(DType t) {
    switch (t) {
        case DType::f32: return "F32";
        case DType::bf16: return "BF16";
        case DType::f64: return "F64";
        case DType::i32: return "I32";
        case DType::i64: return "I64";
        case DType::u8: return "U8";
    }
    return "?";
}

void save_safetensors(const std::string& path, const std::vector<TensorToSave>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    json header = json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const auto& t : tensors) {
        MOE_CHECK(t.tensor.is_contiguous(), "save_safetensors: tensor '", t.name,
                  "' is not contiguous");
        MOE_CHECK(!header.contains(t.name), "save_safetensors: tensor '", t.name,
                  "' given twice");
        std::vector<int64_t> shape(t.tensor.shape.dims.begin(),
                                   t.tensor.shape.dims.begin() + t.tensor.rank());
        header[t.name] = {{"dtype", dtype_to_safetensors(t.tensor.dtype)},
                          {"shape", shape},
                          {"data_offsets", {offset, offset + t.tensor.nbytes()}}};
        offset += t.tensor.nbytes();
    }
    std::string text = header.dump();
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

namespace {
[[noreturn]] void bad(const std::string& path, const std::string& what) {
    MOE_FAIL(path, ": not a valid safetensors file: ", what);
}
}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) MOE_FAIL(path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        MOE_FAIL(path, ": not a regular file");
    }
    map_size_ = size_t(st.st_size);
    if (map_size_ < 8) {
        ::close(fd);
        bad(path, "file is " + std::to_string(map_size_) + " bytes, shorter than the 8-byte header length");
    }
    void* p = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) MOE_FAIL(path, ": cannot map: ", std::strerror(errno));
    map_ = static_cast<const uint8_t*>(p);

    try {
        uint64_t n = 0;
        for (int i = 0; i < 8; ++i) n |= uint64_t(map_[i]) << (8 * i);
        if (n > map_size_ - 8)
            bad(path, "header length " + std::to_string(n) + " runs past the end of the " +
                          std::to_string(map_size_) + "-byte file");
        data_ = map_ + 8 + n;
        const uint64_t data_size = map_size_ - 8 - n;

        json header;
        try {
            header = json::parse(map_ + 8, map_ + 8 + n);
        } catch (const json::exception& e) {
            bad(path, std::string("malformed JSON header: ") + e.what());
        }
        if (!header.is_object()) bad(path, "JSON header is not an object");

        std::vector<std::pair<uint64_t, uint64_t>> ranges;
        for (auto it = header.begin(); it != header.end(); ++it) {
            const std::string& name = it.key();
            const json& v = it.value();
            if (name == "__metadata__") {
                if (!v.is_object()) bad(path, "__metadata__ is not an object");
                for (auto m = v.begin(); m != v.end(); ++m) {
                    if (!m.value().is_string())
                        bad(path, "metadata value '" + m.key() + "' is not a string");
                    metadata_[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            const std::string where = "tensor '" + name + "': ";
            if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
                !v.contains("data_offsets"))
                bad(path, where + "entry needs dtype, shape and data_offsets");
            if (!v["dtype"].is_string()) bad(path, where + "dtype is not a string");
            Info info{};
            const std::string dt = v["dtype"].get<std::string>();
            if (!dtype_from_safetensors(dt, &info.dtype)) bad(path, where + "unknown dtype '" + dt + "'");
            const json& shape = v["shape"];
            if (!shape.is_array() || shape.size() > size_t(kMaxDims))
                bad(path, where + "shape is not an array of at most " + std::to_string(kMaxDims) + " sizes");
            uint64_t numel = 1;
            for (const json& d : shape) {
                if (!d.is_number_unsigned()) bad(path, where + "shape has a size that is not a non-negative integer");
                const uint64_t dim = d.get<uint64_t>();
                if (dim != 0 && numel > (uint64_t(1) << 62) / dim) bad(path, where + "shape is too large");
                numel *= dim;
                info.shape.dims[info.shape.rank++] = int64_t(dim);
            }
            const json& off = v["data_offsets"];
            if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
                !off[1].is_number_unsigned())
                bad(path, where + "data_offsets is not a pair of non-negative integers");
            info.begin = off[0].get<uint64_t>();
            info.end = off[1].get<uint64_t>();
            if (info.begin > info.end)
                bad(path, where + "data_offsets [" + std::to_string(info.begin) + ", " +
                              std::to_string(info.end) + "] is reversed");
            if (info.end > data_size)
                bad(path, where + "data_offsets end " + std::to_string(info.end) +
                              " is past the data section of " + std::to_string(data_size) +
                              " bytes (file truncated?)");
            const uint64_t expected = numel * dtype_size(info.dtype);
            if (info.end - info.begin != expected)
                bad(path, where + "shape " + info.shape.str() + " of " + dt + " needs " +
                              std::to_string(expected) + " bytes but data_offsets give " +
                              std::to_string(info.end - info.begin));
            infos_[name] = info;
            order_.push_back(name);
            if (info.end > info.begin) ranges.push_back({info.begin, info.end});
        }
        std::sort(ranges.begin(), ranges.end());
        for (size_t i = 1; i < ranges.size(); ++i)
            if (ranges[i].first < ranges[i - 1].second)
                bad(path, "two tensors overlap at data offset " + std::to_string(ranges[i].first));
        std::sort(order_.begin(), order_.end(),
                  [&](const std::string& a, const std::string& b) {
                      return infos_[a].begin < infos_[b].begin ||
                             (infos_[a].begin == infos_[b].begin && a < b);
                  });
    } catch (...) {
        ::munmap(const_cast<uint8_t*>(map_), map_size_);
        map_ = nullptr;
        throw;
    }
}

SafetensorsFile::~SafetensorsFile() {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const std::string& SafetensorsFile::metadata(const std::string& key) const {
    auto it = metadata_.find(key);
    if (it == metadata_.end()) MOE_FAIL(path_, ": metadata has no key '", key, "'");
    return it->second;
}

std::vector<std::string> SafetensorsFile::names() const { return order_; }

const SafetensorsFile::Info& SafetensorsFile::info(const std::string& name) const {
    auto it = infos_.find(name);
    if (it == infos_.end()) MOE_FAIL(path_, ": no tensor named '", name, "'");
    return it->second;
}

std::span<const uint8_t> SafetensorsFile::bytes(const std::string& name) const {
    const Info& i = info(name);
    return {data_ + i.begin, size_t(i.end - i.begin)};
}

template <class R>
void SafetensorsFile::read(const std::string& name, const Shape& expected, R* dst) const {
    const Info& i = info(name);
    if (!(i.shape == expected))
        MOE_FAIL(path_, ": tensor '", name, "' has shape ", i.shape.str(), ", expected ",
                 expected.str());
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

template void SafetensorsFile::read<float>(const std::string&, const Shape&, float*) const;
template void SafetensorsFile::read<double>(const std::string&, const Shape&, double*) const;

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
    const Info& i = info(name);
    std::vector<float> out(size_t(i.shape.numel()));
    read(name, i.shape, out.data());
    return out;
}

}  // namespace moe::io
