#include "app/progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace ms::app {
namespace {

std::uint64_t done_files(const job_progress& p) {
  return p.processed_files + p.failed_files + p.skipped_files;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

std::string human_duration(double s) {
  if (s < 0 || s > 1e7)
    return "--:--";
  auto t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

} // namespace

progress_display::progress_display(progress_mode mode) : mode_(mode) {
  if (mode_ == progress_mode::automatic)
    mode_ = ::isatty(STDERR_FILENO) ? progress_mode::bar : progress_mode::plain;
  t0_ = last_print_ = std::chrono::steady_clock::now();
}

void progress_display::update(const job_progress& p) {
  if (!started_) {
    started_ = true;
    start_done_ = done_files(p);
  }
  last_ = p;
  dirty_ = true;
  if (mode_ == progress_mode::json)
    render(false);
}

void progress_display::tick() {
  auto now = std::chrono::steady_clock::now();
  if (mode_ == progress_mode::bar && dirty_)
    render(false);
  else if (mode_ == progress_mode::plain && dirty_ && now - last_print_ >= std::chrono::seconds(2))
    render(false);
}

void progress_display::render(bool final) {
  using namespace std::chrono;
  auto now = steady_clock::now();
  last_print_ = now;
  dirty_ = false;
  double secs = duration<double>(now - t0_).count();
  auto done = done_files(last_);
  double rate = secs > 0 ? static_cast<double>(done - std::min(done, start_done_)) / secs : 0;
  double byte_rate = secs > 0 ? static_cast<double>(last_.processed_bytes) / secs : 0;
  double eta = (rate > 0 && last_.total_files > done)
                 ? static_cast<double>(last_.total_files - done) / rate
                 : (last_.total_files <= done ? 0 : -1);
  switch (mode_) {
    case progress_mode::json: {
      nlohmann::json j = {{"job_id", last_.job_id},
                          {"total_files", last_.total_files},
                          {"processed_files", last_.processed_files},
                          {"failed_files", last_.failed_files},
                          {"skipped_files", last_.skipped_files},
                          {"processed_bytes", last_.processed_bytes},
                          {"files_per_second", rate},
                          {"elapsed_seconds", secs},
                          {"final", final}};
      std::fputs((j.dump() + "\n").c_str(), stdout);
      std::fflush(stdout);
      break;
    }
    case progress_mode::bar: {
      constexpr int width = 28;
      double frac = last_.total_files ? static_cast<double>(done) / last_.total_files : 0;
      if (frac > 1)
        frac = 1;
      int filled = static_cast<int>(frac * width);
      std::string bar(filled, '#');
      bar.append(width - filled, '.');
      std::fprintf(stderr, "\r[%s] %3.0f%% %llu/%llu files (%llu failed, %llu skipped) %s %.0f files/s %s/s ETA %s ",
                   bar.c_str(), frac * 100, static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(last_.total_files),
                   static_cast<unsigned long long>(last_.failed_files),
                   static_cast<unsigned long long>(last_.skipped_files),
                   human_bytes(static_cast<double>(last_.processed_bytes)).c_str(), rate,
                   human_bytes(byte_rate).c_str(), human_duration(eta).c_str());
      if (final)
        std::fputc('\n', stderr);
      std::fflush(stderr);
      break;
    }
    case progress_mode::plain:
      spdlog::info("job {}: {}/{} files ({} ok, {} failed, {} skipped), {}, {:.0f} files/s, ETA {}",
                   last_.job_id, done, last_.total_files, last_.processed_files,
                   last_.failed_files, last_.skipped_files,
                   human_bytes(static_cast<double>(last_.processed_bytes)), rate,
                   human_duration(eta));
      break;
    case progress_mode::none:
    case progress_mode::automatic:
      break;
  }
}

void progress_display::finish(const job_result& r) {
  if (r.counters.job_id != 0)
    last_ = r.counters;
  if (mode_ != progress_mode::none)
    render(true);
}

} // namespace ms::app
