// Shared by the writer benchmarks: the synthetic outcomes they commit, and timing helpers.
#pragma once

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "storage/records.hpp"

namespace ms::bench {

using clock_type = std::chrono::steady_clock;
using batches = std::vector<std::vector<ms::file_outcome>>;

/// `rows` outcomes of job `job_id` in batches of `batch`: paths "dir0042/file000123.jpg" in
/// sorted order; half ok and touching media items, a quarter skipped, a quarter failed.
inline batches make_batches(std::uint64_t rows, std::size_t batch, std::uint64_t job_id) {
  batches out;
  std::vector<ms::file_outcome> cur;
  char buf[128];
  for (std::uint64_t i = 0; i < rows; ++i) {
    ms::file_outcome f;
    f.job_id = job_id;
    std::snprintf(buf, sizeof buf, "dir%04llu/file%06llu.jpg",
                  static_cast<unsigned long long>(i / 1000), static_cast<unsigned long long>(i));
    f.path = buf;
    f.size = 100000 + (i * 7919) % 5000000;
    f.mtime_ns = 1700000000000000000LL + static_cast<std::int64_t>(i) * 1000;
    f.duration_us = static_cast<std::int64_t>(500 + i % 1000);
    switch (i % 4) {
      case 0:
      case 2:
        f.status = ms::file_status::ok;
        f.touches_media = true;
        std::snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx",
                      static_cast<unsigned long long>(i * 0x9e3779b97f4a7c15ULL),
                      static_cast<unsigned long long>(i ^ 0xdeadbeefcafef00dULL),
                      static_cast<unsigned long long>(i * 31 + 7),
                      static_cast<unsigned long long>(~i));
        f.sha256 = buf;
        f.mime = "image/jpeg";
        std::snprintf(buf, sizeof buf, "2026/11/28/file%06llu.jpg",
                      static_cast<unsigned long long>(i));
        f.library_path = buf;
        break;
      case 1:
        f.status = ms::file_status::skipped;
        f.error = "special file (FIFO)";
        break;
      default:
        f.status = ms::file_status::failed;
        f.error = "open: Permission denied";
        break;
    }
    cur.push_back(std::move(f));
    if (cur.size() == batch) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// CPU time (user + system) of this process, in seconds.
inline double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

} // namespace ms::bench
