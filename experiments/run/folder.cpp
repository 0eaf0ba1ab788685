#include "experiments/run/folder.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nn/module.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kRunFiles[] = {"config.json", "metrics.csv", "checkpoint.peel", "summary.json", "spectra.json"};

void write_text(const std::string& path, const std::string& text) { io::write_file_atomic(path, text); }

double parse_cell(const std::string& cell, const std::string& path, size_t line, const std::string& column) {
  const char* begin = cell.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  PEEL_CHECK(!cell.empty() && end == begin + cell.size() && errno != ERANGE,
             "{}: line {}, column '{}': '{}' is not a number", path, line, column, cell);
  return v;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line);
  for (std::string cell; std::getline(in, cell, ',');) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

}  // namespace

// ---- metrics.csv ------------------------------------------------------------------------------

std::vector<double> MetricsTable::column(const std::string& name) const {
  std::vector<double> values;
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name)
      for (const auto& row : rows) values.push_back(row[i]);
  return values;
}

void MetricsTable::append(const MetricColumns& row, const std::string& path) {
  std::vector<std::string> names;
  std::vector<double> values;
  for (const auto& [name, v] : row) {
    names.push_back(name);
    values.push_back(v);
  }
  if (columns.empty() && rows.empty()) columns = names;
  PEEL_CHECK(names == columns,
             "{}: this run measures {} columns but the file has {} (it was written by another version of peel or "
             "another kind of run); start again with --force or use another --out",
             path, names.size(), columns.size());
  rows.push_back(std::move(values));
}

MetricsTable read_metrics_csv(const std::string& path, int64_t up_to_epoch) {
  std::ifstream file(path);
  if (!file) return {};
  std::stringstream text;
  text << file.rdbuf();
  return parse_metrics_csv(text.str(), path, up_to_epoch);
}

MetricsTable parse_metrics_csv(const std::string& text, const std::string& path, int64_t up_to_epoch) {
  MetricsTable t;
  std::istringstream in(text);
  std::string line;
  PEEL_CHECK(std::getline(in, line) && !line.empty(), "{}: no header line", path);
  t.columns = split_csv_line(line);
  PEEL_CHECK(t.columns.front() == "epoch", "{}: the first column is '{}', expected 'epoch'", path, t.columns.front());
  for (size_t number = 2; std::getline(in, line); ++number) {
    const std::vector<std::string> cells = split_csv_line(line);
    PEEL_CHECK(cells.size() == t.columns.size(), "{}: line {} has {} cells, the header {}", path, number, cells.size(),
               t.columns.size());
    std::vector<double> row;
    for (size_t i = 0; i < cells.size(); ++i) row.push_back(parse_cell(cells[i], path, number, t.columns[i]));
    PEEL_CHECK(row[0] >= 1 && std::floor(row[0]) == row[0] && (t.rows.empty() || row[0] > t.rows.back()[0]),
               "{}: line {}: epoch {} does not follow the rows before it", path, number, cells[0]);
    if (row[0] <= static_cast<double>(up_to_epoch)) t.rows.push_back(std::move(row));
  }
  return t;
}

void write_metrics_csv(const std::string& path, const MetricsTable& t) {
  std::string out = fmt::format("{}\n", fmt::join(t.columns, ","));
  for (const auto& row : t.rows) {
    std::vector<std::string> cells;
    for (double v : row) cells.push_back(std::isnan(v) ? "nan" : fmt::format("{:.17g}", v));  // round-trips
    out += fmt::format("{}\n", fmt::join(cells, ","));
  }
  write_text(path, out);
}

// ---- The folder ------------------------------------------------------------------------------

