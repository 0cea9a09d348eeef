// Helpers shared by the fuzz targets (fuzz/*.cpp): a property check that reports and
// aborts, and splitting of the input. Header-only; no libFuzzer dependency, so the same
// targets build with libFuzzer (clang) and with the replay driver (fuzz/replay_main.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace ms::fuzz {

/// A broken property: prints `what` to stderr and aborts, which libFuzzer and the replay
/// driver report as a crash (with the input that caused it).
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "\nFUZZ PROPERTY FAILED: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

/// `s` with every byte outside printable ASCII written \xHH, for messages.
inline std::string shown(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

#define MS_FUZZ_CHECK(cond, msg)                                                            \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::ms::fuzz::fail(std::string{__FILE__ ":"} + std::to_string(__LINE__) + ": " #cond    \
                       ": " + (msg));                                                       \
  } while (0)

/// The input as text.
inline std::string text_of(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

/// Splits `s` at every `sep` (an empty string gives one empty part).
inline std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    auto end = s.find(sep, start);
    out.emplace_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos
                                                                    : end - start));
    if (end == std::string_view::npos)
      return out;
    start = end + 1;
  }
}

inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

} // namespace ms::fuzz
