// Heatmaps: the colormap's anchors; the PNG decoded back by a small reader written here (chunk
// CRCs, dimensions, each cell's colour, text actually drawn); the SVG checked by a small XML
// well-formedness scanner (balanced tags, escaped labels, one rect per cell with its colour);
// the text table's alignment; and errors (size mismatch, empty, unwritable path).
//
// Set MOE_HEATMAP_SAMPLE=/some/file.png to keep the 40 x 8 sample image for a look by eye.
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "io/heatmap.h"
#include "test_support.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using Rgb = std::array<uint8_t, 3>;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

// ---------------------------------------------------------------------------------------
// A minimal PNG reader: 8-bit RGB, no interlace, every scanline filter 0 (what we write).

struct Image {
    int w = 0, h = 0;
    std::vector<uint8_t> rgb;  // [h, w, 3]
    Rgb at(int x, int y) const {
        const size_t i = (size_t(y) * w + x) * 3;
        return {rgb[i], rgb[i + 1], rgb[i + 2]};
    }
};

uint32_t be32(const std::string& s, size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | uint8_t(s[at + i]);
    return v;
}

::testing::AssertionResult read_png(const std::string& path, Image* img) {
    const std::string f = read_all(path);
    if (f.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0)
        return ::testing::AssertionFailure() << "bad signature";
    std::vector<std::string> types;
    std::string idat;
    size_t at = 8;
    while (at < f.size()) {
        if (at + 12 > f.size()) return ::testing::AssertionFailure() << "truncated chunk";
        const uint32_t len = be32(f, at);
        if (at + 12 + len > f.size()) return ::testing::AssertionFailure() << "chunk past end";
        const std::string type = f.substr(at + 4, 4), data = f.substr(at + 8, len);
        const uint32_t crc =
            uint32_t(crc32(0, reinterpret_cast<const Bytef*>(f.data() + at + 4), uInt(4 + len)));
        if (crc != be32(f, at + 8 + len))
            return ::testing::AssertionFailure() << "bad CRC in chunk " << type;
        types.push_back(type);
        if (type == "IHDR") {
            if (len != 13) return ::testing::AssertionFailure() << "IHDR length " << len;
            img->w = int(be32(data, 0));
            img->h = int(be32(data, 4));
            if (data.substr(8) != std::string("\x08\x02\x00\x00\x00", 5))
                return ::testing::AssertionFailure() << "not 8-bit RGB, non-interlaced";
        } else if (type == "IDAT") {
            idat += data;
        }
        at += 12 + len;
    }
    if (types.size() < 3 || types.front() != "IHDR" || types.back() != "IEND")
        return ::testing::AssertionFailure() << "chunks must be IHDR .. IDAT .. IEND";
    const size_t stride = 1 + size_t(img->w) * 3;
    std::vector<uint8_t> raw(stride * img->h + 1);  // one spare byte to detect excess data
    uLongf n = uLongf(raw.size());
    const int rc =
        uncompress(raw.data(), &n, reinterpret_cast<const Bytef*>(idat.data()), uLong(idat.size()));
    if (rc != Z_OK) return ::testing::AssertionFailure() << "uncompress failed: " << rc;
    if (n != stride * img->h)
        return ::testing::AssertionFailure() << n << " bytes of pixels, want " << stride * img->h;
    img->rgb.clear();
    for (int y = 0; y < img->h; ++y) {
        if (raw[y * stride] != 0) return ::testing::AssertionFailure() << "filter on row " << y;
        img->rgb.insert(img->rgb.end(), raw.begin() + y * stride + 1,
                        raw.begin() + (y + 1) * stride);
    }
    return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------
// A minimal XML well-formedness check: a prolog, then tags that nest and close, quoted
// attributes, and no raw '<' or unknown '&' in text or attribute values.

bool entities_ok(const std::string& s) {
    for (size_t i = s.find('&'); i != std::string::npos; i = s.find('&', i + 1)) {
        bool ok = false;
        for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"})
            ok = ok || s.compare(i, std::strlen(e), e) == 0;
        if (!ok) return false;
    }
    return s.find('<') == std::string::npos;
}

::testing::AssertionResult well_formed(const std::string& x) {
    size_t at = 0;
    if (x.rfind("<?xml", 0) == 0) at = x.find("?>") + 2;
    std::vector<std::string> stack;
    int roots = 0;
    while (at < x.size()) {
        const size_t lt = x.find('<', at);
        const std::string text = x.substr(at, lt == std::string::npos ? x.npos : lt - at);
        if (!entities_ok(text)) return ::testing::AssertionFailure() << "bad text: " << text;
        if (stack.empty() && text.find_first_not_of(" \n") != std::string::npos)
            return ::testing::AssertionFailure() << "text outside the root: " << text;
        if (lt == std::string::npos) break;
        const size_t gt = x.find('>', lt);
        if (gt == std::string::npos) return ::testing::AssertionFailure() << "unclosed tag";
        std::string tag = x.substr(lt + 1, gt - lt - 1);
        at = gt + 1;
        if (tag[0] == '/') {
            if (stack.empty() || stack.back() != tag.substr(1))
                return ::testing::AssertionFailure() << "mismatched </" << tag.substr(1) << ">";
            stack.pop_back();
            continue;
        }
        const bool self_closing = tag.back() == '/';
        if (self_closing) tag.pop_back();
        const size_t name_end = tag.find(' ');
        const std::string name = tag.substr(0, name_end);
        // Attributes: name="value" pairs separated by spaces.
        for (size_t i = name_end; i != std::string::npos && i < tag.size();) {
            const size_t eq = tag.find("=\"", i);
            const size_t close = eq == std::string::npos ? eq : tag.find('"', eq + 2);
            if (close == std::string::npos)
                return ::testing::AssertionFailure() << "bad attributes in <" << tag << ">";
            if (!entities_ok(tag.substr(eq + 2, close - eq - 2)))
                return ::testing::AssertionFailure() << "bad attribute value in <" << tag << ">";
            i = tag.find_first_not_of(' ', close + 1);
        }
        if (stack.empty()) ++roots;
        if (!self_closing) stack.push_back(name);
    }
    if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> open";
    if (roots != 1) return ::testing::AssertionFailure() << roots << " root elements";
    return ::testing::AssertionSuccess();
}

size_t count(const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
    return n;
}

std::string hex(const Rgb& c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c[0], c[1], c[2]);
    return buf;
}

