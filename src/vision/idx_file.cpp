#include "vision/idx_file.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "core/check.h"
#include "core/memory_budget.h"
#include "io/input_file.h"

namespace moe::vision {

namespace {

// Far above any real IDX file (Fashion-MNIST's training images are 47 MB) and below what
// would exhaust memory: a corrupt header asking for more is refused before reading.
constexpr uint64_t kMaxIdxBytes = uint64_t(1) << 34;
// Data is read in chunks and the buffer grows with what actually arrives, so a header that
// claims 16 GiB in a 1 KB file costs 1 KB, not a 16 GiB allocation, before it is refused.
constexpr size_t kChunk = size_t(1) << 24;

const char* type_name(int type) {
    switch (type) {
        case 0x08:
            return "unsigned byte";
        case 0x09:
            return "signed byte";
        case 0x0B:
            return "short";
        case 0x0C:
            return "int";
        case 0x0D:
            return "float";
        case 0x0E:
            return "double";
        default:
            return nullptr;
    }
}

std::string hex_byte(int b) {
    static const char* digits = "0123456789abcdef";
    return std::string("0x") + digits[(b >> 4) & 15] + digits[b & 15];
}

std::string dims_text(const std::vector<int64_t>& dims) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
    os << "]";
    return os.str();
}

// gzerror's message without the "<fd:3>: " that zlib puts before it for a descriptor.
std::string zlib_reason(const char* msg) {
    std::string m = msg ? msg : "";
    if (m.rfind("<fd:", 0) == 0) {
        const size_t colon = m.find(": ");
        if (colon != std::string::npos) m = m.substr(colon + 2);
    }
    return m.empty() ? "unknown zlib error" : m;
}

// A gzFile over a descriptor (plain files pass through zlib's transparent mode), closed on
// every path out.
class GzReader {
  public:
    GzReader(int fd, const std::string& path) : path_(path) {
        file_ = gzdopen(fd, "rb");
        if (!file_) {
            ::close(fd);
            MOE_FAIL(path, ": cannot open IDX file through zlib (out of memory)");
        }
        gzbuffer(file_, 1 << 18);
    }
    ~GzReader() { gzclose(file_); }
    GzReader(const GzReader&) = delete;
    GzReader& operator=(const GzReader&) = delete;

    // Up to n bytes; fewer only at the end of the data. A corrupt or cut gzip stream throws.
    size_t read(void* dst, size_t n) {
        size_t done = 0;
        while (done < n) {
            const unsigned want = unsigned(std::min<size_t>(n - done, kChunk));
            const int r = gzread(file_, static_cast<char*>(dst) + done, want);
            int err = Z_OK;
            const char* msg = gzerror(file_, &err);
            // Z_BUF_ERROR with data returned means the stream ended mid-way: a cut file.
            if (r < 0 || (err != Z_OK && err != Z_STREAM_END))
                MOE_FAIL(path_, ": corrupt gzip stream (", zlib_reason(msg), ")");
            if (r == 0) break;
            done += size_t(r);
        }
        return done;
    }

  private:
    gzFile file_ = nullptr;
    std::string path_;
};

}  // namespace

