#include "actors/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string_view>

namespace ms {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// [a-z_][a-z0-9_]*: what promtool's linter accepts (no camelCase, no ':').
bool snake_case(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9'))
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

[[noreturn]] void misuse(const std::string& what) {
  throw std::logic_error("metrics: " + what);
}

/// Appends `v` so that it parses back to the same double.
void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
    out.append(buf, res.ptr);
  }
}

std::string number(double v) {
  std::string s;
  append_number(s, v);
  return s;
}

/// Length of the valid UTF-8 sequence starting at s[i], or 0 if there is none
/// (overlong forms, surrogates and code points past U+10FFFF are invalid).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80)
    return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi)
    return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF)
      return 0;
  return n;
}

/// Appends `s` escaped for the exposition format: backslash and line feed
/// always, double quote in label values; invalid UTF-8 bytes as U+FFFD.
void append_escaped(std::string& out, std::string_view s, bool label_value) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    if (n == 1) {
      char c = s[i];
      if (c == '\\')
        out += "\\\\";
      else if (c == '\n')
        out += "\\n";
      else if (c == '"' && label_value)
        out += "\\\"";
      else
        out += c;
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
}

/// Appends `{a="x",b="y"}` (with `extra` last, e.g. le="0.1"); nothing for no labels.
void append_labels(std::string& out, const std::vector<std::pair<std::string, std::string>>& l,
                   const std::pair<std::string, std::string>* extra = nullptr) {
  if (l.empty() && !extra)
    return;
  out += '{';
  bool first = true;
  auto one = [&](const std::pair<std::string, std::string>& p) {
    if (!first)
      out += ',';
    first = false;
    out += p.first;
    out += "=\"";
    append_escaped(out, p.second, true);
    out += '"';
  };
  for (const auto& p : l)
    one(p);
  if (extra)
    one(*extra);
  out += '}';
}

} // namespace

const char* to_string(metrics::kind k) {
  switch (k) {
    case metrics::kind::counter: return "counter";
    case metrics::kind::gauge: return "gauge";
    case metrics::kind::histogram: return "histogram";
  }
  return "untyped";
}

void metrics::describe(const std::string& name, kind k, const std::string& help,
                       std::vector<double> buckets) {
  if (!snake_case(name))
    misuse("invalid metric name '" + name + "' (lower-case snake_case: [a-z_][a-z0-9_]*)");
  if (name.rfind("__", 0) == 0)
    misuse("metric name '" + name + "' starts with '__' (reserved)");
  if (k == kind::counter && !ends_with(name, "_total"))
    misuse("counter '" + name + "' must end in _total");
  if (k != kind::counter && ends_with(name, "_total"))
    misuse(std::string(to_string(k)) + " '" + name + "' must not end in _total (counters do)");
  if (k != kind::histogram)
    for (const char* s : {"_bucket", "_sum", "_count"})
      if (ends_with(name, s))
        misuse(std::string(to_string(k)) + " '" + name + "' must not end in " + s
               + " (a histogram's series do)");
  if (help.empty())
    misuse("metric '" + name + "' has no help text");
  if (k == kind::histogram) {
    if (!buckets.empty() && std::isinf(buckets.back()) && buckets.back() > 0)
      buckets.pop_back();  // +Inf is implied
    if (buckets.empty())
      misuse("histogram '" + name + "' has no buckets");
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      if (!std::isfinite(buckets[i]))
        misuse("histogram '" + name + "': bucket bound " + number(buckets[i]) + " is not finite");
      if (i > 0 && !(buckets[i - 1] < buckets[i]))
        misuse("histogram '" + name + "': bucket bounds must be strictly increasing");
    }
  } else if (!buckets.empty()) {
    misuse(std::string(to_string(k)) + " '" + name + "' cannot have buckets");
  }
  std::lock_guard<std::mutex> guard{mu_};
  auto it = families_.find(name);
  if (it != families_.end()) {
    const family& f = it->second;
    if (f.k != k || f.help != help || f.buckets != buckets)
      misuse("metric '" + name + "' declared again differently (was a " + to_string(f.k)
             + " with help '" + f.help + "')");
    return;
  }
  family f;
  f.k = k;
  f.help = help;
  f.buckets = std::move(buckets);
  families_.emplace(name, std::move(f));
}

metrics::family& metrics::find(const std::string& name, const char* op) {
  auto it = families_.find(name);
  if (it == families_.end())
    misuse(std::string(op) + " of undeclared metric '" + name + "'");
  return it->second;
}

const metrics::family& metrics::find(const std::string& name, const char* op) const {
  auto it = families_.find(name);
  if (it == families_.end())
    misuse(std::string(op) + " of undeclared metric '" + name + "'");
  return it->second;
}

