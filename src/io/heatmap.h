// Heatmaps of a labelled matrix (the domain-by-expert usage matrix of `moe inspect`): an SVG,
// a PNG and an aligned plain-text table of the same data.
//
// Both images share one layout (heatmap_layout): the title on top, column labels above the
// grid, row labels to its left, a colour bar with the min and max on the right. Cells are
// coloured by viridis (perceptually uniform, readable in greyscale and by most colour-blind
// readers), scaled from the smallest to the largest finite value; NaN cells are grey and
// printed as "-". The value is printed in a cell when it fits. The PNG draws its text with a
// built-in 5x7 bitmap font, so it needs no font library; characters outside ASCII show as
// '?' there (the SVG keeps them).
//
// Sizes: cells shrink so that the grid stays within about 1600 x 1400 pixels (40 rows x 64
// columns gives an image about 1900 px wide); labels too dense to fit their row or column
// are thinned to every k-th one. All files are written atomically (io/atomic_file.h); every
// error names the path.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace moe::io {

struct Heatmap {
    std::string title;
    std::vector<std::string> row_labels, col_labels;
    std::vector<double> values;  // [rows, cols] row-major; rows = row_labels.size()
    std::string value_label;     // what the values are, e.g. "fraction of tokens"
};

// Pixel geometry shared by the SVG and the PNG (the SVG's user units are these pixels).
struct HeatmapLayout {
    int width = 0, height = 0;   // whole image
    int grid_x = 0, grid_y = 0;  // top-left corner of cell (0, 0)
    int cell_w = 0, cell_h = 0;  // pitch of the grid
    int cell_inset = 0;          // white gap left around each cell's colour, per side
    int value_scale = 0;         // font scale of the printed values; 0 = not printed
    int bar_x = 0, bar_y = 0, bar_w = 0, bar_h = 0;  // colour bar, max at the top
    double vmin = 0, vmax = 0;  // colour range: finite min and max (0, 1 if none)
};

// Viridis at t in [0, 1] (clamped), interpolated linearly between 10 anchor colours.
std::array<uint8_t, 3> viridis(double t);

// Colour of one value under the layout's range: NaN is grey, +-inf clamp to the ends, and
// when every finite value is equal they all take the middle colour.
std::array<uint8_t, 3> heatmap_color(double v, double vmin, double vmax);
inline constexpr std::array<uint8_t, 3> kHeatmapNanColor = {190, 190, 190};

// Validates h (labels match values, at least one cell) and lays it out. `what` (a path or
// a function name) starts every error message.
HeatmapLayout heatmap_layout(const Heatmap& h, const std::string& what = "heatmap");

void write_heatmap_svg(const Heatmap& h, const std::string& path);
void write_heatmap_png(const Heatmap& h, const std::string& path);

// The matrix as text: an optional title line, a header of column labels, one line per row;
// values with `precision` decimals, right-aligned in columns separated by two spaces, NaN as
// "-". Every line ends with '\n' and has no trailing spaces. Widths count UTF-8 code points.
std::string format_table(const Heatmap& h, int precision = 3);

}  // namespace moe::io
