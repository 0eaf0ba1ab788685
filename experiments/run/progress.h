// Progress reporting for training: a one-line bar redrawn in place on a terminal, plain lines
// (one per epoch) when the output is a file or a pipe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace peel {

class Progress {
 public:
  Progress(int64_t total_epochs, int64_t steps_per_epoch, bool quiet = false);
  // Before an epoch's first step.
  void start_epoch();
  // After each training step: running loss and accuracy of the epoch so far, images in the step.
  void step(int64_t epoch, int64_t step, double loss, double accuracy, int64_t images);
  // After an epoch: its summary line (always printed, terminal or not).
  void epoch_done(int64_t epoch, const std::string& summary);

 private:
  int64_t total_epochs_, steps_per_epoch_;
  bool quiet_, terminal_;
  std::chrono::steady_clock::time_point start_, epoch_start_, last_draw_, last_step_;
  int64_t epoch_images_ = 0, steps_done_ = 0;
};

}  // namespace peel