metrics::label_key metrics::key_of(const std::string& name, const family& f,
                                   const metric_labels& l) const {
  label_key key(l.begin(), l.end());
  std::sort(key.begin(), key.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < key.size(); ++i) {
    const std::string& n = key[i].first;
    if (!snake_case(n) || n.rfind("__", 0) == 0)
      misuse("metric '" + name + "': invalid label name '" + n
             + "' ([a-z_][a-z0-9_]*, not starting with __)");
    if (f.k == kind::histogram && n == "le")
      misuse("histogram '" + name + "' cannot have a label 'le' (its bucket label)");
    if (i > 0 && key[i - 1].first == n)
      misuse("metric '" + name + "': label '" + n + "' given twice");
  }
  return key;
}

metrics::series& metrics::series_of(const std::string& name, family& f, const metric_labels& l) {
  auto [it, fresh] = f.all.try_emplace(key_of(name, f, l));
  if (fresh && f.k == kind::histogram)
    it->second.counts.assign(f.buckets.size() + 1, 0);
  return it->second;
}

void metrics::add(const std::string& name, const metric_labels& l, double delta) {
  std::lock_guard<std::mutex> guard{mu_};
  family& f = find(name, "add");
  if (f.k == kind::histogram)
    misuse("add to histogram '" + name + "' (use observe)");
  if (f.k == kind::counter && !(delta >= 0))
    misuse("counter '" + name + "' can only grow (add " + number(delta) + ")");
  series_of(name, f, l).value += delta;
}

void metrics::set(const std::string& name, const metric_labels& l, double value) {
  std::lock_guard<std::mutex> guard{mu_};
  family& f = find(name, "set");
  if (f.k != kind::gauge)
    misuse(std::string("set of ") + to_string(f.k) + " '" + name + "' (gauges only)");
  series_of(name, f, l).value = value;
}

void metrics::observe(const std::string& name, const metric_labels& l, double value) {
  std::lock_guard<std::mutex> guard{mu_};
  family& f = find(name, "observe");
  if (f.k != kind::histogram)
    misuse(std::string("observe of ") + to_string(f.k) + " '" + name + "' (histograms only)");
  if (std::isnan(value))
    misuse("histogram '" + name + "': observed NaN");
  series& s = series_of(name, f, l);
  // The first bucket whose upper bound (inclusive) holds the value; past the last: +Inf.
  auto b = std::lower_bound(f.buckets.begin(), f.buckets.end(), value);
  ++s.counts[static_cast<std::size_t>(b - f.buckets.begin())];
  s.sum += value;
  ++s.count;
}

void metrics::remove(const std::string& name, const metric_labels& l) {
  std::lock_guard<std::mutex> guard{mu_};
  family& f = find(name, "remove");
  f.all.erase(key_of(name, f, l));
}

double metrics::value(const std::string& name, const metric_labels& l) const {
  std::lock_guard<std::mutex> guard{mu_};
  const family& f = find(name, "value");
  auto it = f.all.find(key_of(name, f, l));
  if (it == f.all.end())
    return 0;
  return f.k == kind::histogram ? static_cast<double>(it->second.count) : it->second.value;
}

double metrics::sum(const std::string& name, const metric_labels& l) const {
  std::lock_guard<std::mutex> guard{mu_};
  const family& f = find(name, "sum");
  if (f.k != kind::histogram)
    misuse(std::string("sum of ") + to_string(f.k) + " '" + name + "' (histograms only)");
  auto it = f.all.find(key_of(name, f, l));
  return it == f.all.end() ? 0 : it->second.sum;
}

std::string metrics::render() const {
  std::lock_guard<std::mutex> guard{mu_};
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped(out, f.help, false);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += to_string(f.k);
    out += '\n';
    for (const auto& [labels, s] : f.all) {
      if (f.k != kind::histogram) {
        out += name;
        append_labels(out, labels);
        out += ' ';
        append_number(out, s.value);
        out += '\n';
        continue;
      }
      std::uint64_t cumulative = 0;
      for (std::size_t b = 0; b <= f.buckets.size(); ++b) {
        cumulative += s.counts[b];
        const std::pair<std::string, std::string> le{
            "le", b < f.buckets.size() ? number(f.buckets[b]) : "+Inf"};
        out += name;
        out += "_bucket";
        append_labels(out, labels, &le);
        out += ' ';
        out += std::to_string(cumulative);
        out += '\n';
      }
      out += name;
      out += "_sum";
      append_labels(out, labels);
      out += ' ';
      append_number(out, s.sum);
      out += '\n';
      out += name;
      out += "_count";
      append_labels(out, labels);
      out += ' ';
      out += std::to_string(s.count);
      out += '\n';
    }
  }
  return out;
}

} // namespace ms
