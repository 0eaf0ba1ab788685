#include "experiments/report/plot.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace peel {

namespace fs = std::filesystem;

namespace {
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}
}  // namespace

namespace {

// Runs gnuplot on `plot` with `terminal` (an SVG or PNG terminal line) and returns the bytes it wrote.
std::string render(const Plot& plot, const std::string& terminal) {
  static int counter = 0;
  const fs::path dir = fs::temp_directory_path() / fmt::format("peel-plot-{}-{}", ::getpid(), counter++);
  fs::create_directories(dir);
  std::string script = fmt::format(
      "{}\nset output {}\nset title {}\nset xlabel {}\nset ylabel {}\nset grid\nset key below maxrows 4 font "
      "',10'\n",
      terminal, quoted((dir / "plot.out").string()), quoted(plot.title), quoted(plot.x_label), quoted(plot.y_label));
  if (plot.log_x) script += "set logscale x\n";
  if (plot.log_y) script += "set logscale y\n";
  if (!std::isnan(plot.y_min) || !std::isnan(plot.y_max))
    script += fmt::format("set yrange [{}:{}]\n", std::isnan(plot.y_min) ? "*" : fmt::format("{}", plot.y_min),
                          std::isnan(plot.y_max) ? "*" : fmt::format("{}", plot.y_max));
  for (size_t i = 0; i < plot.vertical_lines.size(); ++i)
    script += fmt::format(
        "set arrow from {0}, graph 0 to {0}, graph 1 nohead dashtype 2 lc rgb 'gray40'\n"
        "set label {1} at {0}, graph 0.95 offset 0.5,0 font ',9'\n",
        plot.vertical_lines[i], quoted(plot.vertical_label));
  std::vector<std::string> clauses;
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const Series& s = plot.series[i];
    const fs::path file = dir / fmt::format("series{}.dat", i);
    std::ofstream out(file);
    size_t points = 0;
    for (size_t k = 0; k < s.x.size(); ++k) {
      const double y = s.y[k];
      // Non-finite values and, on log axes, non-positive ones cannot be drawn: leave them out.
      if (!std::isfinite(y) || !std::isfinite(s.x[k]) || (plot.log_y && y <= 0) || (plot.log_x && s.x[k] <= 0))
        continue;
      out << fmt::format("{:.10g} {:.10g}", s.x[k], y);
      if (!s.y_error.empty()) out << fmt::format(" {:.10g}", std::isfinite(s.y_error[k]) ? s.y_error[k] : 0.0);
      out << '\n';
      ++points;
    }
    if (points == 0) continue;
    if (s.y_error.empty())
      clauses.push_back(
          fmt::format("{} using 1:2 with {} lw 2 title {}", quoted(file.string()), s.style, quoted(s.label)));
    else
      clauses.push_back(fmt::format("{0} using 1:2:3 with yerrorbars title {1}, {0} using 1:2 with lines lw 2 notitle",
                                    quoted(file.string()), quoted(s.label)));
  }
  PEEL_CHECK(!clauses.empty(), "plot '{}': no finite data to draw", plot.title);
  script += fmt::format("plot {}\n", fmt::join(clauses, ", \\\n     "));
  {
    std::ofstream out(dir / "plot.gp");
    out << script;
  }
  const std::string command =
      fmt::format("gnuplot {} 2> {}", quoted((dir / "plot.gp").string()), quoted((dir / "gnuplot.err").string()));
  const int status = std::system(command.c_str());
  std::stringstream image, err;
  image << std::ifstream(dir / "plot.out", std::ios::binary).rdbuf();
  err << std::ifstream(dir / "gnuplot.err").rdbuf();
  fs::remove_all(dir);
  PEEL_CHECK(status == 0 && !image.str().empty(), "plot '{}': gnuplot failed (status {}): {}", plot.title, status,
             err.str());
  return image.str();
}

}  // namespace

std::string render_svg(const Plot& plot) {
  std::string text = render(plot, fmt::format("set terminal svg size {},{} dynamic enhanced font 'sans,11' background "
                                              "rgb 'white'",
                                              plot.width, plot.height));
  // Drop the XML prologue so the SVG can sit inline in HTML.
  if (auto start = text.find("<svg"); start != std::string::npos) text = text.substr(start);
  return text;
}

std::string render_png(const Plot& plot) {
  return render(plot, fmt::format("set terminal pngcairo size {},{} enhanced font 'sans,10' background rgb 'white'",
                                  plot.width * 3 / 2, plot.height * 3 / 2));
}

void check_gnuplot_works() {
  Plot probe{.title = "probe", .x_label = "x", .y_label = "y"};
  probe.series.push_back({"probe", {1, 2}, {1, 2}});
  try {
    render_svg(probe);
    render_png(probe);
  } catch (const Error& e) {
    PEEL_FAIL(
        "reports draw their figures with gnuplot, which does not work here ({}); install it (apt-get install "
        "gnuplot-nox, or run scripts/setup) before training",
        e.what());
  }
}

}  // namespace peel