// ---------------------------------------------------------------------------------------

io::Heatmap small_map() {
    io::Heatmap h;
    h.title = "Routing <test> & more";
    h.row_labels = {"code", "a<b & c", "math"};
    h.col_labels = {"e0", "e1", "e2", "\"e3\""};
    h.values = {0.10, 0.20,  0.30, 0.40,  //
                0.05, kNaN,  0.90, 0.25,  //
                0.50, 0.475, 0.60, 0.35};
    h.value_label = "fraction of tokens";
    return h;
}

// domains x experts usage, each row a distribution peaked on a few experts.
io::Heatmap usage_map(int rows, int cols) {
    io::Heatmap h;
    h.title = "Domain x expert usage (layer 3)";
    h.value_label = "fraction of tokens";
    for (int r = 0; r < rows; ++r) h.row_labels.push_back("domain " + std::to_string(r));
    for (int c = 0; c < cols; ++c)
        h.col_labels.push_back(std::string("e") += std::to_string(c));  // not "e" + ...:
                                                                        // GCC 12 -Wrestrict bug
    for (int r = 0; r < rows; ++r) {
        double sum = 0;
        std::vector<double> row(cols);
        for (int c = 0; c < cols; ++c) {
            const double d = double((c - r * 3 % cols + cols) % cols);
            row[c] = std::exp(-0.5 * d * d / 2.0) + 0.05;
            sum += row[c];
        }
        for (double v : row) h.values.push_back(v / sum);
    }
    return h;
}

class Heatmap : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("moe_hm_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string file(const std::string& name) const { return (dir_ / name).string(); }
    bool no_temp_files() const {
        for (const auto& e : fs::directory_iterator(dir_))
            if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
        return true;
    }

    fs::path dir_;
};

// ---------------------------------------------------------------------------------------
// Colours

