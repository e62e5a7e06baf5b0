// A 5x7 bitmap font for drawing labels into images without any font library.
// Font: 5x7 glyphs for ASCII 32..126 plus one descender row (g, j, p, q, y, comma, _), one
// byte a row, bit 4 the leftmost pixel. A character advances 6 pixels at scale 1; text at
// scale s is drawn with s x s blocks. Scale 2 (12 px a character) is the size that reads
// comfortably on a screen; scale 1 is kept for dense grids.
#pragma once

#include <cstdint>

namespace moe::io {

constexpr int kAdvance = 6, kCapHeight = 7, kGlyphRows = 8;

// Rows of the glyph of ASCII character c (32..126); other characters draw as '?'.
const uint8_t* glyph_rows(char c);

}  // namespace moe::io
