// Fuzz target: image header reading and thumbnailing of the processing stage
// (actors/imaging.hpp make_thumbnails): our code around libvips, i.e. opening the file
// from the library root (O_NOFOLLOW walk), sniffing the loader against the allow-list,
// reading the header (format, width, height, EXIF orientation and date, the max-pixels
// check before any decoding), then one small thumbnail written atomically.
// The input is the file's content, written to a temporary library root. Limits keep it
// fast: max_pixels 2^18 and a single 16 px thumbnail.
// Contract: the result or imaging_error of kind decode, unsupported or too_large (never
// io or invalid: the file is a plain readable file, the folder writable); never another
// exception, a crash, UB, a leak or a hang. A result holds a format from the allow-list,
// 1 <= width, height with width*height <= max_pixels, orientation 1..8, taken_at empty
// or "YYYY-MM-DDTHH:MM:SS[+hh:mm]", and one JPEG thumbnail file at its documented path.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "actors/imaging.hpp"
#include "actors/ingest.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace ms;

namespace {

constexpr const char* input_name = "in";

/// The temporary library root, removed at exit.
struct library {
  std::string path;
  int fd = -1;
  imaging_settings settings;

  library() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string{tmp && *tmp ? tmp : "/tmp"} + "/mediasync-fuzz-image.XXXXXX";
    if (!::mkdtemp(templ.data()))
      fuzz::fail("mkdtemp " + templ + ": " + std::strerror(errno));
    path = templ;
    fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      fuzz::fail("open " + path + ": " + std::strerror(errno));
    settings.thumbnail_sizes = {16};
    settings.thumbnail_format = "jpeg";
    settings.quality = 50;
    settings.max_pixels = 1u << 18;
    imaging_init(1);
  }
  ~library() {
    std::string thumb = thumbnail_rel_path(16, input_name, settings);
    ::unlinkat(fd, input_name, 0);
    ::unlinkat(fd, thumb.c_str(), 0);
    ::unlinkat(fd, ".thumbnails/16", AT_REMOVEDIR);
    ::unlinkat(fd, ".thumbnails", AT_REMOVEDIR);
    ::close(fd);
    ::rmdir(path.c_str());
  }
};

library& lib() {
  static library l;
  return l;
}

void write_input(const library& l, const std::uint8_t* data, std::size_t size) {
  std::string file = l.path + "/" + input_name;
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    fuzz::fail("open " + file + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0)
      fuzz::fail("write " + file + ": " + std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

bool digits(const std::string& s, std::size_t at, std::size_t n) {
  for (std::size_t i = at; i < at + n; ++i)
    if (i >= s.size() || s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

bool valid_taken_at(const std::string& t) {
  if (t.empty())
    return true;
  if (t.size() != 19 && t.size() != 25)
    return false;
  bool base = digits(t, 0, 4) && t[4] == '-' && digits(t, 5, 2) && t[7] == '-' && digits(t, 8, 2)
              && t[10] == 'T' && digits(t, 11, 2) && t[13] == ':' && digits(t, 14, 2)
              && t[16] == ':' && digits(t, 17, 2);
  if (!base || t.size() == 19)
    return base;
  return (t[19] == '+' || t[19] == '-') && digits(t, 20, 2) && t[22] == ':' && digits(t, 23, 2);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 1 << 20)
    return 0;
  library& l = lib();
  write_input(l, data, size);
  thumbnail_result res;
  try {
    res = make_thumbnails(l.fd, input_name, l.settings);
  } catch (const imaging_error& e) {
    MS_FUZZ_CHECK(e.code() == imaging_error::kind::decode
                    || e.code() == imaging_error::kind::unsupported
                    || e.code() == imaging_error::kind::too_large,
                  std::string{"imaging_error of kind io or invalid: "} + e.what());
    MS_FUZZ_CHECK(std::strlen(e.what()) > 0, "imaging_error without a reason");
    return 0;
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"make_thumbnails threw a non-imaging_error: "} + e.what());
  }
  const image_info& info = res.info;
  static const std::string formats[] = {"jpeg", "png", "webp", "tiff", "gif", "heif", "avif"};
  MS_FUZZ_CHECK(std::find(std::begin(formats), std::end(formats), info.format) != std::end(formats),
                "format '" + info.format + "' not in the allow-list");
  MS_FUZZ_CHECK(info.width >= 1 && info.height >= 1,
                "size " + std::to_string(info.width) + "x" + std::to_string(info.height));
  MS_FUZZ_CHECK(static_cast<std::uint64_t>(info.width) * static_cast<std::uint64_t>(info.height)
                  <= l.settings.max_pixels,
                "over max_pixels but accepted");
  MS_FUZZ_CHECK(info.orientation >= 1 && info.orientation <= 8,
                "orientation " + std::to_string(info.orientation));
  MS_FUZZ_CHECK(valid_taken_at(info.taken_at), "taken_at '" + fuzz::shown(info.taken_at) + "'");
  std::string thumb = thumbnail_rel_path(16, input_name, l.settings);
  MS_FUZZ_CHECK(res.thumbnails.size() == 1 && res.thumbnails[0].first == 16
                  && res.thumbnails[0].second == thumb && res.largest() == thumb,
                "thumbnail list");
  int fd = ::openat(l.fd, thumb.c_str(), O_RDONLY | O_CLOEXEC);
  MS_FUZZ_CHECK(fd >= 0, "thumbnail " + thumb + " missing");
  unsigned char head[16];
  ssize_t n = ::read(fd, head, sizeof head);
  ::close(fd);
  MS_FUZZ_CHECK(n > 0 && sniff_mime(head, static_cast<std::size_t>(n)) == "image/jpeg",
                "thumbnail is not a JPEG");
  ::unlinkat(l.fd, thumb.c_str(), 0);
  return 0;
}