RunFolder::RunFolder(std::string dir) : dir_(std::move(dir)) {
  PEEL_CHECK(!dir_.empty(), "a run needs an output folder (--out DIR)");
  std::error_code error;
  fs::create_directories(dir_, error);
  PEEL_CHECK(!error, "cannot create the run folder {}: {}", dir_, error.message());
  const std::string lock_path = path(".lock");
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  PEEL_CHECK(lock_fd_ >= 0, "cannot write into the run folder {}: {}", dir_, std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string holder(32, '\0');
    const ssize_t n = ::pread(lock_fd_, holder.data(), holder.size(), 0);
    holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
    ::close(lock_fd_);
    PEEL_FAIL(
        "{} is in use: another peel process ({}) is training into it; wait for it to finish or choose another "
        "--out",
        dir_, holder.empty() ? std::string("pid unknown") : "pid " + holder);
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    ::close(lock_fd_);
    PEEL_FAIL("cannot write into the run folder {}: {}", dir_, std::strerror(errno));
  }
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

FolderState inspect_run_folder(const std::string& dir, const TrainConfig& asked) {
  FolderState s;
  s.has_config = fs::exists(dir + "/config.json");
  s.has_checkpoint = fs::exists(dir + "/checkpoint.peel");
  s.complete = fs::exists(dir + "/summary.json");
  s.measured_epochs = static_cast<int64_t>(read_metrics_csv(dir + "/metrics.csv").rows.size());
  if (s.has_config) s.differing_settings = differing_settings(read_train_config(dir + "/config.json"), asked);
  return s;
}

RunStart RunFolder::prepare(const TrainConfig& config, ExistingRun existing, bool quiet) {
  if (existing == ExistingRun::restart) {
    for (const char* file : kRunFiles) fs::remove(path(file));
    fs::remove_all(path("spectra"));
  }
  const FolderState s = inspect_run_folder(dir_, config);
  const bool holds_run = s.has_config || s.has_checkpoint || s.measured_epochs > 0 || s.complete;
  if (holds_run) {
    PEEL_CHECK(existing == ExistingRun::resume,
               "{} already holds a run ({}); continue it with --resume {}, start it again with --force, or choose "
               "another --out",
               dir_, s.complete ? "complete" : fmt::format("{} measured epochs", s.measured_epochs), dir_);
    PEEL_CHECK(s.has_config,
               "{}: config.json is missing, so its other files cannot be continued; use --force to "
               "start again",
               dir_);
    PEEL_CHECK(s.differing_settings.empty(),
               "{} holds a run with other settings:\n  {}\nUse --force to start it again with these settings, or "
               "another --out",
               dir_, fmt::join(s.differing_settings, "\n  "));
    if (s.complete) return RunStart::complete;
    if (s.has_checkpoint) return RunStart::from_checkpoint;
    PEEL_CHECK(s.measured_epochs == 0,
               "{} has metrics for {} epochs but no checkpoint.peel to continue from; use --force to start again", dir_,
               s.measured_epochs);
    if (!quiet) fmt::print("{}: no checkpoint yet, so the run starts from epoch 1\n", dir_);
  } else {
    PEEL_CHECK(existing != ExistingRun::resume, "--resume {}: the folder holds no run (no config.json)", dir_);
  }
  return RunStart::fresh;
}

void RunFolder::write_config(const TrainConfig& config, const json& found) const {
  json j = config;
  j["found"] = found;
  write_text(path("config.json"), j.dump(2) + "\n");
}

int64_t RunFolder::restore(nn::Module& model, optim::Optimizer& optimizer, RunTiming& timing,
                           MetricsTable& metrics) const {
  const int64_t epochs_done = load_checkpoint(path("checkpoint.peel"), model, optimizer, timing);
  // Rows of later epochs (a kill between writing metrics.csv and the checkpoint) are measured again.
  metrics = read_metrics_csv(path("metrics.csv"), epochs_done);
  return epochs_done;
}

int64_t load_checkpoint(const std::string& checkpoint, nn::Module& model, optim::Optimizer& optimizer,
                        RunTiming& timing) {
  std::vector<std::pair<std::string, Tensor>> model_state;
  std::vector<Tensor> buffers;
  int64_t epochs_done = -1;
  for (auto& [name, t] : nn::read_state(checkpoint)) {
    if (name.rfind("model.", 0) == 0)
      model_state.emplace_back(name.substr(6), t);
    else if (name.rfind("optimizer.", 0) == 0)
      buffers.push_back(t);
    else if (name == "epochs_done")
      epochs_done = static_cast<int64_t>(t.item());
    else if (name == "timing.wall_seconds")
      timing.wall_seconds = t.item();
    else if (name == "timing.train_seconds")
      timing.train_seconds = t.item();
    else if (name == "timing.images_trained")
      timing.images_trained = static_cast<int64_t>(t.item());
  }
  PEEL_CHECK(epochs_done >= 0, "{}: not a training checkpoint (no epochs_done entry)", checkpoint);
  nn::assign_state(model.state(), model_state, checkpoint);
  try {
    optimizer.load_state(buffers);
  } catch (const Error& e) {
    PEEL_FAIL("{}: the optimizer state does not fit this run ({})", checkpoint, e.what());
  }
  return epochs_done;
}

void RunFolder::save_checkpoint(const nn::Module& model, const optim::Optimizer& optimizer, int64_t epochs_done,
                                const RunTiming& timing) const {
  std::vector<std::pair<std::string, Tensor>> state;
  for (const auto& [name, t] : model.state()) state.emplace_back("model." + name, t);
  const std::vector<Tensor> buffers = optimizer.state();
  for (size_t i = 0; i < buffers.size(); ++i) state.emplace_back(fmt::format("optimizer.{}", i), buffers[i]);
  state.emplace_back("epochs_done", Tensor::scalar(static_cast<float>(epochs_done)));
  state.emplace_back("timing.wall_seconds", Tensor::scalar(static_cast<float>(timing.wall_seconds)));
  state.emplace_back("timing.train_seconds", Tensor::scalar(static_cast<float>(timing.train_seconds)));
  state.emplace_back("timing.images_trained", Tensor::scalar(static_cast<float>(timing.images_trained)));
  nn::write_state(path("checkpoint.peel"), state);
}

void RunFolder::write_metrics(const MetricsTable& table) const { write_metrics_csv(path("metrics.csv"), table); }

void RunFolder::write_summary(const json& summary) const { write_text(path("summary.json"), summary.dump(2) + "\n"); }

json RunFolder::read_summary() const {
  std::ifstream in(path("summary.json"));
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    PEEL_FAIL("{}: not valid JSON ({})", path("summary.json"), e.what());
  }
}

void RunFolder::write_spectra(const json& spectra) const { write_text(path("spectra.json"), spectra.dump() + "\n"); }

void RunFolder::write_measured_spectra(int64_t epoch, const json& spectra) const {
  std::error_code error;
  fs::create_directories(path("spectra"), error);
  PEEL_CHECK(!error, "cannot create {}: {}", path("spectra"), error.message());
  json j = spectra;
  j["epoch"] = epoch;
  write_text(path(fmt::format("spectra/epoch-{:03d}.json", epoch)), j.dump() + "\n");
}

}  // namespace peel
