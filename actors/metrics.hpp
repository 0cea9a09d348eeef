// A small thread-safe Prometheus metrics registry (plain C++, no CAF).
//
// Families are declared once (describe), then updated by name and label set;
// render() gives the text exposition format 0.0.4 that `GET /metrics` serves.
// Updates take one mutex: the registry is updated a few times per commit, so
// contention does not matter.
//
// Names follow what `promtool check metrics` accepts without a lint warning:
//   - metric names: lower-case snake_case, [a-z_][a-z0-9_]*; a counter's name
//     ends in `_total`, no other kind's does; no gauge or counter ends in
//     `_bucket`, `_sum` or `_count` (a histogram's series have those suffixes);
//   - label names: [a-z_][a-z0-9_]*, not starting with `__` (reserved), not
//     `le` in a histogram (its bucket label);
//   - the help text is required (not empty).
// Label order does not matter: {a="1",b="2"} and {b="2",a="1"} are one series,
// rendered with its label names sorted. Label values may hold anything: render()
// escapes backslash, double quote and line feed, and writes a byte that is not
// part of valid UTF-8 as U+FFFD (the format is UTF-8).
// Misuse (an undeclared name, the wrong kind, a negative counter increment, an
// invalid name or label) throws std::logic_error.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ms {

/// Label name -> value pairs of one series.
using metric_labels = std::vector<std::pair<std::string, std::string>>;

class metrics {
public:
  enum class kind { counter, gauge, histogram };

  metrics() = default;
  metrics(const metrics&) = delete;
  metrics& operator=(const metrics&) = delete;

  /// Declares a family. Declaring it again identically does nothing; a
  /// different kind, help text or buckets throws std::logic_error, as does an
  /// invalid name (see above). `buckets`: histograms only, the upper bounds,
  /// finite and strictly increasing, at least one (the +Inf bucket is implied).
  void describe(const std::string& name, kind k, const std::string& help,
                std::vector<double> buckets = {});

  /// Counter: adds `delta` (>= 0, not NaN). Gauge: adds `delta` (any sign).
  /// Creates the series at 0 first if it does not exist, so add(name, l, 0)
  /// makes a series visible before anything happened.
  void add(const std::string& name, const metric_labels& l, double delta);
  /// Gauge: sets the series to `value`.
  void set(const std::string& name, const metric_labels& l, double value);
  /// Histogram: counts `value` (not NaN) in its bucket and adds it to the sum.
  void observe(const std::string& name, const metric_labels& l, double value);
  /// Drops one series (of any kind); nothing happens when it does not exist.
  void remove(const std::string& name, const metric_labels& l);

  /// A counter's or gauge's value; a histogram's count of observations. 0 for a
  /// series that does not exist (yet).
  double value(const std::string& name, const metric_labels& l) const;
  /// A histogram series' sum of observations (0 when it does not exist).
  double sum(const std::string& name, const metric_labels& l) const;

  /// Every family in name order: `# HELP`, `# TYPE`, then its series in label
  /// order; histograms as cumulative `_bucket{le="..."}` series (the last one
  /// le="+Inf"), `_sum` and `_count`. Numbers are written so they parse back to
  /// the same double (shortest round-trip form; +Inf, -Inf, NaN).
  std::string render() const;

private:
  /// Label pairs sorted by name: the key of a series.
  using label_key = std::vector<std::pair<std::string, std::string>>;

  struct series {
    double value = 0;                  ///< counter, gauge
    std::vector<std::uint64_t> counts; ///< histogram: per bucket (not cumulative), then +Inf
    double sum = 0;                    ///< histogram
    std::uint64_t count = 0;           ///< histogram
  };
  struct family {
    kind k = kind::counter;
    std::string help;
    std::vector<double> buckets;
    std::map<label_key, series> all;
  };

  family& find(const std::string& name, const char* op);
  const family& find(const std::string& name, const char* op) const;
  label_key key_of(const std::string& name, const family& f, const metric_labels& l) const;
  series& series_of(const std::string& name, family& f, const metric_labels& l);

  mutable std::mutex mu_;
  std::map<std::string, family> families_;
};

/// The name of a metric kind as the `# TYPE` line writes it.
const char* to_string(metrics::kind k);

} // namespace ms
