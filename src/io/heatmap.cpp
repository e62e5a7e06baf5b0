#include "io/heatmap.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "core/check.h"
#include "io/atomic_file.h"
#include "io/bitmap_font.h"

namespace moe::io {

namespace {

using Rgb = std::array<uint8_t, 3>;

constexpr Rgb kWhite = {255, 255, 255};
constexpr Rgb kBlack = {0, 0, 0};
constexpr Rgb kTextGrey = {40, 40, 40};

int text_width(size_t chars, int scale) {
    return chars == 0 ? 0 : int(chars) * kAdvance * scale - scale;
}

// ---------------------------------------------------------------------------------------
// Text: labels arrive as arbitrary bytes; the SVG needs valid XML characters and the table
// one line a label, so both see a sanitised copy.

// Valid UTF-8 with control characters turned into spaces; each invalid byte becomes '?'.
std::string sanitize_utf8(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const auto b = uint8_t(s[i]);
        if (b < 0x80) {
            out += (b < 0x20 || b == 0x7F) ? ' ' : char(b);
            ++i;
            continue;
        }
        const int n = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 && b < 0xE0 ? 2 : 0;
        bool ok = n > 0 && b < 0xF5 && i + n <= s.size();
        uint32_t cp = ok ? b & (0x7F >> n) : 0;
        for (int k = 1; ok && k < n; ++k) {
            const auto c = uint8_t(s[i + k]);
            ok = (c & 0xC0) == 0x80;
            cp = (cp << 6) | (c & 0x3F);
        }
        // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid too.
        ok = ok && !(n == 3 && cp < 0x800) && !(n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) &&
             !(cp >= 0xD800 && cp <= 0xDFFF);
        if (ok && cp >= 0x80 && cp < 0xA0) {  // C1 controls
            out += ' ';
            i += n;
        } else if (ok) {
            out.append(s, i, n);
            i += n;
        } else {
            out += '?';
            ++i;
        }
    }
    return out;
}

// Code points of valid UTF-8: every byte that is not a continuation byte starts one.
size_t u8_length(const std::string& s) {
    return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// At most `n` code points; a longer string keeps n - 3 and ends in "...".
std::string u8_truncate(const std::string& s, size_t n) {
    if (u8_length(s) <= n) return s;
    size_t keep = n >= 3 ? n - 3 : 0, i = 0;
    for (size_t seen = 0; i < s.size(); ++i) {
        if ((s[i] & 0xC0) != 0x80 && seen++ == keep) break;
    }
    return s.substr(0, i) + std::string(std::min<size_t>(n, 3), '.');
}

// What the bitmap font can draw: one '?' per non-ASCII code point.
std::string to_ascii(const std::string& s) {
    std::string out;
    for (char c : s) {
        if ((c & 0x80) == 0) {
            out += c;
        } else if ((c & 0xC0) != 0x80) {
            out += '?';
        }
    }
    return out;
}

std::string xml_escape(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '&':
                out += "&amp;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&apos;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

// Fixed-point with `decimals` digits; NaN is "-" and a value that rounds to zero loses its
// sign ("-0.00" would suggest a negative value that is not there).
std::string format_fixed(double v, int decimals) {
    if (std::isnan(v)) return "-";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    std::string s = buf;
    if (s[0] == '-' && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);
    return s;
}

std::string format_general(double v, int digits) {
    if (std::isnan(v)) return "-";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    return buf;
}

// Decimals for the numbers printed in cells: two significant digits of the largest magnitude
// (0.87 -> "0.87", 4.2 -> "4.2", 37.5 -> "38"), capped at 3 so that 1e-5 does not need a cell
// 9 characters wide; none when every value is an integer (token counts). The cell is a
// reading aid to its colour; format_table and the SVG tooltips carry the exact values.
int cell_decimals(const std::vector<double>& values) {
    double maxabs = 0;
    bool integral = true;
    for (double v : values) {
        if (!std::isfinite(v)) continue;
        maxabs = std::max(maxabs, std::fabs(v));
        integral = integral && v == std::round(v) && std::fabs(v) < 1e9;
    }
    if (integral) return 0;
    if (maxabs == 0) return 2;
    return std::clamp(1 - int(std::floor(std::log10(maxabs))), 0, 3);
}

bool is_dark(const Rgb& c) {
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] < 128;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Colours

std::array<uint8_t, 3> viridis(double t) {
    // matplotlib's viridis sampled at k/9, k = 0..9 (the same as R's viridis(10)). Linear
    // interpolation between these 10 anchors stays within 3/255 of matplotlib's 256-entry
    // table (the worst is near t = 0.75, where the curve bends: (97, 200, 96) against
    // (94, 201, 98)), which no eye can tell apart in a heatmap cell.
    static constexpr Rgb kAnchors[10] = {{0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3E, 0x4A, 0x89},
                                         {0x31, 0x68, 0x8E}, {0x26, 0x82, 0x8E}, {0x1F, 0x9E, 0x89},
                                         {0x35, 0xB7, 0x79}, {0x6D, 0xCD, 0x59}, {0xB4, 0xDE, 0x2C},
                                         {0xFD, 0xE7, 0x25}};
    if (!(t > 0)) t = 0;  // also catches NaN
    if (t > 1) t = 1;
    const double x = t * 9;
    const int k = std::min(int(x), 8);
    const double f = x - k;
    Rgb out;
    for (int c = 0; c < 3; ++c)
        out[c] = uint8_t(std::lround(kAnchors[k][c] + f * (kAnchors[k + 1][c] - kAnchors[k][c])));
    return out;
}

std::array<uint8_t, 3> heatmap_color(double v, double vmin, double vmax) {
    if (std::isnan(v)) return kHeatmapNanColor;
    if (!(vmax > vmin)) return viridis(0.5);
    return viridis((v - vmin) / (vmax - vmin));
}

// ---------------------------------------------------------------------------------------
// Layout

namespace {

// Pixel budgets: the grid shrinks its cells to stay within these, so that 64 experts fit a
// screen (1600 / 64 = 25 px a column) and 40 domains a page (1400 / 40 = 35 px a row).
constexpr int kMaxGridW = 1600, kMaxGridH = 1400, kMinCell = 3;
constexpr int kMargin = 12;
constexpr int kMaxLabelChars = 24, kMaxTitleChars = 120;
// 64 Mpixel (192 MB of RGB) is far beyond any sensible heatmap; refuse rather than thrash.
constexpr int64_t kMaxPixels = int64_t(64) << 20;

struct Text {
    std::string s;     // sanitised UTF-8
    int x = 0, y = 0;  // horizontal: top-left; vertical: bottom-left (reads upwards)
    int scale = 1;
    Rgb color = kBlack;
    bool vertical = false;
    int align = 0;  // where the text is anchored in the SVG: 0 start, 1 middle, 2 end
};

struct Plan {
    HeatmapLayout L;
    int rows = 0, cols = 0;
    std::vector<std::string> row_labels, col_labels, cell_text;
    std::vector<Text> texts;  // title, labels, values, legend: drawn after the rectangles
    bool any_nan = false;
    int nan_x = 0, nan_y = 0, nan_size = 0;
};

void add_text(Plan& p, std::string s, int x, int y, int scale, Rgb color, int align = 0,
              bool vertical = false) {
    if (!s.empty()) p.texts.push_back({std::move(s), x, y, scale, color, vertical, align});
}

Plan make_plan(const Heatmap& h, const std::string& what) {
    Plan p;
    HeatmapLayout& L = p.L;
    p.rows = int(h.row_labels.size());
    p.cols = int(h.col_labels.size());
    const size_t cells = h.row_labels.size() * h.col_labels.size();
    MOE_REQUIRE(h.values.size() == cells, what, ": heatmap '", h.title, "' has ", p.rows,
                " row labels x ", p.cols, " column labels = ", cells, " cells but ",
                h.values.size(), " values");
    MOE_REQUIRE(cells > 0, what, ": heatmap '", h.title, "' has no cells (", p.rows, " rows x ",
                p.cols, " columns)");

    // Colour range over finite values; +-inf clamp to the ends of the bar.
    bool any_finite = false;
    L.vmin = 0, L.vmax = 1;
    for (double v : h.values) {
        p.any_nan = p.any_nan || std::isnan(v);
        if (!std::isfinite(v)) continue;
        L.vmin = any_finite ? std::min(L.vmin, v) : v;
        L.vmax = any_finite ? std::max(L.vmax, v) : v;
        any_finite = true;
    }

    const int decimals = cell_decimals(h.values);
    size_t value_chars = 1;
    for (double v : h.values) {
        p.cell_text.push_back(format_fixed(v, decimals));
        value_chars = std::max(value_chars, p.cell_text.back().size());
    }
    size_t row_chars = 0, col_chars = 0;
    for (const auto& s : h.row_labels) {
        p.row_labels.push_back(u8_truncate(sanitize_utf8(s), kMaxLabelChars));
        row_chars = std::max(row_chars, u8_length(p.row_labels.back()));
    }
    for (const auto& s : h.col_labels) {
        p.col_labels.push_back(u8_truncate(sanitize_utf8(s), kMaxLabelChars));
        col_chars = std::max(col_chars, u8_length(p.col_labels.back()));
    }

    // Cell width: room for the value at scale 2 with 8 px each side (5 px looked cramped
    // against the neighbouring cell), widened (up to 160 px) so that column labels can stay
    // horizontal, then shrunk to the grid budget.
    int cw = std::max(28, text_width(value_chars, 2) + 16);
    const int cw_label = text_width(col_chars, 2) + 8;
    if (cw_label > cw && int64_t(cw_label) * p.cols <= kMaxGridW && cw_label <= 160) cw = cw_label;
    if (int64_t(cw) * p.cols > kMaxGridW) cw = std::max(kMaxGridW / p.cols, kMinCell);
    int ch = 26;
    if (int64_t(ch) * p.rows > kMaxGridH) ch = std::max(kMaxGridH / p.rows, kMinCell);
    L.cell_w = cw, L.cell_h = ch;
    L.cell_inset = cw >= 12 && ch >= 12 ? 1 : 0;
    const int inner_w = cw - 2 * L.cell_inset, inner_h = ch - 2 * L.cell_inset;
    L.value_scale = 0;
    for (int s : {2, 1}) {
        if (text_width(value_chars, s) <= inner_w - 2 * s && kCapHeight * s <= inner_h - 2 * s) {
            L.value_scale = s;
            break;
        }
    }

    // Row labels: scale 2 where a row is tall enough; when even scale 1 is taller than a
    // row, only every stride-th label is drawn.
    const int rs = ch >= 16 ? 2 : 1;
    const int row_stride = std::max(1, (kCapHeight * rs + 2 + ch - 1) / ch);
    const int row_label_w = text_width(row_chars, rs);

    // Column labels: horizontal when they fit the column, otherwise vertical (reading
    // upwards, as in most plotting libraries), thinned like the rows when columns are narrow.
    int cs = 2, col_stride = 1;
    bool col_vertical = false;
    if (text_width(col_chars, 2) <= cw - 4) {
        cs = 2;
    } else if (cw >= 18) {
        col_vertical = true;
    } else if (text_width(col_chars, 1) <= cw - 2) {
        cs = 1;
    } else {
        cs = 1, col_vertical = true;
        col_stride = std::max(1, (kGlyphRows + 1 + cw - 1) / cw);
    }
    const int col_band = col_chars == 0 ? 0
                         : col_vertical ? text_width(col_chars, cs)
                                        : kGlyphRows * cs;

    std::string title = u8_truncate(sanitize_utf8(h.title), kMaxTitleChars);
    const int ts =
        text_width(u8_length(title), 3) <= std::max(600, row_label_w + p.cols * cw) ? 3 : 2;
    const int title_h = title.empty() ? 0 : kGlyphRows * ts + 10;

    L.grid_x = kMargin + row_label_w + (row_label_w > 0 ? 8 : 0);
    L.grid_y = kMargin + title_h + col_band + (col_band > 0 ? 6 : 0);
    const int grid_w = p.cols * cw, grid_h = p.rows * ch;

    // Colour bar: as tall as the grid, but at least 120 px so that it shows a gradient.
    L.bar_x = L.grid_x + grid_w + 20;
    L.bar_y = L.grid_y;
    L.bar_w = 18;
    L.bar_h = std::max(grid_h, 120);
    const std::string vmax_s = any_finite ? format_general(L.vmax, 4) : "-";
    const std::string vmin_s = any_finite ? format_general(L.vmin, 4) : "-";
    const int bar_text_x = L.bar_x + L.bar_w + 6;
    int right = bar_text_x + text_width(std::max(vmax_s.size(), vmin_s.size()), 2);
    std::string value_label = sanitize_utf8(h.value_label);
    int vs = 2;
    if (text_width(u8_length(value_label), 2) > L.bar_h) vs = 1;
    value_label = u8_truncate(value_label, size_t(std::max(1, (L.bar_h + 1) / kAdvance)));
    const int vl_x = right + 10;
    if (!value_label.empty()) right = vl_x + kGlyphRows * vs;
    p.nan_size = 18;
    p.nan_x = L.bar_x;
    p.nan_y = L.bar_y + L.bar_h + 10;
    if (p.any_nan) right = std::max(right, p.nan_x + p.nan_size + 6 + text_width(3, 2));

    L.width = std::max(right, kMargin + text_width(u8_length(title), ts)) + kMargin;
    L.height =
        std::max(L.grid_y + grid_h, p.any_nan ? p.nan_y + p.nan_size : L.bar_y + L.bar_h) + kMargin;
    MOE_REQUIRE(int64_t(L.width) * L.height <= kMaxPixels, what, ": heatmap of ", p.rows, " x ",
                p.cols, " would be ", L.width, " x ", L.height, " pixels, over the limit of ",
                kMaxPixels, " pixels");

    // Text, in drawing order.
    add_text(p, title, kMargin, kMargin, ts, kBlack);
    for (int r = 0; r < p.rows; r += row_stride) {
        const int y = L.grid_y + r * ch + (ch - kCapHeight * rs) / 2;
        const int w = text_width(u8_length(p.row_labels[r]), rs);
        add_text(p, p.row_labels[r], L.grid_x - 8 - w, y, rs, kTextGrey, 2);
    }
    for (int c = 0; c < p.cols; c += col_stride) {
        const int w = text_width(u8_length(p.col_labels[c]), cs);
        if (col_vertical) {
            const int x = L.grid_x + c * cw + (cw - kCapHeight * cs) / 2;
            add_text(p, p.col_labels[c], x, L.grid_y - 6, cs, kTextGrey, 0, true);
        } else {
            const int x = L.grid_x + c * cw + (cw - w) / 2;
            add_text(p, p.col_labels[c], x, L.grid_y - 6 - kGlyphRows * cs, cs, kTextGrey, 1);
        }
    }
    if (L.value_scale > 0) {
        const int s = L.value_scale;
        for (int r = 0; r < p.rows; ++r) {
            for (int c = 0; c < p.cols; ++c) {
                const std::string& t = p.cell_text[size_t(r) * p.cols + c];
                const Rgb bg = heatmap_color(h.values[size_t(r) * p.cols + c], L.vmin, L.vmax);
                const int x = L.grid_x + c * cw + (cw - text_width(t.size(), s)) / 2;
                const int y = L.grid_y + r * ch + (ch - kCapHeight * s) / 2;
                add_text(p, t, x, y, s, is_dark(bg) ? kWhite : kBlack, 1);
            }
        }
    }
    add_text(p, vmax_s, bar_text_x, L.bar_y, 2, kTextGrey);
    add_text(p, vmin_s, bar_text_x, L.bar_y + L.bar_h - kCapHeight * 2, 2, kTextGrey);
    const int vl_len = text_width(u8_length(value_label), vs);
    add_text(p, value_label, vl_x, L.bar_y + (L.bar_h + vl_len) / 2, vs, kTextGrey, 0, true);
    if (p.any_nan)
        add_text(p, "n/a", p.nan_x + p.nan_size + 6, p.nan_y + (p.nan_size - 14) / 2, 2, kTextGrey);
    return p;
}

}  // namespace

HeatmapLayout heatmap_layout(const Heatmap& h, const std::string& what) {
    return make_plan(h, what).L;
}

// ---------------------------------------------------------------------------------------
// Drawing: one paint() walks the plan for both formats, so the SVG and the PNG cannot drift
// apart.

namespace {

class Painter {
  public:
    virtual ~Painter() = default;
    virtual void rect(int x, int y, int w, int h, Rgb c, const char* cls) = 0;
    virtual void cell(int x, int y, int w, int h, Rgb c, const std::string& tooltip) = 0;
    virtual void colorbar(int x, int y, int w, int h) = 0;  // viridis, 1 at the top
    virtual void text(const Text& t) = 0;
};

void paint(const Plan& p, const Heatmap& h, Painter& out) {
    const HeatmapLayout& L = p.L;
    out.rect(0, 0, L.width, L.height, kWhite, "background");
    const int in = L.cell_inset;
    for (int r = 0; r < p.rows; ++r) {
        for (int c = 0; c < p.cols; ++c) {
            const double v = h.values[size_t(r) * p.cols + c];
            const std::string tip =
                p.row_labels[r] + " / " + p.col_labels[c] + ": " + format_general(v, 6);
            out.cell(L.grid_x + c * L.cell_w + in, L.grid_y + r * L.cell_h + in, L.cell_w - 2 * in,
                     L.cell_h - 2 * in, heatmap_color(v, L.vmin, L.vmax), tip);
        }
    }
    out.colorbar(L.bar_x, L.bar_y, L.bar_w, L.bar_h);
    if (p.any_nan) out.rect(p.nan_x, p.nan_y, p.nan_size, p.nan_size, kHeatmapNanColor, "nan");
    for (const Text& t : p.texts) out.text(t);
}

// --- SVG -------------------------------------------------------------------------------

std::string hex(const Rgb& c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c[0], c[1], c[2]);
    return buf;
}

class SvgPainter : public Painter {
  public:
    explicit SvgPainter(std::string* out) : out_(*out) {}

    void rect(int x, int y, int w, int h, Rgb c, const char* cls) override {
        out_ += open_rect(x, y, w, h, hex(c), cls) + "/>\n";
    }
    void cell(int x, int y, int w, int h, Rgb c, const std::string& tooltip) override {
        // A <title> child is the tooltip a browser shows on hover: the exact value.
        out_ += open_rect(x, y, w, h, hex(c), "cell") + "><title>" + xml_escape(tooltip) +
                "</title></rect>\n";
    }
    void colorbar(int x, int y, int w, int h) override {
        // The gradient's stops are the colormap's anchors, and SVG interpolates linearly in
        // sRGB between them, exactly as viridis() does.
        out_ += "<defs><linearGradient id=\"viridis\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
        for (int k = 0; k <= 9; ++k)
            out_ += "<stop offset=\"" + format_general(k / 9.0, 4) + "\" stop-color=\"" +
                    hex(viridis(k / 9.0)) + "\"/>";
        out_ += "</linearGradient></defs>\n";
        out_ += open_rect(x, y, w, h, "url(#viridis)", "colorbar") + "/>\n";
    }
    void text(const Text& t) override {
        // Monospace at font-size 10*s advances 0.6 em = 6*s px a character, the bitmap
        // font's pitch; the baseline sits at the cap height below the top.
        static const char* kAnchor[3] = {"start", "middle", "end"};
        const int w = text_width(u8_length(t.s), t.scale);
        const int base = kCapHeight * t.scale;
        char buf[160];
        if (t.vertical) {
            const int x = t.x + base, y = t.y;
            std::snprintf(buf, sizeof buf,
                          "<text x=\"%d\" y=\"%d\" font-size=\"%d\" fill=\"%s\" "
                          "transform=\"rotate(-90 %d %d)\">",
                          x, y, 10 * t.scale, hex(t.color).c_str(), x, y);
        } else {
            const int x = t.x + (t.align == 1 ? w / 2 : t.align == 2 ? w : 0);
            std::snprintf(buf, sizeof buf,
                          "<text x=\"%d\" y=\"%d\" font-size=\"%d\" fill=\"%s\" "
                          "text-anchor=\"%s\">",
                          x, t.y + base, 10 * t.scale, hex(t.color).c_str(), kAnchor[t.align]);
        }
        out_ += buf + xml_escape(t.s) + "</text>\n";
    }

  private:
    static std::string open_rect(int x, int y, int w, int h, const std::string& fill,
                                 const char* cls) {
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "<rect class=\"%s\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                      "fill=\"%s\"",
                      cls, x, y, w, h, fill.c_str());
        return buf;
    }

    std::string& out_;
};

// --- PNG -------------------------------------------------------------------------------

class Canvas : public Painter {
  public:
    Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * h * 3, 255) {}

    const std::vector<uint8_t>& pixels() const { return px_; }

    void rect(int x, int y, int w, int h, Rgb c, const char*) override { fill(x, y, w, h, c); }
    void cell(int x, int y, int w, int h, Rgb c, const std::string&) override {
        fill(x, y, w, h, c);
    }
    void colorbar(int x, int y, int w, int h) override {
        for (int i = 0; i < h; ++i) fill(x, y + i, w, 1, viridis(1.0 - (i + 0.5) / h));
    }
    void text(const Text& t) override {
        const std::string s = to_ascii(t.s);
        const int k = t.scale;
        for (size_t i = 0; i < s.size(); ++i) {
            const uint8_t* glyph = glyph_rows(s[i]);
            for (int gy = 0; gy < kGlyphRows; ++gy) {
                for (int gx = 0; gx < 5; ++gx) {
                    if (!(glyph[gy] & (0x10 >> gx))) continue;
                    const int u = int(i) * kAdvance * k + gx * k;  // along the text
                    const int v = gy * k;                          // down the glyph
                    if (t.vertical) {
                        fill(t.x + v, t.y - u - k, k, k, t.color);
                    } else {
                        fill(t.x + u, t.y + v, k, k, t.color);
                    }
                }
            }
        }
    }

  private:
    void fill(int x, int y, int w, int h, Rgb c) {
        const int x0 = std::max(x, 0), y0 = std::max(y, 0);
        const int x1 = std::min(x + w, w_), y1 = std::min(y + h, h_);
        for (int yy = y0; yy < y1; ++yy) {
            uint8_t* row = px_.data() + (size_t(yy) * w_ + x0) * 3;
            for (int xx = x0; xx < x1; ++xx, row += 3) row[0] = c[0], row[1] = c[1], row[2] = c[2];
        }
    }

    int w_, h_;
    std::vector<uint8_t> px_;  // [h, w, 3] RGB
};

void put_be32(std::string& s, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) s += char(uint8_t(v >> shift));
}

