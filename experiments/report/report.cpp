#include "experiments/report/report.h"

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <filesystem>

#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel {

using nlohmann::json;

namespace {

// "NN-title-in-lower-case" for a figure's PNG file name.
std::string figure_file(size_t number, const std::string& title) {
  std::string slug;
  for (char ch : title) {
    if (std::isalnum(static_cast<unsigned char>(ch)))
      slug += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    else if (!slug.empty() && slug.back() != '-')
      slug += '-';
    if (slug.size() >= 48) break;
  }
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  return fmt::format("figures/{:02d}-{}.png", number, slug);
}

json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::string cell_html(const json& v) {
  if (v.is_number()) return format_number(v.get<double>());
  if (v.is_null()) return "&ndash;";
  return v.is_string() ? v.get<std::string>() : v.dump();
}

}  // namespace

const char* verdict_text(Verdict v) {
  switch (v) {
    case Verdict::supported:
      return "supported";
    case Verdict::partly_supported:
      return "partly supported";
    case Verdict::not_supported:
      return "not supported";
    case Verdict::not_tested:
      break;
  }
  return "not tested here";
}

std::string format_number(double v) {
  if (std::isnan(v)) return "&ndash;";
  const double a = std::abs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5)) return fmt::format("{:.3e}", v);
  return fmt::format("{:.4g}", v);
}

void Report::paragraph(const std::string& html) { body_ += "<p>" + html + "</p>\n"; }

void Report::section(const std::string& heading, const std::string& html) {
  body_ += fmt::format("<h2>{}</h2>\n{}\n", heading, html);
}

void Report::figure(const Plot& plot, const std::string& caption) {
  figures_.push_back({plot, caption});
  const size_t n = figures_.size();
  body_ += fmt::format("<figure>{}<figcaption>Figure {}. {} <a href=\"{}\">PNG</a></figcaption></figure>\n",
                       render_svg(plot), n, caption, figure_file(n, plot.title));
}

void Report::table(const std::string& name, const std::vector<std::string>& columns,
                   const std::vector<std::vector<json>>& rows, const std::string& caption) {
  std::string html = "<table><tr>";
  for (const auto& c : columns) html += "<th>" + c + "</th>";
  html += "</tr>\n";
  json j_rows = json::array();
  for (const auto& row : rows) {
    PEEL_CHECK(row.size() == columns.size(), "report table '{}': a row has {} cells for {} columns", name, row.size(),
               columns.size());
    html += "<tr>";
    json j_row = json::array();
    for (const json& v : row) {
      html += "<td>" + cell_html(v) + "</td>";
      j_row.push_back(v.is_number() ? finite_or_null(v.get<double>()) : v);
    }
    html += "</tr>\n";
    j_rows.push_back(j_row);
  }
  html += "</table>\n";
  if (!caption.empty()) html += "<p class=\"caption\">" + caption + "</p>\n";
  body_ += html;
  tables_[name] = {{"columns", columns}, {"rows", j_rows}, {"caption", caption}};
}

void Report::summary_table(const std::vector<std::string>& labels, const std::vector<json>& summaries,
                           const std::vector<std::string>& keys) {
  section("Summary of every run");
  std::vector<std::string> columns{"run"};
  columns.insert(columns.end(), keys.begin(), keys.end());
  std::vector<std::vector<json>> rows;
  for (size_t i = 0; i < summaries.size(); ++i) {
    std::vector<json> row{labels[i]};
    for (const auto& k : keys) {
      const json& v = summaries[i].contains(k) ? summaries[i][k] : json();
      row.push_back(v.is_number() ? v : json(nullptr));
    }
    rows.push_back(row);
  }
  table("summary", columns, rows);
}

void Report::claims(const std::vector<Claim>& claims) {
  std::string html =
      "<h2>What this shows</h2>\n<table class=\"claims\"><tr><th>the paper's claim</th><th>here</th><th>the "
      "numbers</th><th>at the paper's scale</th></tr>\n";
  for (const Claim& c : claims) {
    html += fmt::format("<tr><td>{}</td><td><b>{}</b></td><td>{}</td><td><code>{}</code></td></tr>\n", c.claim,
                        verdict_text(c.verdict), c.evidence, c.at_paper_scale);
    claims_.push_back({{"claim", c.claim},
                       {"verdict", verdict_text(c.verdict)},
                       {"evidence", c.evidence},
                       {"at_paper_scale", c.at_paper_scale}});
  }
  body_ += html + "</table>\n";
}

void Report::write(const std::string& dir) const {
  std::error_code error;
  std::filesystem::create_directories(dir + "/figures", error);
  PEEL_CHECK(!error, "report: cannot create {}/figures: {}", dir, error.message());
  json figures = json::array();
  for (size_t i = 0; i < figures_.size(); ++i) {
    const Plot& plot = figures_[i].plot;
    const std::string png = figure_file(i + 1, plot.title);
    io::write_file_atomic(dir + "/" + png, render_png(plot));
    json series = json::array();
    for (const Series& s : plot.series) {
      json x = json::array(), y = json::array(), e = json::array();
      for (size_t k = 0; k < s.x.size(); ++k) {
        x.push_back(finite_or_null(s.x[k]));
        y.push_back(finite_or_null(s.y[k]));
        if (!s.y_error.empty()) e.push_back(finite_or_null(s.y_error[k]));
      }
      json one = {{"label", s.label}, {"x", x}, {"y", y}};
      if (!s.y_error.empty()) one["y_error"] = e;
      series.push_back(one);
    }
    figures.push_back({{"number", i + 1},
                       {"title", plot.title},
                       {"x_label", plot.x_label},
                       {"y_label", plot.y_label},
                       {"caption", figures_[i].caption},
                       {"png", png},
                       {"series", series}});
  }
  const json report = {
      {"title", title_}, {"figures", figures}, {"tables", tables_}, {"values", values_}, {"claims", claims_}};
  io::write_file_atomic(dir + "/report.json", report.dump(1) + "\n");

  const std::string html = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>\n"
      "body {{ font-family: sans-serif; max-width: 1000px; margin: 2em auto; line-height: 1.45; color: #222; }}\n"
      "figure {{ margin: 1.5em 0; }} figcaption, .caption {{ font-size: 0.9em; color: #444; }}\n"
      "table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }} td, th {{ border: 1px solid #bbb; "
      "padding: 3px 6px; text-align: right; }}\n"
      "th {{ background: #eee; }} table.claims td {{ text-align: left; vertical-align: top; }}\n</style></head><body>\n"
      "<h1>{0}</h1>\n{1}\n"
      "<p style=\"font-size:0.8em;color:#666\">Generated by peel. Every number comes from the runs' metrics.csv and "
      "summary.json in runs/; report.json holds them all, figures/ each figure as a PNG.</p>\n</body></html>\n",
      title_, body_);
  io::write_file_atomic(dir + "/report.html", html);
}

}  // namespace peel
