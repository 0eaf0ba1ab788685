#include "experiments/run/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace peel {

namespace {
std::string clock_text(double seconds) {
  const int64_t s = std::llround(seconds);
  return s >= 3600 ? fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{:d}:{:02d}", s / 60, s % 60);
}
}  // namespace

Progress::Progress(int64_t total_epochs, int64_t steps_per_epoch, bool quiet)
    : total_epochs_(total_epochs),
      steps_per_epoch_(steps_per_epoch),
      quiet_(quiet),
      terminal_(::isatty(STDOUT_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      epoch_start_(start_),
      last_draw_(start_) {}

namespace {
// Images per second, or "-" when the time is too short to say (a tiny epoch of one step).
std::string rate_text(int64_t images, double seconds) {
  return seconds >= 1e-3 ? fmt::format("{:.0f}", static_cast<double>(images) / seconds) : std::string("-");
}
}  // namespace

void Progress::start_epoch() {
  epoch_start_ = last_step_ = std::chrono::steady_clock::now();
  epoch_images_ = 0;
}

void Progress::step(int64_t epoch, int64_t step, double loss, double accuracy, int64_t images) {
  const auto now = std::chrono::steady_clock::now();
  epoch_images_ += images;
  ++steps_done_;
  last_step_ = now;
  if (quiet_ || !terminal_) return;
  const bool last = step + 1 == steps_per_epoch_;
  if (!last && now - last_draw_ < std::chrono::milliseconds(100)) return;  // redraw at most 10 times a second
  last_draw_ = now;
  const double epoch_seconds = std::chrono::duration<double>(now - epoch_start_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double total_steps = static_cast<double>(total_epochs_ * steps_per_epoch_);
  const double eta = elapsed / static_cast<double>(steps_done_) * (total_steps - static_cast<double>(steps_done_));
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(kWidth * (step + 1) / std::max<int64_t>(steps_per_epoch_, 1));
  fmt::print(stdout, "\r\033[Kepoch {}/{} [{}{}] {}/{} loss {:.4f} acc {:.2f}% {} img/s ETA {}", epoch + 1,
             total_epochs_, std::string(filled, '#'), std::string(kWidth - filled, '.'), step + 1, steps_per_epoch_,
             loss, 100 * accuracy, rate_text(epoch_images_, epoch_seconds), clock_text(eta));
  std::fflush(stdout);
}

void Progress::epoch_done(int64_t epoch, const std::string& summary) {
  const auto now = std::chrono::steady_clock::now();
  // Images per second of training alone (the evaluation that follows an epoch is not counted).
  const double epoch_seconds = std::chrono::duration<double>(last_step_ - epoch_start_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  if (quiet_) return;
  if (terminal_) std::fputs("\r\033[K", stdout);
  fmt::print(stdout, "epoch {}/{}  {}  {} img/s  {} elapsed\n", epoch + 1, total_epochs_, summary,
             rate_text(epoch_images_, epoch_seconds), clock_text(elapsed));
  std::fflush(stdout);
}

}  // namespace peel
