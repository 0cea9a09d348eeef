// Progress output of a running job: a bar on a terminal, plain log lines, or JSON lines.
#pragma once

#include <chrono>
#include <cstdint>

#include "actors/messages.hpp"
#include "app/options.hpp"

namespace ms::app {

/// Renders job progress. Not thread-safe: used by the main thread only.
class progress_display {
public:
  /// `mode` automatic picks bar when stderr is a terminal, else plain.
  explicit progress_display(progress_mode mode);

  /// A new durable state of the job.
  void update(const job_progress& p);
  /// Called periodically; redraws the bar or prints a plain line every few seconds.
  void tick();
  /// The job ended: final line.
  void finish(const job_result& r);

private:
  void render(bool final);
  progress_mode mode_;
  job_progress last_;
  std::uint64_t start_done_ = 0;  ///< files already done when this run started (resume)
  bool started_ = false;
  std::chrono::steady_clock::time_point t0_;
  std::chrono::steady_clock::time_point last_print_;
  bool dirty_ = false;
};

} // namespace ms::app