TEST(HeatmapColor, ViridisHitsItsAnchorsAndInterpolates) {
    EXPECT_EQ(io::viridis(0.0), (Rgb{0x44, 0x01, 0x54}));
    EXPECT_EQ(io::viridis(1.0 / 9), (Rgb{0x48, 0x28, 0x78}));
    EXPECT_EQ(io::viridis(6.0 / 9), (Rgb{0x35, 0xB7, 0x79}));
    EXPECT_EQ(io::viridis(1.0), (Rgb{0xFD, 0xE7, 0x25}));
    // Half-way between anchors 4 (#26828e) and 5 (#1f9e89), rounded half away from zero.
    EXPECT_EQ(io::viridis(0.5), (Rgb{35, 144, 140}));
    // Against matplotlib's own table, at the quartiles (its 5-class palette #3b528b, #21918c,
    // #5ec962): within 3/255 between the anchors.
    const Rgb quartiles[3] = {{0x3b, 0x52, 0x8b}, {0x21, 0x91, 0x8c}, {0x5e, 0xc9, 0x62}};
    for (int q = 1; q <= 3; ++q)
        for (int k = 0; k < 3; ++k)
            EXPECT_NEAR(io::viridis(q * 64 / 255.0)[k], quartiles[q - 1][k], 3) << q << "," << k;
    EXPECT_EQ(io::viridis(-3.0), io::viridis(0.0));
    EXPECT_EQ(io::viridis(kNaN), io::viridis(0.0));
    EXPECT_EQ(io::viridis(7.0), io::viridis(1.0));
    // Sequential: luminance rises along the whole scale.
    double prev = -1;
    for (int i = 0; i <= 200; ++i) {
        const Rgb c = io::viridis(i / 200.0);
        const double lum = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
        EXPECT_GT(lum, prev) << "t=" << i / 200.0;
        prev = lum;
    }
}

TEST(HeatmapColor, ValuesMapOntoTheRange) {
    EXPECT_EQ(io::heatmap_color(2.0, 2.0, 6.0), io::viridis(0.0));
    EXPECT_EQ(io::heatmap_color(5.0, 2.0, 6.0), io::viridis(0.75));
    EXPECT_EQ(io::heatmap_color(6.0, 2.0, 6.0), io::viridis(1.0));
    EXPECT_EQ(io::heatmap_color(kNaN, 2.0, 6.0), io::kHeatmapNanColor);
    EXPECT_EQ(io::heatmap_color(INFINITY, 2.0, 6.0), io::viridis(1.0));
    EXPECT_EQ(io::heatmap_color(-INFINITY, 2.0, 6.0), io::viridis(0.0));
    EXPECT_EQ(io::heatmap_color(3.0, 3.0, 3.0), io::viridis(0.5));  // all values equal
}

// ---------------------------------------------------------------------------------------
// PNG

TEST_F(Heatmap, PngDecodesWithEachCellInItsColour) {
    const io::Heatmap h = small_map();
    const std::string path = file("small.png");
    io::write_heatmap_png(h, path);
    EXPECT_TRUE(no_temp_files());
    Image img;
    ASSERT_TRUE(read_png(path, &img));
    const io::HeatmapLayout L = io::heatmap_layout(h);
    ASSERT_EQ(img.w, L.width);
    ASSERT_EQ(img.h, L.height);
    EXPECT_DOUBLE_EQ(L.vmin, 0.05);
    EXPECT_DOUBLE_EQ(L.vmax, 0.90);
    // One pixel just inside each cell's corner, away from the centred value text.
    auto corner = [&](int r, int c) {
        return img.at(L.grid_x + c * L.cell_w + L.cell_inset + 1,
                      L.grid_y + r * L.cell_h + L.cell_inset + 1);
    };
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 4; ++c)
            EXPECT_EQ(corner(r, c), io::heatmap_color(h.values[r * 4 + c], L.vmin, L.vmax))
                << "cell " << r << "," << c;
    // Independently of heatmap_color: the minimum is viridis' first anchor, the maximum its
    // last, 0.475 (half-way) its middle, and NaN is grey.
    EXPECT_EQ(corner(1, 0), (Rgb{0x44, 0x01, 0x54}));
    EXPECT_EQ(corner(1, 2), (Rgb{0xFD, 0xE7, 0x25}));
    EXPECT_EQ(corner(2, 1), (Rgb{35, 144, 140}));
    EXPECT_EQ(corner(1, 1), (Rgb{190, 190, 190}));
    // The colour bar runs from the maximum colour at the top to the minimum at the bottom.
    const Rgb top = img.at(L.bar_x + L.bar_w / 2, L.bar_y);
    const Rgb bottom = img.at(L.bar_x + L.bar_w / 2, L.bar_y + L.bar_h - 1);
    for (int k = 0; k < 3; ++k) {
        EXPECT_NEAR(top[k], io::viridis(1.0)[k], 3);
        EXPECT_NEAR(bottom[k], io::viridis(0.0)[k], 3);
    }
    // Each value is printed in its cell: the cell's middle holds pixels of the text colour
    // (white on dark cells, black on light ones).
    ASSERT_GT(L.value_scale, 0);
    for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 4; ++c) {
            int ink = 0;
            const Rgb bg = corner(r, c);
            for (int y = L.grid_y + r * L.cell_h + 4; y < L.grid_y + (r + 1) * L.cell_h - 4; ++y)
                for (int x = L.grid_x + c * L.cell_w + 4; x < L.grid_x + (c + 1) * L.cell_w - 4;
                     ++x) {
                    const Rgb p = img.at(x, y);
                    ink += p != bg && (p == Rgb{0, 0, 0} || p == Rgb{255, 255, 255});
                }
            EXPECT_GT(ink, 8) << "no value text in cell " << r << "," << c;
        }
    }
}

