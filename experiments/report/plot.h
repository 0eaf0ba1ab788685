// Figures through gnuplot (Debian's gnuplot-nox): peel writes the data and a short gnuplot
// script, gnuplot renders an SVG, and the report embeds it inline so the HTML is self-contained.
#pragma once

#include <cmath>
#include <string>
#include <vector>

namespace peel {

// One line (or set of points) on a plot.
struct Series {
  std::string label;
  std::vector<double> x, y;
  std::string style = "linespoints";  // gnuplot "with" clause: lines, points, linespoints, ...
  std::vector<double> y_error;        // optional: error bars (std) drawn around the points
};

struct Plot {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<Series> series;
  std::vector<double> vertical_lines;  // marked x positions (e.g. the epoch training error hits zero)
  std::string vertical_label;
  double y_min = NAN, y_max = NAN;
  int width = 760, height = 520;
};

// Renders `plot` with gnuplot: SVG text (for inline HTML) or PNG bytes (for slides). Throws naming
// gnuplot's error output on failure.
std::string render_svg(const Plot& plot);
std::string render_png(const Plot& plot);

// Throws, saying how to install it, unless gnuplot runs and draws an SVG and a PNG: reports check this
// before their first training run, not after the last.
void check_gnuplot_works();

}  // namespace peel
