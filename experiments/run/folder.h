// A run folder holds one run, whole:
//   config.json      what the run is (its TrainConfig) and what it found (data sizes, class counts)
//   metrics.csv      one row per measured epoch, rewritten whole after each
//   checkpoint.peel  model, optimizer state, epochs done and time spent, after every epoch
//   summary.json     the last measured row and the timing, once the run is complete
//   spectra.json     singular values of every weight matrix at the end
//   spectra/         with --measure-rank, epoch-NNN.json: the spectra of each measurement
//   .lock            held (flock) by the one process that writes into the folder
// Every file is written atomically (io::write_file_atomic), so a kill at any moment leaves the
// previous complete state. A folder is never silently reused: an existing run continues only when
// asked to (--resume) and only with the settings it was started with, or starts again (--force).
#pragma once

#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "experiments/collapse/collapse.h"
#include "experiments/run/config.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace peel {

// metrics.csv in memory: column names and one row of values per measured epoch (column 0 is the
// epoch, 1-based).
struct MetricsTable {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  std::vector<double> column(const std::string& name) const;  // empty if there is no such column
  // Appends a measured row; its names must be the table's columns (the first row sets them).
  void append(const MetricColumns& row, const std::string& path);
};
// Reads metrics.csv, keeping the rows of epochs <= up_to_epoch. A missing file is an empty table;
// a cell that is not a number, a short row or a bad header is an error naming file, line and column.
MetricsTable read_metrics_csv(const std::string& path, int64_t up_to_epoch = std::numeric_limits<int64_t>::max());
// The same, on the file's text; `path` names the file in errors (any name will do).
MetricsTable parse_metrics_csv(const std::string& text, const std::string& path,
                               int64_t up_to_epoch = std::numeric_limits<int64_t>::max());
void write_metrics_csv(const std::string& path, const MetricsTable& table);

// Wall-clock bookkeeping, carried through checkpoints so a resumed run reports its whole time.
struct RunTiming {
  double wall_seconds = 0, train_seconds = 0;
  int64_t images_trained = 0;
};

// What to do with a folder that already holds a run.
enum class ExistingRun {
  refuse,  // the default of `peel train --out`: an existing run needs --resume or --force
  resume,  // continue from the last checkpoint; the settings must be the folder's own
  restart  // --force: remove the run's files and start again
};

enum class RunStart {
  fresh,            // from epoch 1 (config.json written)
  from_checkpoint,  // continue after the checkpoint's epoch (RunFolder::restore)
  complete          // nothing to do: summary.json is there
};

class RunFolder {
 public:
  // Takes `dir` for this process: creates it, proves it writable, and takes its lock, refusing
  // when another process holds it. The lock is released when the RunFolder is destroyed.
  explicit RunFolder(std::string dir);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }

  // Decides how the run starts, before any work, having checked the folder's config.json against `config` (a difference
  // in anything but the execution settings is refused, naming each differing field) and refused a folder that cannot be
  // continued (metrics but no checkpoint, a checkpoint but no config). With `restart` it first removes the run's files.
  RunStart prepare(const TrainConfig& config, ExistingRun existing, bool quiet);
  // config.json: the settings, and under "found" what the run found (data sizes, class counts...).
  void write_config(const TrainConfig& config, const nlohmann::json& found) const;

  // Restores model, optimizer and timing from the checkpoint `prepare` found, and the metrics rows
  // of the epochs it covers; returns the number of epochs done.
  int64_t restore(nn::Module& model, optim::Optimizer& optimizer, RunTiming& timing, MetricsTable& metrics) const;
  void save_checkpoint(const nn::Module& model, const optim::Optimizer& optimizer, int64_t epochs_done,
                       const RunTiming& timing) const;
  void write_metrics(const MetricsTable& table) const;
  void write_summary(const nlohmann::json& summary) const;
  nlohmann::json read_summary() const;
  void write_spectra(const nlohmann::json& spectra) const;
  // spectra/epoch-NNN.json: the square-loss study's spectra measured after `epoch` epochs (0: before training).
  void write_measured_spectra(int64_t epoch, const nlohmann::json& spectra) const;

 private:
  std::string dir_;
  int lock_fd_ = -1;
};

// The model, optimizer and timing of a checkpoint file; returns its epochs done. RunFolder::restore
// reads its folder's through this; the other ranks of a data-parallel run read rank 0's folder's.
int64_t load_checkpoint(const std::string& checkpoint, nn::Module& model, optim::Optimizer& optimizer,
                        RunTiming& timing);

// What a folder holds, read without taking it: for sweeps, which check every run's folder before
// the first one starts.
struct FolderState {
  bool has_config = false, has_checkpoint = false, complete = false;
  int64_t measured_epochs = 0;                  // rows in metrics.csv
  std::vector<std::string> differing_settings;  // against the asked config (empty when none or no config)
};
FolderState inspect_run_folder(const std::string& dir, const TrainConfig& asked);

}  // namespace peel
