// Fuzz target: the include/exclude glob matcher (actors/scanner.hpp path_filter: accepts,
// prunes_dir), a parser of user globs run against file names from the source tree.
// Input: lines. "+GLOB" is an include, "-GLOB" an exclude, any other line a relative path.
// Contract: no crash, UB or hang (the matcher backtracks over '*' and '**'), and
//  * an empty filter accepts everything and prunes nothing;
//  * a path below a directory that prunes_dir() prunes is never accepted (the scanner
//    relies on it: what it skips and what accepts() rejects agree), and is pruned itself;
//  * a single include glob without '/', '**', '[' or '\' on a name without '/' agrees with
//    fnmatch(3) (flags 0: '*' and '?' take any byte, a leading '.' is not special).
#include <fnmatch.h>

#include <cstdint>
#include <exception>

#include "actors/scanner.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace ms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Half a KiB holds 16 globs and 64 names, or the pathological kind (many stars against
  // a long name, past the matcher's step budget), whose memoised match costs
  // |glob| * |name| steps: bigger inputs only make each execution slower (~1 ms at 1 KiB),
  // not the search wider.
  if (size > 512)
    return 0;
  std::vector<std::string> includes, excludes, paths;
  for (auto& line : fuzz::split(fuzz::text_of(data, size), '\n')) {
    if (!line.empty() && line[0] == '+')
      includes.push_back(line.substr(1));
    else if (!line.empty() && line[0] == '-')
      excludes.push_back(line.substr(1));
    else
      paths.push_back(line);
  }
  if (includes.size() + excludes.size() > 16 || paths.size() > 64)
    return 0;
  path_filter none;
  path_filter filter{includes, excludes};
  for (auto& p : paths) {
    MS_FUZZ_CHECK(none.accepts(p) && !none.prunes_dir(p), "the empty filter filters");
    bool accepted = filter.accepts(p);
    // prunes_dir(d) covers d and every directory above it: if the folder holding p is
    // pruned, p is not accepted, and neither p nor anything below it survives as a folder.
    auto slash = p.rfind('/');
    if (slash != std::string::npos && filter.prunes_dir(p.substr(0, slash))) {
      MS_FUZZ_CHECK(!accepted, "accepts '" + fuzz::shown(p) + "' below a pruned directory");
      MS_FUZZ_CHECK(filter.prunes_dir(p), "prunes_dir('" + fuzz::shown(p)
                                            + "') false below a pruned directory");
    }
  }
  // Differential against fnmatch(3) for plain globs on plain names.
  if (includes.size() == 1 && excludes.empty()) {
    const std::string& g = includes[0];
    bool plain = !g.empty() && g.find_first_of("/[\\") == std::string::npos
                 && g.find("**") == std::string::npos && g.find('\0') == std::string::npos;
    if (plain) {
      for (auto& p : paths) {
        if (p.find('/') != std::string::npos || p.find('\0') != std::string::npos)
          continue;
        bool ours = filter.accepts(p);
        bool theirs = ::fnmatch(g.c_str(), p.c_str(), 0) == 0;
        MS_FUZZ_CHECK(ours == theirs, "glob '" + fuzz::shown(g) + "' on '" + fuzz::shown(p)
                                        + "': accepts " + std::to_string(ours) + ", fnmatch "
                                        + std::to_string(theirs));
      }
    }
  }
  return 0;
}