TEST_F(Heatmap, PngDrawsTheTitleAndLabels) {
    io::Heatmap h = small_map();
    auto dark_pixels_above_grid = [&](const io::Heatmap& hm) {
        io::write_heatmap_png(hm, file("t.png"));
        Image img;
        EXPECT_TRUE(read_png(file("t.png"), &img));
        const io::HeatmapLayout L = io::heatmap_layout(hm);
        int n = 0;
        for (int y = 0; y < L.grid_y; ++y)
            for (int x = 0; x < img.w; ++x) n += img.at(x, y)[0] < 128;
        return n;
    };
    const int with_text = dark_pixels_above_grid(h);
    EXPECT_GT(with_text, 200);  // a 21-character title at scale 3 inks well over 1000 pixels
    h.title.clear();
    h.col_labels.assign(4, "");
    EXPECT_EQ(dark_pixels_above_grid(h), 0);
}

TEST_F(Heatmap, FortyByEightSampleAndFortyBySixtyFourFit) {
    const io::Heatmap h = usage_map(40, 8);
    const std::string path = file("sample.png");
    io::write_heatmap_png(h, path);
    Image img;
    ASSERT_TRUE(read_png(path, &img));
    const io::HeatmapLayout L = io::heatmap_layout(h);
    EXPECT_EQ(img.w, L.width);
    EXPECT_EQ(img.h, L.height);
    EXPECT_GT(L.value_scale, 0);  // 8 columns leave room for the numbers
    if (const char* keep = std::getenv("MOE_HEATMAP_SAMPLE"))
        fs::copy_file(path, keep, fs::copy_options::overwrite_existing);

    const io::Heatmap big = usage_map(40, 64);
    const io::HeatmapLayout B = io::heatmap_layout(big);
    EXPECT_LE(B.width, 2000);
    EXPECT_LE(B.height, 1600);
    EXPECT_GE(B.cell_w, 20);  // still a visible cell, not a hairline
    EXPECT_GE(B.cell_h, 20);
    io::write_heatmap_png(big, file("big.png"));
    Image bimg;
    ASSERT_TRUE(read_png(file("big.png"), &bimg));
    EXPECT_EQ(bimg.w, B.width);
    EXPECT_EQ(bimg.at(B.grid_x + 63 * B.cell_w + 2, B.grid_y + 39 * B.cell_h + 2),
              io::heatmap_color(big.values.back(), B.vmin, B.vmax));

    // Far more cells than pixels budgeted: cells shrink to the minimum, labels thin out.
    const io::HeatmapLayout T = io::heatmap_layout(usage_map(600, 900));
    EXPECT_EQ(T.cell_w, 3);
    EXPECT_EQ(T.value_scale, 0);
}

