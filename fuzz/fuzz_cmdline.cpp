// Fuzz target: the command line (app/options.hpp parse_command_line). The input is split
// at NUL bytes into argv (without the program name), as the kernel would hand it over.
// Contract: parses or throws usage_error, nothing else; a parsed command line's settings
// apply without error (parse_command_line checks every value, including durations,
// HOST:PORT addresses and database URLs).
#include <cstdint>
#include <exception>

#include "app/options.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace ms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 16384)  // argv is bounded in practice; keep executions fast
    return 0;
  auto args = fuzz::split(fuzz::text_of(data, size), '\0');
  if (size == 0)
    args.clear();
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  app::command_line c;
  try {
    c = app::parse_command_line(static_cast<int>(argv.size()), argv.data());
  } catch (const app::usage_error&) {
    return 0;
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"parse_command_line threw a non-usage_error: "} + e.what());
  }
  MS_FUZZ_CHECK(!c.command.empty() || c.help, "accepted without a command or --help");
  try {
    app::options o;
    app::apply_settings(o, c.settings);
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"accepted settings failed when applied: "} + e.what());
  }
  return 0;
}