// length, type, data, CRC-32 of type and data (PNG's CRC is zlib's crc32).
void put_chunk(std::string& png, const char type[4], const std::string& data) {
    put_be32(png, uint32_t(data.size()));
    const size_t start = png.size();
    png.append(type, 4);
    png += data;
    put_be32(png, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(png.data() + start),
                                 uInt(png.size() - start))));
}

}  // namespace

void write_heatmap_svg(const Heatmap& h, const std::string& path) {
    const Plan p = make_plan(h, path);
    const HeatmapLayout& L = p.L;
    std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(L.width) +
           "\" height=\"" + std::to_string(L.height) + "\" viewBox=\"0 0 " +
           std::to_string(L.width) + " " + std::to_string(L.height) +
           "\" xml:space=\"preserve\">\n";
    svg += "<title>" + xml_escape(sanitize_utf8(h.title)) + "</title>\n";
    svg += "<style>text { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; }</style>\n";
    SvgPainter painter(&svg);
    paint(p, h, painter);
    svg += "</svg>\n";
    write_file_atomic(path, svg);
}

void write_heatmap_png(const Heatmap& h, const std::string& path) {
    const Plan p = make_plan(h, path);
    const int W = p.L.width, H = p.L.height;
    Canvas canvas(W, H);
    paint(p, h, canvas);

    // Every scanline gets filter type 0 (None): the picture is flat colour, which deflate
    // already squeezes well (a 40 x 8 sample of 786 x 1120 pixels is 52 kB, 2% of raw).
    std::string raw;
    raw.reserve(size_t(H) * (1 + size_t(W) * 3));
    const auto* px = reinterpret_cast<const char*>(canvas.pixels().data());
    for (int y = 0; y < H; ++y) {
        raw += '\0';
        raw.append(px + size_t(y) * W * 3, size_t(W) * 3);
    }
    uLongf zlen = compressBound(uLong(raw.size()));
    std::string z(zlen, '\0');
    const int rc = compress2(reinterpret_cast<Bytef*>(z.data()), &zlen,
                             reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 6);
    MOE_REQUIRE(rc == Z_OK, path, ": zlib compress2 failed with code ", rc);
    z.resize(zlen);

    std::string png = "\x89PNG\r\n\x1a\n";
    std::string ihdr;
    put_be32(ihdr, uint32_t(W));
    put_be32(ihdr, uint32_t(H));
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, filter 0, no interlace
    put_chunk(png, "IHDR", ihdr);
    put_chunk(png, "IDAT", z);
    put_chunk(png, "IEND", "");
    write_file_atomic(path, png);
}

