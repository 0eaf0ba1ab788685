// A self-contained HTML report: text, inline SVG figures, and summary tables. No network needed
// to open it (no scripts, no external styles or fonts).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/report/plot.h"

namespace peel {

// Columns of a run's metrics.csv by name.
using RunMetrics = std::map<std::string, std::vector<double>>;

class Report {
 public:
  explicit Report(std::string title) : title_(std::move(title)) {}
  void paragraph(const std::string& html);
  void section(const std::string& heading, const std::string& html);
  void figure(const Plot& plot, const std::string& caption);
  // One row per run, one column per key of its summary.json.
  void summary_table(const std::vector<std::string>& labels, const std::vector<nlohmann::json>& summaries,
                     const std::vector<std::string>& keys);
  // Written atomically.
  void write(const std::string& path) const;

 private:
  std::string title_;
  std::string body_;
  int figures_ = 0;
};

}  // namespace peel