TEST_F(Heatmap, DegenerateRangesStillDraw) {
    // One cell: min == max, drawn in the middle colour.
    io::Heatmap one{"one", {"r"}, {"c"}, {0.25}, ""};
    io::write_heatmap_png(one, file("one.png"));
    Image img;
    ASSERT_TRUE(read_png(file("one.png"), &img));
    io::HeatmapLayout L = io::heatmap_layout(one);
    EXPECT_EQ(img.at(L.grid_x + 2, L.grid_y + 2), io::viridis(0.5));
    // Only NaN and infinities: no finite range; NaN grey, +inf at the top colour.
    io::Heatmap odd{"odd", {"r"}, {"a", "b", "c"}, {kNaN, INFINITY, -INFINITY}, "x"};
    io::write_heatmap_png(odd, file("odd.png"));
    ASSERT_TRUE(read_png(file("odd.png"), &img));
    L = io::heatmap_layout(odd);
    EXPECT_EQ(img.at(L.grid_x + 2, L.grid_y + 2), io::kHeatmapNanColor);
    EXPECT_EQ(img.at(L.grid_x + L.cell_w + 2, L.grid_y + 2), io::viridis(1.0));
    EXPECT_EQ(img.at(L.grid_x + 2 * L.cell_w + 2, L.grid_y + 2), io::viridis(0.0));
    EXPECT_EQ(io::format_table(odd, 1), "odd (x)\n   a    b     c\nr  -  inf  -inf\n");
}

// ---------------------------------------------------------------------------------------
// SVG

TEST_F(Heatmap, SvgIsWellFormedWithEscapedLabelsAndOneRectPerCell) {
    const io::Heatmap h = small_map();
    const std::string path = file("small.svg");
    io::write_heatmap_svg(h, path);
    EXPECT_TRUE(no_temp_files());
    const std::string svg = read_all(path);
    EXPECT_TRUE(well_formed(svg));
    EXPECT_EQ(count(svg, "<rect class=\"cell\""), 12u);
    EXPECT_EQ(count(svg, "<rect class=\"colorbar\""), 1u);
    EXPECT_NE(svg.find(">a&lt;b &amp; c</text>"), std::string::npos);
    EXPECT_NE(svg.find(">&quot;e3&quot;</text>"), std::string::npos);
    EXPECT_NE(svg.find("Routing &lt;test&gt; &amp; more"), std::string::npos);
    EXPECT_EQ(svg.find("a<b"), std::string::npos);
    EXPECT_EQ(svg.find("<test>"), std::string::npos);
    // Same geometry as the PNG, and each cell's fill is its value's colour, in row order.
    const io::HeatmapLayout L = io::heatmap_layout(h);
    EXPECT_NE(svg.find("width=\"" + std::to_string(L.width) + "\" height=\"" +
                       std::to_string(L.height) + "\""),
              std::string::npos);
    size_t at = 0;
    for (size_t i = 0; i < h.values.size(); ++i) {
        at = svg.find("<rect class=\"cell\"", at + 1);
        ASSERT_NE(at, std::string::npos);
        const std::string rect = svg.substr(at, svg.find('>', at) - at);
        EXPECT_NE(rect.find("fill=\"" + hex(io::heatmap_color(h.values[i], L.vmin, L.vmax))),
                  std::string::npos)
            << rect;
    }
    EXPECT_NE(svg.find("fill=\"#bebebe\""), std::string::npos);  // the NaN cell
    EXPECT_NE(svg.find(">-</text>"), std::string::npos);         // its printed value
    EXPECT_NE(svg.find(">n/a</text>"), std::string::npos);       // and its legend
    EXPECT_NE(svg.find("<title>a&lt;b &amp; c / e2: 0.9</title>"), std::string::npos);
}

TEST_F(Heatmap, SvgSurvivesControlCharactersAndBadUtf8) {
    io::Heatmap h = small_map();
    h.row_labels[0] = "line\nbreak";
    h.row_labels[2] = std::string("bad \xff\xfe utf8 \xc3\xa9");  // invalid bytes, then é
    io::write_heatmap_svg(h, file("odd.svg"));
    const std::string svg = read_all(file("odd.svg"));
    EXPECT_TRUE(well_formed(svg));
    EXPECT_NE(svg.find(">line break</text>"), std::string::npos);
    EXPECT_NE(svg.find(">bad ?? utf8 \xc3\xa9</text>"), std::string::npos);
    io::write_heatmap_png(h, file("odd.png"));  // '?' glyphs for what the font lacks
    Image img;
    EXPECT_TRUE(read_png(file("odd.png"), &img));
}

// ---------------------------------------------------------------------------------------
// Table