// ---------------------------------------------------------------------------------------
// Table

std::string format_table(const Heatmap& h, int precision) {
    MOE_REQUIRE(precision >= 0 && precision <= 17, "format_table: precision ", precision,
                " is outside 0..17");
    const size_t rows = h.row_labels.size(), cols = h.col_labels.size();
    MOE_REQUIRE(h.values.size() == rows * cols, "format_table: heatmap '", h.title, "' has ", rows,
                " row labels x ", cols, " column labels = ", rows * cols, " cells but ",
                h.values.size(), " values");

    std::vector<std::string> row_labels, col_labels, cells(h.values.size());
    size_t label_w = 0;
    for (const auto& s : h.row_labels) {
        row_labels.push_back(sanitize_utf8(s));
        label_w = std::max(label_w, u8_length(row_labels.back()));
    }
    std::vector<size_t> col_w(cols);
    for (size_t c = 0; c < cols; ++c) {
        col_labels.push_back(sanitize_utf8(h.col_labels[c]));
        col_w[c] = u8_length(col_labels[c]);
    }
    for (size_t i = 0; i < cells.size(); ++i) {
        cells[i] = format_fixed(h.values[i], precision);
        col_w[i % cols] = std::max(col_w[i % cols], cells[i].size());
    }

    auto pad = [](std::string& line, size_t n) { line.append(n, ' '); };
    auto finish = [](std::string& out, std::string line) {
        line.erase(line.find_last_not_of(' ') + 1);
        out += line + "\n";
    };
    std::string out;
    const std::string title = sanitize_utf8(h.title), unit = sanitize_utf8(h.value_label);
    if (!title.empty() || !unit.empty())
        finish(out, title.empty() ? unit : unit.empty() ? title : title + " (" + unit + ")");
    std::string line(label_w, ' ');
    for (size_t c = 0; c < cols; ++c) {
        pad(line, 2 + col_w[c] - u8_length(col_labels[c]));
        line += col_labels[c];
    }
    finish(out, line);
    for (size_t r = 0; r < rows; ++r) {
        line = row_labels[r];
        pad(line, label_w - u8_length(row_labels[r]));
        for (size_t c = 0; c < cols; ++c) {
            const std::string& v = cells[r * cols + c];
            pad(line, 2 + col_w[c] - v.size());
            line += v;
        }
        finish(out, line);
    }
    return out;
}

}  // namespace moe::io