IdxFile read_idx(const std::string& path) {
    const int fd = io::open_regular_file(path, "IDX file", nullptr);
    IdxFile out;
    unsigned char peek[2] = {0, 0};
    out.gzip = ::pread(fd, peek, 2, 0) == 2 && peek[0] == 0x1f && peek[1] == 0x8b;
    GzReader in(fd, path);
    const char* what = out.gzip ? " (after gzip decompression)" : "";

    unsigned char magic[4];
    const size_t got = in.read(magic, 4);
    MOE_REQUIRE(got == 4, path, ": truncated IDX header: ", got, " bytes", what,
                ", the magic alone is 4");
    MOE_REQUIRE(magic[0] == 0 && magic[1] == 0, path, ": not an IDX file: the magic starts with ",
                hex_byte(magic[0]), " ", hex_byte(magic[1]), ", IDX files start with 0x00 0x00");
    const int type = magic[2];
    if (type != 0x08) {
        const char* name = type_name(type);
        MOE_FAIL(path, ": IDX data type ", hex_byte(type),
                 name ? std::string(" (") + name + ") is not supported"
                      : std::string(" is not a known IDX type"),
                 "; only 0x08 (unsigned byte) is read");
    }
    const int ndims = magic[3];
    MOE_REQUIRE(ndims >= 1 && ndims <= 4, path, ": IDX header has ndims = ", ndims,
                ", expected 1 to 4");

    unsigned char raw[16];
    const size_t header = 4 + 4 * size_t(ndims);
    const size_t got_dims = in.read(raw, 4 * size_t(ndims));
    MOE_REQUIRE(got_dims == 4 * size_t(ndims), path, ": truncated IDX header: ", 4 + got_dims,
                " bytes", what, ", the header of ", ndims, " dimensions is ", header);
    uint64_t expected = 1;
    for (int d = 0; d < ndims; ++d) {
        const unsigned char* b = raw + 4 * d;
        const int64_t v =
            int64_t((uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3]);
        MOE_REQUIRE(v > 0, path, ": IDX dimension ", d, " is 0 (dims ", dims_text(out.dims),
                    " so far)");
        out.dims.push_back(v);
        // The running product is <= 2^34 and a dim < 2^32: the product fits in 66 bits,
        // so it saturates rather than wraps.
        expected = sat_mul(expected, uint64_t(v));
        MOE_REQUIRE(expected <= kMaxIdxBytes, path, ": IDX dims ", dims_text(out.dims),
                    d + 1 < ndims ? " (and more)" : "", " need more data than the limit of ",
                    kMaxIdxBytes, " bytes (", format_bytes(kMaxIdxBytes), ")");
    }

    size_t have = 0;
    while (have < expected) {
        const size_t chunk = std::min<size_t>(size_t(expected) - have, kChunk);
        out.data.resize(have + chunk);
        const size_t r = in.read(out.data.data() + have, chunk);
        have += r;
        if (r < chunk) break;
    }
    MOE_REQUIRE(have == expected, path, ": truncated IDX file: dims ", dims_text(out.dims),
                " need ", expected, " bytes of data (", header + expected,
                " with the header), the file holds ", have, " (", header + have, ")", what);
    // Count what follows, in a small buffer: a trailing tail of any size costs no memory.
    uint64_t extra = 0;
    char scratch[1 << 16];
    for (size_t r; (r = in.read(scratch, sizeof(scratch))) > 0;) extra += r;
    MOE_REQUIRE(extra == 0, path, ": trailing data after the IDX data: dims ", dims_text(out.dims),
                " need ", expected, " bytes of data (", header + expected,
                " with the header), the file holds ", expected + extra, " (",
                header + expected + extra, "), ", extra, " too many", what);
    return out;
}

const std::vector<std::string>& fashion_mnist_class_names() {
    static const std::vector<std::string> names = {
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    return names;
}

ImageSet read_idx_images(const std::string& images_path, const std::string& labels_path,
                         int64_t n_classes) {
    MOE_CHECK(n_classes >= 1 && n_classes <= INT32_MAX, "read_idx_images: n_classes = ", n_classes);
    IdxFile images = read_idx(images_path);
    MOE_REQUIRE(images.dims.size() == 3, images_path, ": an IDX images file must be 3-D [count, ",
                "height, width], this one has dims ", dims_text(images.dims));
    IdxFile labels = read_idx(labels_path);
    MOE_REQUIRE(labels.dims.size() == 1, labels_path, ": an IDX labels file must be 1-D [count], ",
                "this one has dims ", dims_text(labels.dims));
    MOE_REQUIRE(images.dims[0] == labels.dims[0], images_path, " holds ", images.dims[0],
                " images but ", labels_path, " holds ", labels.dims[0], " labels");
    ImageSet set;
    set.count = images.dims[0];
    set.height = images.dims[1];
    set.width = images.dims[2];
    set.channels = 1;
    set.labels.resize(size_t(set.count));
    for (int64_t i = 0; i < set.count; ++i) {
        const int v = labels.data[size_t(i)];
        MOE_REQUIRE(v < n_classes, labels_path, ": label ", i, " is ", v, ", outside [0, ",
                    n_classes, ") for ", n_classes, " classes");
        set.labels[size_t(i)] = v;
    }
    set.pixels = std::move(images.data);
    for (int64_t c = 0; c < n_classes; ++c) set.class_names.push_back(std::to_string(c));
    return set;
}

ImageSet read_fashion_mnist(const std::string& dir, bool test_set) {
    namespace fs = std::filesystem;
    const std::string prefix = test_set ? "t10k" : "train";
    // The compressed name first: it is what the Debian package and the original site ship.
    auto find = [&](const std::string& base) {
        for (const std::string& name : {base + ".gz", base}) {
            const fs::path p = fs::path(dir) / name;
            std::error_code ec;
            if (fs::exists(p, ec)) return p.string();
        }
        MOE_FAIL(dir, ": no Fashion-MNIST ", test_set ? "test" : "training", " file: neither ",
                 base, ".gz nor ", base, " is there (Debian's dataset-fashion-mnist installs them ",
                 "in /usr/share/datasets/fashion-mnist)");
    };
    const std::string images = find(prefix + "-images-idx3-ubyte");
    const std::string labels = find(prefix + "-labels-idx1-ubyte");
    ImageSet set = read_idx_images(images, labels, 10);
    set.class_names = fashion_mnist_class_names();
    return set;
}

}  // namespace moe::vision
