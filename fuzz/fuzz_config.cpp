// Fuzz target: config files (app/config.hpp parse_config), and through it every value
// parser of the settings table (numbers, durations, addresses, globs, database URLs).
// Contract: any text either parses or throws usage_error whose message starts with the
// file's name ("NAME:LINE: ..." or "NAME: ..."); never another exception, a crash, UB or
// a hang. A parsed file gives effective settings for itself and for each of its jobs
// without throwing (everything was checked up front), and every job has source and dest.
#include <cstdint>
#include <exception>

#include "app/config.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace ms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = fuzz::text_of(data, size);
  const std::string name = "fuzz.ini";
  app::config_file cfg;
  try {
    cfg = app::parse_config(text, name);
  } catch (const app::usage_error& e) {
    std::string what = e.what();
    MS_FUZZ_CHECK(fuzz::starts_with(what, name + ":"),
                  "usage_error does not name the file: " + fuzz::shown(what));
    return 0;
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"parse_config threw a non-usage_error: "} + e.what());
  }
  // Accepted: everything was checked, so applying it cannot fail any more.
  try {
    app::effective_options(&cfg, {});
    for (auto& job : cfg.jobs) {
      auto o = app::effective_options(cfg, job, {});
      MS_FUZZ_CHECK(!o.source.empty() && !o.dest.empty(), "accepted job without source/dest");
      MS_FUZZ_CHECK(o.job_name == job.name, "job name lost");
    }
    if (!cfg.jobs.empty())
      MS_FUZZ_CHECK(app::select_jobs(cfg, {}).size() == cfg.jobs.size(), "select_jobs({})");
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"an accepted config failed when applied: "} + e.what());
  }
  return 0;
}