TEST(HeatmapTable, ExactSmallTable) {
    io::Heatmap h;
    h.title = "usage";
    h.value_label = "fraction";
    h.row_labels = {"code", "a"};
    h.col_labels = {"expert 0", "e1", "e2"};
    h.values = {0.5, 0.25, -12.125, kNaN, 1, 0.0001};
    EXPECT_EQ(io::format_table(h, 2),
              "usage (fraction)\n"
              "      expert 0    e1      e2\n"
              "code      0.50  0.25  -12.12\n"
              "a            -  1.00    0.00\n");
}

TEST(HeatmapTable, ColumnsAlign) {
    io::Heatmap h = usage_map(7, 5);
    h.row_labels[3] = "r\xc3\xa9sum\xc3\xa9 domain";  // two 2-byte characters, width 14
    h.col_labels[1] = "a much longer label";
    h.values[2] = -1234.5;
    h.values[9] = kNaN;
    const std::string t = io::format_table(h, 3);
    std::vector<std::string> lines;
    std::istringstream in(t);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    ASSERT_EQ(lines.size(), 1u + 1u + 7u);
    EXPECT_EQ(lines[0], "Domain x expert usage (layer 3) (fraction of tokens)");
    // Code points per line: every line of the grid is equally long (columns right-aligned,
    // the row labels left-aligned), and each value ends where its column label ends.
    auto width = [](const std::string& s) {
        size_t n = 0;
        for (char c : s) n += (c & 0xC0) != 0x80;
        return n;
    };
    auto ends = [&](const std::string& s) {
        std::vector<size_t> e;
        size_t col = 0;
        for (size_t i = 0; i < s.size(); ++i) {
            col += (s[i] & 0xC0) != 0x80;
            // A field ends before a run of two spaces or at the end of the line.
            if (s[i] != ' ' && (i + 1 == s.size() || s.compare(i + 1, 2, "  ") == 0))
                e.push_back(col);
        }
        return std::vector<size_t>(e.end() - 5, e.end());  // the 5 value columns
    };
    const std::vector<size_t> header_ends = ends(lines[1]);
    for (size_t i = 1; i < lines.size(); ++i) {
        EXPECT_EQ(width(lines[i]), width(lines[1])) << lines[i];
        EXPECT_EQ(ends(lines[i]), header_ends) << lines[i];
        EXPECT_NE(lines[i].back(), ' ');
    }
    EXPECT_NE(lines[2].find("-1234.500"), std::string::npos);
    EXPECT_EQ(lines[3].substr(lines[3].size() - 3), "  -");  // the NaN, in the last column
}

// ---------------------------------------------------------------------------------------
// Errors

TEST_F(Heatmap, SizeMismatchEmptyAndUnwritablePathAreErrors) {
    io::Heatmap h = small_map();
    h.values.pop_back();
    const std::string png = file("bad.png"), svg = file("bad.svg");
    EXPECT_TRUE(test::throws_error_with([&] { io::write_heatmap_png(h, png); },
                                        {png, "3 row labels x 4 column labels", "11 values"}));
    EXPECT_TRUE(test::throws_error_with([&] { io::write_heatmap_svg(h, svg); },
                                        {svg, "12 cells but 11 values"}));
    EXPECT_TRUE(test::throws_error_with([&] { io::format_table(h, 3); },
                                        {"format_table", "12 cells but 11 values"}));
    EXPECT_FALSE(fs::exists(png));
    EXPECT_FALSE(fs::exists(svg));

    io::Heatmap empty;
    EXPECT_TRUE(
        test::throws_error_with([&] { io::write_heatmap_png(empty, png); }, {png, "no cells"}));
    EXPECT_EQ(io::format_table(empty, 2), "\n");  // nothing to show but an empty header

    const std::string nowhere = file("missing_dir/x.png");
    EXPECT_TRUE(test::throws_error_with([&] { io::write_heatmap_png(small_map(), nowhere); },
                                        {nowhere, "cannot create"}));
    EXPECT_TRUE(test::throws_error_with([&] { io::format_table(small_map(), -1); },
                                        {"format_table", "precision -1"}));
}

TEST_F(Heatmap, RewritingReplacesTheFileAtomically) {
    const std::string path = file("again.png");
    io::write_heatmap_png(usage_map(3, 3), path);
    io::write_heatmap_png(small_map(), path);
    Image img;
    ASSERT_TRUE(read_png(path, &img));
    EXPECT_EQ(img.w, io::heatmap_layout(small_map()).width);
    EXPECT_TRUE(no_temp_files());
}

}  // namespace
}  // namespace moe
