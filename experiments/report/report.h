// A report a referee can read: text, figures, tables, and what the measurements show about each of
// the paper's claims. Written as a folder:
//   report.html        self-contained (inline SVG figures, no scripts, no external styles or fonts)
//   report.json        every number the HTML shows: each figure's data, each table, each claim
//   figures/NN-*.png   each figure as a PNG, for slides
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/report/plot.h"

namespace peel {

// Columns of a run's metrics.csv by name.
using RunMetrics = std::map<std::string, std::vector<double>>;

// How far the measurements here back one of the paper's claims.
enum class Verdict { supported, partly_supported, not_supported, not_tested };

struct Claim {
  std::string claim;  // the paper's claim, in a sentence
  Verdict verdict = Verdict::not_tested;
  std::string evidence;        // the numbers that say so (HTML)
  std::string at_paper_scale;  // the command that would test it at the paper's scale
};

class Report {
 public:
  explicit Report(std::string title) : title_(std::move(title)) {}
  void paragraph(const std::string& html);
  void section(const std::string& heading, const std::string& html = "");
  // A figure, numbered in order; its data goes to report.json and a PNG to figures/.
  void figure(const Plot& plot, const std::string& caption);
  // A table of numbers (NaN shown as a dash) or text cells; also in report.json under `name`.
  void table(const std::string& name, const std::vector<std::string>& columns,
             const std::vector<std::vector<nlohmann::json>>& rows, const std::string& caption = "");
  // One row per run, one column per key of its summary.json.
  void summary_table(const std::vector<std::string>& labels, const std::vector<nlohmann::json>& summaries,
                     const std::vector<std::string>& keys);
  // A named value for report.json that the text quotes (the HTML shows it where the caller puts it).
  void value(const std::string& name, const nlohmann::json& v) { values_[name] = v; }
  // The closing section, "What this shows": one row per claim.
  void claims(const std::vector<Claim>& claims);

  // Writes report.html, report.json and figures/*.png into `dir`, each atomically.
  void write(const std::string& dir) const;

 private:
  struct Figure {
    Plot plot;
    std::string caption;
  };
  std::string title_;
  std::string body_;
  std::vector<Figure> figures_;
  nlohmann::json tables_ = nlohmann::json::object(), values_ = nlohmann::json::object(),
                 claims_ = nlohmann::json::array();
};

const char* verdict_text(Verdict v);  // "supported", "partly supported", ...

// "1.23e-04", "0.456", or a dash for NaN: how reports print a measured number.
std::string format_number(double v);

}  // namespace peel
