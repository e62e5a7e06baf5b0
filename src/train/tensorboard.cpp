#include "train/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/check.h"

namespace moe::train {

namespace {

// table[i]: the CRC register after shifting in byte i, reflected (LSB-first) form.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        t[i] = c;
    }
    return t;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// Protocol buffer wire format: little-endian fixed widths, base-128 varints, and a key
// (field number << 3 | wire type) before each field.
enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
    while (v >= 0x80) {
        out += char(uint8_t(v) | 0x80);
        v >>= 7;
    }
    out += char(uint8_t(v));
}
void put_key(std::string& out, uint32_t field, Wire wire) {
    put_varint(out, field << 3 | wire);
}
void put_le(std::string& out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out += char(uint8_t(v >> (8 * i)));
}
void put_bytes(std::string& out, uint32_t field, const std::string& s) {
    put_key(out, field, kBytes);
    put_varint(out, s.size());
    out += s;
}
void put_double(std::string& out, uint32_t field, double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    put_key(out, field, kFixed64);
    put_le(out, bits, 8);
}

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string hostname() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
    // A '/' would make a path of the name; no sane host has one, but be safe.
    std::string h = buf;
    for (char& c : h)
        if (c == '/') c = '_';
    return h;
}

uint64_t get_le(const uint8_t* p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
    return v;
}

// Reads one protocol buffer message [p, end); errors name `where`.
class ProtoReader {
  public:
    ProtoReader(const uint8_t* p, const uint8_t* end, const std::string& where)
        : p_(p), end_(end), where_(where) {}
    bool done() const { return p_ == end_; }
    // Next field's number and wire type.
    std::pair<uint32_t, uint32_t> key() {
        const uint64_t k = varint();
        return {uint32_t(k >> 3), uint32_t(k & 7)};
    }
    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            need(1);
            const uint8_t b = *p_++;
            v |= uint64_t(b & 0x7f) << shift;
            if (!(b & 0x80)) return v;
        }
        MOE_FAIL(where_, ": varint longer than 10 bytes");
    }
    uint64_t fixed(int bytes) {
        need(size_t(bytes));
        const uint64_t v = get_le(p_, bytes);
        p_ += bytes;
        return v;
    }
    std::pair<const uint8_t*, const uint8_t*> bytes() {
        const uint64_t n = varint();
        need(n);
        const uint8_t* b = p_;
        p_ += n;
        return {b, p_};
    }
    void skip(uint32_t wire) {
        switch (wire) {
            case kVarint:
                varint();
                break;
            case kFixed64:
                fixed(8);
                break;
            case kBytes:
                bytes();
                break;
            case kFixed32:
                fixed(4);
                break;
            default:
                MOE_FAIL(where_, ": unsupported protobuf wire type ", wire);
        }
    }
    void expect(uint32_t wire, uint32_t want, const char* field) {
        MOE_REQUIRE(wire == want, where_, ": field ", field, " has wire type ", wire, ", expected ",
                    want);
    }

  private:
    void need(uint64_t n) {
        MOE_REQUIRE(uint64_t(end_ - p_) >= n, where_, ": protobuf message truncated");
    }
    const uint8_t* p_;
    const uint8_t* end_;
    const std::string& where_;
};

TensorBoardEvent decode_event(const uint8_t* p, const uint8_t* end, const std::string& where) {
    TensorBoardEvent ev;
    ProtoReader r(p, end, where);
    while (!r.done()) {
        const auto [field, wire] = r.key();
        if (field == 1) {
            r.expect(wire, kFixed64, "Event.wall_time");
            const uint64_t bits = r.fixed(8);
            std::memcpy(&ev.wall_time, &bits, 8);
        } else if (field == 2) {
            r.expect(wire, kVarint, "Event.step");
            ev.step = int64_t(r.varint());
        } else if (field == 3) {
            r.expect(wire, kBytes, "Event.file_version");
            const auto [b, e] = r.bytes();
            ev.file_version.assign(b, e);
        } else if (field == 5) {
            r.expect(wire, kBytes, "Event.summary");
            const auto [sb, se] = r.bytes();
            ProtoReader summary(sb, se, where);
            while (!summary.done()) {
                const auto [sf, sw] = summary.key();
                if (sf != 1) {
                    summary.skip(sw);
                    continue;
                }
                summary.expect(sw, kBytes, "Summary.value");
                const auto [vb, ve] = summary.bytes();
                ProtoReader value(vb, ve, where);
                std::string tag;
                float simple = 0;
                while (!value.done()) {
                    const auto [vf, vw] = value.key();
                    if (vf == 1) {
                        value.expect(vw, kBytes, "Value.tag");
                        const auto [tb, te] = value.bytes();
                        tag.assign(tb, te);
                    } else if (vf == 2) {
                        value.expect(vw, kFixed32, "Value.simple_value");
                        const uint32_t bits = uint32_t(value.fixed(4));
                        std::memcpy(&simple, &bits, 4);
                    } else {
                        value.skip(vw);
                    }
                }
                ev.values.emplace_back(std::move(tag), simple);
            }
        } else {
            r.skip(wire);
        }
    }
    return ev;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
    const auto* p = static_cast<const uint8_t*>(data);
    uint32_t c = ~crc;
    for (size_t i = 0; i < n; ++i) c = kCrc32cTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return ~c;
}

