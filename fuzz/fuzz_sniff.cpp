// Fuzz target: type sniffing from a file's first bytes (actors/ingest.hpp sniff_mime), as
// the sync stage calls it on the first 256 bytes it reads, and the image-stage decision
// built on it (actors/imaging.hpp is_processable_image).
// Contract: never reads outside [data, data + len) (every prefix is sniffed from a buffer
// of exactly that size, so ASan sees any overread), "" only for no data, else a
// "type/subtype" string; deterministic; only image types go to the image stages.
#include <cstdint>
#include <cstring>
#include <memory>

#include "actors/imaging.hpp"
#include "actors/ingest.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace ms;

namespace {

std::string sniff_exact(const std::uint8_t* data, std::size_t len) {
  // A heap copy of exactly len bytes (libFuzzer's own buffer is exact only for the whole
  // input); len 0 passes a non-null pointer to nothing.
  std::unique_ptr<unsigned char[]> copy{new unsigned char[len == 0 ? 1 : len]};
  if (len)
    std::memcpy(copy.get(), data, len);
  return sniff_mime(copy.get(), len);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536)
    return 0;
  MS_FUZZ_CHECK(sniff_mime(nullptr, 0).empty(), "sniff_mime(nullptr, 0)");
  std::string whole = sniff_mime(data, size);
  MS_FUZZ_CHECK(whole == sniff_mime(data, size), "not deterministic");
  // The ingestor sniffs at most its 256-byte head; try every prefix up to a bit beyond.
  std::size_t max_prefix = std::min<std::size_t>(size, 300);
  for (std::size_t len = 0; len <= max_prefix; ++len) {
    std::string m = len == size ? whole : sniff_exact(data, len);
    if (len == 0) {
      MS_FUZZ_CHECK(m.empty(), "a type for no data: " + m);
      continue;
    }
    auto slash = m.find('/');
    MS_FUZZ_CHECK(slash != std::string::npos && slash > 0 && slash + 1 < m.size()
                    && m.find_first_of(" \t\r\n;", 0) == std::string::npos,
                  "not a type/subtype: '" + fuzz::shown(m) + "'");
    if (is_processable_image(m))
      MS_FUZZ_CHECK(fuzz::starts_with(m, "image/"), "processable but not an image: " + m);
  }
  return 0;
}
