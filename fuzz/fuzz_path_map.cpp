// Fuzz target: [cluster] path-map (app/cluster.hpp parse_path_map + map_path) and the
// HOST:PORT splitter of --join (split_address).
// Input: lines. Lines before the first empty line are path-map entries (FROM=TO), the
// others are paths to map (the first 32 of each); each of those lines is also given to
// split_address.
// Contract: parse_path_map throws only usage_error (an entry without '='); map_path
//  * returns the path unchanged when no FROM matches it (whole leading components),
//  * else, for the longest matching FROM, returns a result that starts with its TO and
//    ends with the rest of the path after FROM (FROM "/" keeps the whole path);
// split_address throws only usage_error.
#include <cstdint>
#include <exception>

#include "app/cluster.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace ms;

namespace {

/// Does `from` (as parse_path_map left it) match `path` on whole leading components?
/// Written independently of map_path: FROM itself, or FROM followed by a '/'.
bool oracle_matches(const std::string& from, const std::string& path) {
  std::string dir = from == "/" ? from : from + "/";
  return path == from || fuzz::starts_with(path, dir);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 8192)
    return 0;
  auto lines = fuzz::split(fuzz::text_of(data, size), '\n');
  std::vector<std::string> entries, paths;
  bool in_paths = false;
  for (auto& l : lines) {
    if (l.empty() && !in_paths) {
      in_paths = true;
      continue;
    }
    // A few dozen of each say all there is to say; more only slows every execution.
    auto& to = in_paths ? paths : entries;
    if (to.size() >= 32)
      continue;
    to.push_back(l);
    try {
      auto [host, port] = app::split_address(l);
      (void) port;
      MS_FUZZ_CHECK(host.size() < l.size(), "split_address host longer than its input");
    } catch (const app::usage_error&) {
    } catch (const std::exception& e) {
      fuzz::fail(std::string{"split_address threw a non-usage_error: "} + e.what());
    }
  }
  app::path_mapping map;
  try {
    map = app::parse_path_map(entries);
  } catch (const app::usage_error&) {
    // Drop the entries without '=' and go on with the others.
    std::erase_if(entries, [](const std::string& e) { return e.find('=') == std::string::npos; });
    try {
      map = app::parse_path_map(entries);
    } catch (const std::exception& e) {
      fuzz::fail(std::string{"parse_path_map rejected entries that all hold '=': "} + e.what());
    }
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"parse_path_map threw a non-usage_error: "} + e.what());
  }
  MS_FUZZ_CHECK(map.size() == entries.size(), "parse_path_map lost entries");
  if (paths.empty())
    paths = entries;  // map the entries themselves too
  for (auto& path : paths) {
    const std::pair<std::string, std::string>* best = nullptr;
    for (auto& m : map)
      if (oracle_matches(m.first, path) && (!best || m.first.size() > best->first.size()))
        best = &m;
    std::string got = app::map_path(map, path);
    if (!best) {
      MS_FUZZ_CHECK(got == path, "no FROM matches '" + fuzz::shown(path) + "' but map_path gave '"
                                   + fuzz::shown(got) + "'");
      continue;
    }
    const auto& [from, to] = *best;
    std::string rest = from == "/" ? path : path.substr(from.size());
    MS_FUZZ_CHECK(fuzz::starts_with(got, to),
                  "'" + fuzz::shown(path) + "' matches FROM '" + fuzz::shown(from) + "' but '"
                    + fuzz::shown(got) + "' does not start with its TO '" + fuzz::shown(to) + "'");
    MS_FUZZ_CHECK(fuzz::ends_with(got, rest) && got.size() <= to.size() + rest.size(),
                  "'" + fuzz::shown(path) + "' mapped by '" + fuzz::shown(from) + "=" + fuzz::shown(to)
                    + "' gave '" + fuzz::shown(got) + "', not TO + the rest");
  }
  return 0;
}