uint32_t masked_crc32c(const void* data, size_t n) {
    const uint32_t crc = crc32c(data, n);
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    MOE_REQUIRE(!ec, dir, ": cannot create the TensorBoard directory: ", ec.message());
    const std::string base = dir + "/events.out.tfevents." +
                             std::to_string(int64_t(std::time(nullptr))) + "." + hostname();
    // O_EXCL: two writers started in the same second (a quick resume, two runs sharing a
    // directory) must not truncate each other's file.
    int fd = -1;
    for (int n = 0; fd < 0; ++n) {
        path_ = n == 0 ? base : base + "." + std::to_string(n);
        fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        MOE_REQUIRE(fd >= 0 || (errno == EEXIST && n < 1000), path_,
                    ": cannot create the TensorBoard event file: ", std::strerror(errno));
    }
    file_ = ::fdopen(fd, "wb");
    if (!file_) ::close(fd);
    MOE_REQUIRE(file_, path_, ": cannot open the TensorBoard event file");
    std::string event;
    put_double(event, 1, now_seconds());
    put_bytes(event, 3, "brain.Event:2");
    write_record(event);
    flush();
}

TensorBoardWriter::~TensorBoardWriter() {
    if (file_) std::fclose(file_);
}

void TensorBoardWriter::write_record(const std::string& data) {
    std::string rec;
    rec.reserve(data.size() + 16);
    put_le(rec, data.size(), 8);
    put_le(rec, masked_crc32c(rec.data(), 8), 4);
    rec += data;
    put_le(rec, masked_crc32c(data.data(), data.size()), 4);
    MOE_REQUIRE(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size(), path_,
                ": write failed: ", std::strerror(errno));
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
    std::string v;
    put_bytes(v, 1, tag);
    const float f = float(value);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    put_key(v, 2, kFixed32);
    put_le(v, bits, 4);
    std::string summary;
    put_bytes(summary, 1, v);
    std::string event;
    put_double(event, 1, now_seconds());
    put_key(event, 2, kVarint);
    put_varint(event, uint64_t(step));  // int64: negatives take 10 bytes, as protobuf says
    put_bytes(event, 5, summary);
    write_record(event);
}

void TensorBoardWriter::flush() {
    MOE_REQUIRE(std::fflush(file_) == 0, path_, ": flush failed: ", std::strerror(errno));
}

std::vector<TensorBoardEvent> read_tensorboard_events(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    MOE_REQUIRE(in.good(), path, ": cannot open");
    const std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto* base = reinterpret_cast<const uint8_t*>(buf.data());
    std::vector<TensorBoardEvent> events;
    size_t at = 0;
    while (at < buf.size()) {
        const std::string where =
            path + ": record " + std::to_string(events.size()) + " at byte " + std::to_string(at);
        MOE_REQUIRE(buf.size() - at >= 12, where, ": truncated header");
        const uint64_t len = get_le(base + at, 8);
        MOE_REQUIRE(uint32_t(get_le(base + at + 8, 4)) == masked_crc32c(base + at, 8), where,
                    ": length CRC mismatch");
        MOE_REQUIRE(buf.size() - at - 12 >= len && buf.size() - at - 12 - len >= 4, where,
                    ": truncated data (length ", len, ")");
        const uint8_t* data = base + at + 12;
        MOE_REQUIRE(uint32_t(get_le(data + len, 4)) == masked_crc32c(data, len), where,
                    ": data CRC mismatch");
        events.push_back(decode_event(data, data + len, where));
        at += 12 + len + 4;
    }
    return events;
}

}  // namespace moe::train
