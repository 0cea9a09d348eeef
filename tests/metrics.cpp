// The Prometheus registry (actors/metrics.*): exact exposition text, validation,
// thread safety, and `promtool check metrics` on what it renders.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "actors/metrics.hpp"
#include "actors/progress_writer.hpp"
#include "test_util.hpp"

using ms::metric_labels;
using ms::metrics;
using kind = ms::metrics::kind;

namespace {

/// The value of the first sample line starting with `prefix` + ' ' in `text`.
std::string sample(const std::string& text, const std::string& prefix) {
  std::size_t pos = 0;
  while ((pos = text.find(prefix + ' ', pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      auto b = pos + prefix.size() + 1;
      return text.substr(b, text.find('\n', b) - b);
    }
    ++pos;
  }
  return "<none>";
}

} // namespace

TEST_CASE("metrics: render gives the exact exposition text of a small registry", "[metrics]") {
  metrics m;
  m.describe("ms_jobs_total", kind::counter, "Jobs run.");
  m.describe("ms_queue_depth", kind::gauge, "Tasks queued.\nBy stage, with a \\ backslash");
  m.describe("ms_latency_seconds", kind::histogram, "Latency.", {0.5, 1, 2.5});
  m.describe("ms_files_total", kind::counter, "Files.");
  m.describe("ms_unused", kind::gauge, "Declared, never set.");
  m.describe("ms_plain_seconds", kind::histogram, "No labels.", {1});

  m.add("ms_jobs_total", {}, 2);
  m.add("ms_jobs_total", {}, 0.5);
  m.set("ms_queue_depth", {{"stage", "sync"}}, 3);
  m.set("ms_queue_depth", {{"stage", "processing"}}, -1.25);
  m.add("ms_queue_depth", {{"stage", "big"}}, 1e21);
  m.add("ms_queue_depth", {{"stage", "tenths"}}, 0.1);
  m.add("ms_queue_depth", {{"stage", "tenths"}}, 0.2);
  for (double v : {0.25, 0.5, 0.75, 3.0}) // 0.5: a bound is inclusive
    m.observe("ms_latency_seconds", {{"op", "commit"}}, v);
  // Label order does not matter: one series, rendered with sorted label names.
  m.add("ms_files_total", {{"status", "ok"}, {"stage", "sync"}}, 3);
  m.add("ms_files_total", {{"stage", "sync"}, {"status", "ok"}}, 1);
  m.add("ms_files_total", {{"stage", "a \"quoted\" \\ back\nslash"}, {"status", "ok"}}, 0);
  m.observe("ms_plain_seconds", {}, 7);

  const std::string expected =
      "# HELP ms_files_total Files.\n"
      "# TYPE ms_files_total counter\n"
      "ms_files_total{stage=\"a \\\"quoted\\\" \\\\ back\\nslash\",status=\"ok\"} 0\n"
      "ms_files_total{stage=\"sync\",status=\"ok\"} 4\n"
      "# HELP ms_jobs_total Jobs run.\n"
      "# TYPE ms_jobs_total counter\n"
      "ms_jobs_total 2.5\n"
      "# HELP ms_latency_seconds Latency.\n"
      "# TYPE ms_latency_seconds histogram\n"
      "ms_latency_seconds_bucket{op=\"commit\",le=\"0.5\"} 2\n"
      "ms_latency_seconds_bucket{op=\"commit\",le=\"1\"} 3\n"
      "ms_latency_seconds_bucket{op=\"commit\",le=\"2.5\"} 3\n"
      "ms_latency_seconds_bucket{op=\"commit\",le=\"+Inf\"} 4\n"
      "ms_latency_seconds_sum{op=\"commit\"} 4.5\n"
      "ms_latency_seconds_count{op=\"commit\"} 4\n"
      "# HELP ms_plain_seconds No labels.\n"
      "# TYPE ms_plain_seconds histogram\n"
      "ms_plain_seconds_bucket{le=\"1\"} 0\n"
      "ms_plain_seconds_bucket{le=\"+Inf\"} 1\n"
      "ms_plain_seconds_sum 7\n"
      "ms_plain_seconds_count 1\n"
      "# HELP ms_queue_depth Tasks queued.\\nBy stage, with a \\\\ backslash\n"
      "# TYPE ms_queue_depth gauge\n"
      "ms_queue_depth{stage=\"big\"} 1e+21\n"
      "ms_queue_depth{stage=\"processing\"} -1.25\n"
      "ms_queue_depth{stage=\"sync\"} 3\n"
      "ms_queue_depth{stage=\"tenths\"} 0.30000000000000004\n"
      "# HELP ms_unused Declared, never set.\n"
      "# TYPE ms_unused gauge\n";
  CHECK(m.render() == expected);

  CHECK(m.value("ms_files_total", {{"status", "ok"}, {"stage", "sync"}}) == 4);
  CHECK(m.value("ms_latency_seconds", {{"op", "commit"}}) == 4); // a histogram's count
  CHECK(m.sum("ms_latency_seconds", {{"op", "commit"}}) == 4.5);
  CHECK(m.value("ms_queue_depth", {{"stage", "none yet"}}) == 0);

  // remove drops one series; the family stays.
  m.remove("ms_queue_depth", {{"stage", "sync"}});
  m.remove("ms_queue_depth", {{"stage", "never there"}});
  auto text = m.render();
  CHECK(text.find("ms_queue_depth{stage=\"sync\"}") == std::string::npos);
  CHECK(text.find("ms_queue_depth{stage=\"processing\"} -1.25\n") != std::string::npos);
  CHECK(m.value("ms_queue_depth", {{"stage", "sync"}}) == 0);
}

TEST_CASE("metrics: numbers render so that they parse back to the same double", "[metrics]") {
  metrics m;
  m.describe("ms_value", kind::gauge, "A value.");
  const double values[] = {0.1, 1.0 / 3, -2.0 / 7, 1e-300, 5e-324, DBL_MAX, -DBL_MAX,
                           123456789012345678.0, 0.0, 1e21, 9007199254740993.0, 299792458};
  for (double v : values) {
    INFO("value " << v);
    m.set("ms_value", {}, v);
    std::string s = sample(m.render(), "ms_value");
    char* end = nullptr;
    double back = std::strtod(s.c_str(), &end);
    CHECK(*end == '\0');
    CHECK(std::memcmp(&back, &v, sizeof v) == 0);
  }
  m.set("ms_value", {}, std::numeric_limits<double>::infinity());
  CHECK(sample(m.render(), "ms_value") == "+Inf");
  m.set("ms_value", {}, -std::numeric_limits<double>::infinity());
  CHECK(sample(m.render(), "ms_value") == "-Inf");
  m.set("ms_value", {}, std::numeric_limits<double>::quiet_NaN());
  CHECK(sample(m.render(), "ms_value") == "NaN");
}

TEST_CASE("metrics: invalid names, conflicting declarations and misuse are logic errors",
          "[metrics]") {
  metrics m;
  SECTION("names") {
    CHECK_THROWS_AS(m.describe("files", kind::counter, "x"), std::logic_error);   // no _total
    CHECK_THROWS_AS(m.describe("up_total", kind::gauge, "x"), std::logic_error);  // _total
    CHECK_THROWS_AS(m.describe("lat_total", kind::histogram, "x", {1}), std::logic_error);
    CHECK_THROWS_AS(m.describe("queue_count", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("queue_sum", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("queue_bucket", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("camelCase", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("1st", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("with:colon", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("with-dash", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("__reserved", kind::gauge, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("no_help", kind::gauge, ""), std::logic_error);
    CHECK_NOTHROW(m.describe("_ok_9", kind::gauge, "x"));
    CHECK_NOTHROW(m.describe("files_total", kind::counter, "x"));
  }
  SECTION("buckets") {
    CHECK_THROWS_AS(m.describe("h", kind::histogram, "x"), std::logic_error);
    CHECK_THROWS_AS(m.describe("h", kind::histogram, "x", {1, 1}), std::logic_error);
    CHECK_THROWS_AS(m.describe("h", kind::histogram, "x", {2, 1}), std::logic_error);
    CHECK_THROWS_AS(m.describe("h", kind::histogram, "x", {1, NAN}), std::logic_error);
    CHECK_THROWS_AS(m.describe("g", kind::gauge, "x", {1}), std::logic_error);
    // +Inf is implied: giving it is the same declaration.
    m.describe("h", kind::histogram, "x", {1, 2, INFINITY});
    CHECK_NOTHROW(m.describe("h", kind::histogram, "x", {1, 2}));
    m.observe("h", {}, 1e9);
    CHECK(m.render().find("h_bucket{le=\"+Inf\"} 1\n") != std::string::npos);
  }
  SECTION("redeclaring") {
    m.describe("a_total", kind::counter, "A.");
    CHECK_NOTHROW(m.describe("a_total", kind::counter, "A."));
    CHECK_THROWS_AS(m.describe("a_total", kind::counter, "Other help."), std::logic_error);
    m.describe("h", kind::histogram, "H.", {1, 2});
    CHECK_THROWS_AS(m.describe("h", kind::histogram, "H.", {1, 3}), std::logic_error);
    CHECK_THROWS_AS(m.describe("h", kind::gauge, "H."), std::logic_error);
    m.add("a_total", {}, 1);
    m.describe("a_total", kind::counter, "A."); // keeps the series
    CHECK(m.value("a_total", {}) == 1);
  }
  SECTION("updates") {
    m.describe("c_total", kind::counter, "C.");
    m.describe("g", kind::gauge, "G.");
    m.describe("h", kind::histogram, "H.", {1});
    CHECK_THROWS_AS(m.add("undeclared_total", {}, 1), std::logic_error);
    CHECK_THROWS_AS(m.set("undeclared", {}, 1), std::logic_error);
    CHECK_THROWS_AS(m.observe("undeclared", {}, 1), std::logic_error);
    CHECK_THROWS_AS(m.remove("undeclared", {}), std::logic_error);
    CHECK_THROWS_AS(m.value("undeclared", {}), std::logic_error);
    CHECK_THROWS_AS(m.add("c_total", {}, -1), std::logic_error); // counters only grow
    CHECK_THROWS_AS(m.add("c_total", {}, NAN), std::logic_error);
    CHECK_THROWS_AS(m.set("c_total", {}, 5), std::logic_error);
    CHECK_THROWS_AS(m.observe("c_total", {}, 5), std::logic_error);
    CHECK_THROWS_AS(m.add("h", {}, 1), std::logic_error);
    CHECK_THROWS_AS(m.set("h", {}, 1), std::logic_error);
    CHECK_THROWS_AS(m.observe("g", {}, 1), std::logic_error);
    CHECK_THROWS_AS(m.observe("h", {}, NAN), std::logic_error);
    CHECK_THROWS_AS(m.sum("g", {}), std::logic_error);
    CHECK(m.value("c_total", {}) == 0); // nothing half-applied
    m.add("g", {}, -2.5);                // gauges go both ways
    m.add("g", {}, 1);
    CHECK(m.value("g", {}) == -1.5);
  }
  SECTION("labels") {
    m.describe("g", kind::gauge, "G.");
    m.describe("h", kind::histogram, "H.", {1});
    CHECK_THROWS_AS(m.set("g", {{"Stage", "x"}}, 1), std::logic_error);
    CHECK_THROWS_AS(m.set("g", {{"__name__", "x"}}, 1), std::logic_error);
    CHECK_THROWS_AS(m.set("g", {{"1a", "x"}}, 1), std::logic_error);
    CHECK_THROWS_AS(m.set("g", {{"", "x"}}, 1), std::logic_error);
    CHECK_THROWS_AS(m.set("g", {{"a", "x"}, {"a", "y"}}, 1), std::logic_error);
    CHECK_THROWS_AS(m.observe("h", {{"le", "1"}}, 1), std::logic_error);
    CHECK_NOTHROW(m.set("g", {{"le", "1"}}, 1)); // only histograms reserve it
    CHECK(m.render().find("\ng{le=\"1\"} 1\n") != std::string::npos);
  }
}

TEST_CASE("metrics: updates from several threads all count", "[metrics]") {
  metrics m;
  m.describe("ops_total", kind::counter, "Ops.");
  m.describe("lat_seconds", kind::histogram, "Latency.", {0.5, 1});
  m.describe("level", kind::gauge, "Level.");
  constexpr int threads = 4, per_thread = 5000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&m, t] {
      metric_labels mine{{"thread", std::to_string(t)}};
      for (int i = 0; i < per_thread; ++i) {
        m.add("ops_total", {}, 1);
        m.add("ops_total", mine, 2);
        m.observe("lat_seconds", {}, i % 2 == 0 ? 0.25 : 0.75);
        m.add("level", {}, t % 2 == 0 ? 1 : -1);
        if (i % 500 == 0)
          (void)m.render(); // readers while writing
      }
    });
  for (auto& t : ts)
    t.join();
  CHECK(m.value("ops_total", {}) == threads * per_thread);
  for (int t = 0; t < threads; ++t)
    CHECK(m.value("ops_total", {{"thread", std::to_string(t)}}) == 2 * per_thread);
  CHECK(m.value("lat_seconds", {}) == threads * per_thread);
  CHECK(m.sum("lat_seconds", {}) == threads * per_thread / 2 * (0.25 + 0.75));
  CHECK(m.value("level", {}) == 0);
  auto text = m.render();
  CHECK(sample(text, "lat_seconds_bucket{le=\"0.5\"}") == std::to_string(threads * per_thread / 2));
  CHECK(sample(text, "lat_seconds_bucket{le=\"1\"}") == std::to_string(threads * per_thread));
}

TEST_CASE("metrics: promtool check metrics accepts the rendering of a hostile registry",
          "[metrics]") {
  metrics m;
  m.describe("mediasync_test_files_total", kind::counter,
             "Files, by stage and status.\nA second line, a \\ backslash and \"quotes\".");
  m.describe("mediasync_test_bytes_total", kind::counter, "Bytes.");
  m.describe("mediasync_test_queue_depth", kind::gauge, "Queued tasks.");
  m.describe("mediasync_test_empty", kind::gauge, "Never set.");
  m.describe("mediasync_test_duration_seconds", kind::histogram, "Durations.",
             {0.001, 0.01, 0.1, 1, 10});
  m.describe("mediasync_test_batch_size", kind::histogram, "Sizes.", {1, 10, 100});
  const std::vector<std::string> hostile = {
      "plain",
      "double \" quote",
      "back\\slash",
      "trailing backslash \\",
      "line\nbreak",
      "\\n literally",
      "\"\\\n all three",
      "tab\there, cr\rthere",
      "braces {a=\"b\"}, comma,",
      "caf\xc3\xa9 \xf0\x9f\x98\x80",
      "invalid \xff\xfe utf-8 \xc3",
      std::string("nul \0 inside", 12),
      "",
  };
  double n = 1;
  for (const auto& v : hostile) {
    m.add("mediasync_test_files_total", {{"stage", v}, {"status", "ok"}}, n);
    m.set("mediasync_test_queue_depth", {{"stage", v}}, -n);
    m.observe("mediasync_test_duration_seconds", {{"op", v}}, n / 1000);
    n *= 3.7;
  }
  m.add("mediasync_test_bytes_total", {}, 1e15 + 0.5);
  for (double v : {0.0, 1.0, 5.0, 50.0, 5000.0})
    m.observe("mediasync_test_batch_size", {}, v);
  const std::string text = m.render();
  INFO(text);
  CHECK(ms::test::promtool_check(text).empty());
  // Every series is there once (13 hostile values, one per series).
  std::size_t lines = 0;
  for (std::size_t p = 0; (p = text.find("\nmediasync_test_queue_depth{", p)) != std::string::npos;
       ++p)
    ++lines;
  CHECK(lines == hostile.size());

  // The writer's families, after some updates, pass too.
  metrics w;
  ms::describe_writer_metrics(w);
  w.add(ms::writer_metrics::files, {{"stage", "sync"}, {"status", "ok"}}, 3);
  w.observe(ms::writer_metrics::batch_size, {}, 3);
  w.observe(ms::writer_metrics::duration, {}, 0.0042);
  w.set(ms::writer_metrics::buffered, {}, 7);
  CHECK(ms::test::promtool_check(w.render()).empty());
}

TEST_CASE("metrics: promtool_check reports what promtool complains about", "[metrics]") {
  // Not vacuous: a counter without _total, a series without help, a broken line.
  auto said = ms::test::promtool_check("# HELP files Files.\n# TYPE files counter\nfiles 1\n");
  CHECK_FALSE(said.empty());
  CHECK(said.find("_total") != std::string::npos);
  CHECK_FALSE(ms::test::promtool_check("# TYPE up gauge\nup 1\n").empty());
  CHECK_FALSE(ms::test::promtool_check("up{a=\"b} 1\n").empty());
  CHECK(ms::test::promtool_check("# HELP up Up.\n# TYPE up gauge\nup 1\n").empty());
}
