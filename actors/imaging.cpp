// Image-processing core (see actors/imaging.hpp for the contract and file layout).
//
// make_thumbnails, per image:
//  1. open the source from the library root fd, one component at a time with
//     O_NOFOLLOW (a symlink anywhere is refused), as a regular file;
//  2. sniff the loader (vips_foreign_find_load_source) and check it against the
//     allow-list jpeg/png/webp/tiff/gif/heif before any parsing ("unsupported");
//  3. load the header only (sequential access): format, width, height, EXIF
//     orientation and dates; refuse width*height > max_pixels ("too_large") before
//     a single pixel is decoded;
//  4. vips thumbnail_source for the largest size (shrink-on-load: a JPEG decodes at
//     1/2, 1/4 or 1/8 scale, WebP and HEIF at reduced size too; autorotated),
//     fail_on=error so truncated and corrupt files fail instead of giving grey
//     pixels; an embedded ICC profile is converted to sRGB; then 8-bit sRGB (or
//     grey), alpha flattened on white for JPEG;
//  5. with more than one size, that image is rendered once into memory and the
//     smaller sizes are resized from it (thumbnail_image): decoding once costs less
//     than a second shrink-on-load decode (bench/processing_bench.cpp);
//  6. each thumbnail is encoded to a memory buffer (metadata stripped) and written
//     with write_atomic() (atomic_file::write_whole, shared with the ingest): an
//     unnamed O_TMPFILE in the target directory linked under its name through
//     /proc/self/fd, or linked under a temporary name and renamed over an existing
//     one; the named temporary file + renameat only where O_TMPFILE or /proc is
//     missing. Before the first derived file of a process goes into a library, that
//     library is swept once of temporary files dead processes left
//     (atomic_file::sweep_stale_temps_once): a resume that only has image stages
//     left cleans up too.
//
// libvips errors: the C++ binding throws vips::VError holding a copy of libvips'
// error buffer, which is process-global. We take the text from the VError and
// clear the buffer (as sharp does). Two images failing at the same instant on two
// threads can therefore swap or merge their reasons; a reason lost that way is
// replaced by a generic one. This only affects the error text, never the outcome.
#include "actors/imaging.hpp"

#include "actors/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips8>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

namespace ms {

namespace {

using vips::VError;
using vips::VImage;
using vips::VSource;

constexpr int dir_walk_flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
constexpr int max_thumbnail_size = 16383;  // WebP's limit; far above any preview
/// Text watermark: glyph height as a fraction of the preview's long edge.
constexpr int text_size_divisor = 20;
/// Overlay image: fits this fraction of the preview's width and height.
constexpr double overlay_fraction = 0.25;
constexpr std::size_t overlay_cache_max = 32;

std::string errno_text(int err) {
  char buf[256];
  return std::string{::strerror_r(err, buf, sizeof buf)};
}

// --------------------------------------------------------------------- init

std::mutex init_mutex;
std::atomic<int> init_state{0};  // 0: not yet, 1: running, 2: shut down

std::mutex overlay_mutex;
std::map<std::string, VImage> overlay_cache;  // guarded by overlay_mutex

void ignore_log(const gchar*, GLogLevelFlags, const gchar*, gpointer) {}

void init_locked_once() {
  if (VIPS_INIT("mediasync") != 0) {
    std::string reason = vips_error_buffer();
    vips_error_clear();
    throw std::runtime_error("libvips cannot start: " + reason);
  }
  // Only the allow-listed loaders are ever used, but block the untrusted ones
  // (ImageMagick, PDF, SVG, JPEG-XL, matload, ...) for good measure.
  vips_block_untrusted_set(TRUE);
  // Every operation here is used once per image: the operation cache would only
  // hold memory and file descriptors.
  vips_cache_set_max(0);
  vips_cache_set_max_mem(0);
  vips_cache_set_max_files(0);
  // Decoder warnings ("read gave 2 warnings") would go to stderr; the problems
  // that matter fail the operation (fail_on=error) and come back as errors.
  g_log_set_handler("VIPS", static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING), ignore_log,
                    nullptr);
}

void init_impl(int threads, bool explicit_call) {
  std::lock_guard lock{init_mutex};
  int st = init_state.load();
  if (st == 2)
    throw std::logic_error("imaging used after imaging_shutdown()");
  if (st == 0) {
    init_locked_once();
    vips_concurrency_set(1);
    init_state.store(1);
  }
  if (explicit_call)
    vips_concurrency_set(std::max(1, threads));
}

void ensure_init() {
  int st = init_state.load(std::memory_order_acquire);
  if (st == 1)
    return;
  init_impl(1, false);
}

// ------------------------------------------------------------------ errors

/// The reason in a VError, one line ("a; b"), and clears libvips' error buffer.
std::string vips_reason(const VError& e) {
  std::string raw = e.what();
  vips_error_clear();
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos <= raw.size()) {
    auto nl = raw.find('\n', pos);
    std::string line = raw.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t'))
      line.pop_back();
    if (!line.empty() && std::find(lines.begin(), lines.end(), line) == lines.end())
      lines.push_back(std::move(line));
    if (nl == std::string::npos)
      break;
    pos = nl + 1;
  }
  std::string out;
  for (auto& l : lines) {
    if (!out.empty())
      out += "; ";
    out += l;
  }
  return out.empty() ? std::string{"no reason given by libvips"} : out;
}

[[noreturn]] void fail(imaging_error::kind k, std::string what) {
  throw imaging_error(k, what);
}

// ------------------------------------------------------------------- files

struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  explicit fd_guard(int f) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  fd_guard(fd_guard&& o) noexcept : fd(o.fd) { o.fd = -1; }
  fd_guard& operator=(fd_guard&& o) noexcept {
    if (this != &o) {
      reset();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~fd_guard() { reset(); }
  void reset() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
};

/// A directory: `owned` when walked, else the (borrowed) root.
struct dir_ref {
  fd_guard owned;
  int root = -1;
  int get() const { return owned.fd >= 0 ? owned.fd : root; }
};

/// True for "a/b/c": not empty, not absolute, no empty, "." or ".." component, no NUL.
bool valid_relative(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.find('\0') != std::string_view::npos)
    return false;
  std::size_t pos = 0;
  for (;;) {
    auto slash = p.find('/', pos);
    auto comp = p.substr(pos, slash == std::string_view::npos ? std::string_view::npos
                                                              : slash - pos);
    if (comp.empty() || comp == "." || comp == ".." || comp.size() > NAME_MAX)
      return false;
    if (slash == std::string_view::npos)
      return true;
    pos = slash + 1;
  }
}

std::string_view first_component(std::string_view p) {
  return p.substr(0, p.find('/'));
}

/// Splits "a/b/c" into ("a/b", "c").
std::pair<std::string_view, std::string_view> split_dir(std::string_view p) {
  auto slash = p.rfind('/');
  if (slash == std::string_view::npos)
    return {{}, p};
  return {p.substr(0, slash), p.substr(slash + 1)};
}

/// Walks `dir` (relative, may be "") from `root` with O_NOFOLLOW; with `create`,
/// missing components are made (0755 minus umask). Throws imaging_error(io).
dir_ref walk(int root, std::string_view dir, bool create) {
  dir_ref out;
  out.root = root;
  if (dir.empty())
    return out;
  std::string comp;
  for (std::size_t pos = 0;;) {
    auto slash = dir.find('/', pos);
    std::size_t end = slash == std::string_view::npos ? dir.size() : slash;
    comp.assign(dir.substr(pos, end - pos));
    int cur = out.get();
    int fd = ::openat(cur, comp.c_str(), dir_walk_flags);
    if (fd < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur, comp.c_str(), 0755) != 0 && errno != EEXIST) {
        int e = errno;
        fail(imaging_error::kind::io, "library directory '" + std::string{dir.substr(0, end)}
                                          + "' cannot be created: " + errno_text(e));
      }
      fd = ::openat(cur, comp.c_str(), dir_walk_flags);
    }
    if (fd < 0) {
      int e = errno;
      std::string prefix{dir.substr(0, end)};
      struct stat sb;
      if ((e == ENOTDIR || e == ELOOP)
          && ::fstatat(cur, comp.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
        fail(imaging_error::kind::io, "library path component '" + prefix + "' is a symlink");
      if (e == ENOTDIR)
        fail(imaging_error::kind::io, "library path component '" + prefix + "' is not a directory");
      fail(imaging_error::kind::io,
           "library directory '" + prefix + "' cannot be opened: " + errno_text(e));
    }
    out.owned = fd_guard{fd};
    if (slash == std::string_view::npos)
      return out;
    pos = slash + 1;
  }
}

/// Opens the regular file `rel` under `root` for reading, without following symlinks.
fd_guard open_file(int root, const std::string& rel) {
  auto [dir, name] = split_dir(rel);
  dir_ref d = walk(root, dir, false);
  std::string n{name};
  fd_guard fd{::openat(d.get(), n.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)};
  if (fd.fd < 0) {
    int e = errno;
    struct stat sb;
    if (e == ELOOP
        || (::fstatat(d.get(), n.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)))
      fail(imaging_error::kind::io, "'" + rel + "' is a symlink");
    fail(imaging_error::kind::io, "cannot open '" + rel + "': " + errno_text(e));
  }
  struct stat sb;
  if (::fstat(fd.fd, &sb) != 0)
    fail(imaging_error::kind::io, "cannot stat '" + rel + "': " + errno_text(errno));
  if (!S_ISREG(sb.st_mode))
    fail(imaging_error::kind::io, "'" + rel + "' is not a regular file");
  return fd;
}

/// Writes `data` to `rel` under `root` atomically, like a library file (see
/// atomic_file::write_whole): the complete file appears under its name at once,
/// replacing an older one; a kill leaves at most a temporary name that the next
/// process's sweep removes. Throws imaging_error(io).
void write_atomic(int root, const std::string& rel, const void* data, std::size_t len) {
  auto [dir, name] = split_dir(rel);
  if (name.size() > NAME_MAX)
    fail(imaging_error::kind::io, "derived file name too long: '" + rel + "'");
  atomic_file::sweep_stale_temps_once(root);
  dir_ref d = walk(root, dir, true);
  std::string n{name};
  std::string err = atomic_file::write_whole(d.get(), n.c_str(), rel, data, len, 0644);
  if (!err.empty())
    fail(imaging_error::kind::io, err);
}

// ------------------------------------------------------------------- images

/// Loader name ("jpegload_source") -> our format name, or "" if not allowed.
std::string format_of_loader(std::string_view loader) {
  static constexpr std::pair<std::string_view, std::string_view> allowed[] = {
    {"jpegload", "jpeg"}, {"pngload", "png"}, {"webpload", "webp"},
    {"tiffload", "tiff"}, {"gifload", "gif"}, {"heifload", "heif"},
  };
  for (auto [prefix, fmt] : allowed)
    if (loader.substr(0, prefix.size()) == prefix)
      return std::string{fmt};
  return {};
}

bool has_field(const VImage& img, const char* name) {
  return img.get_typeof(name) != 0;
}

bool digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// "2021:07:04 12:30:00 (2021:07:04 12:30:00, ASCII, 20 components, 20 bytes)"
/// -> "2021-07-04T12:30:00"; "" for anything else (blank or zero dates too).
std::string exif_to_iso(std::string_view v) {
  if (v.size() < 19 || v[4] != ':' || v[7] != ':' || v[10] != ' ' || v[13] != ':' || v[16] != ':')
    return {};
  auto num = [&](std::size_t at, std::size_t n, int lo, int hi, int& out) {
    auto s = v.substr(at, n);
    if (!digits(s))
      return false;
    out = std::stoi(std::string{s});
    return out >= lo && out <= hi;
  };
  int y, mo, d, h, mi, s;
  if (!num(0, 4, 1, 9999, y) || !num(5, 2, 1, 12, mo) || !num(8, 2, 1, 31, d)
      || !num(11, 2, 0, 23, h) || !num(14, 2, 0, 59, mi) || !num(17, 2, 0, 60, s))
    return {};
  std::string out{v.substr(0, 19)};
  out[4] = '-';
  out[7] = '-';
  out[10] = 'T';
  return out;
}

/// "+02:00 (...)" -> "+02:00", else "".
std::string exif_offset(std::string_view v) {
  if (v.size() < 6 || (v[0] != '+' && v[0] != '-') || v[3] != ':' || !digits(v.substr(1, 2))
      || !digits(v.substr(4, 2)) || (v.size() > 6 && v[6] != ' '))
    return {};
  return std::string{v.substr(0, 6)};
}

std::string taken_at(const VImage& hdr) {
  static constexpr std::pair<const char*, const char*> fields[] = {
    {"exif-ifd2-DateTimeOriginal", "exif-ifd2-OffsetTimeOriginal"},
    {"exif-ifd2-DateTimeDigitized", "exif-ifd2-OffsetTimeDigitized"},
    {"exif-ifd0-DateTime", "exif-ifd2-OffsetTime"},
  };
  for (auto [date, offset] : fields) {
    if (!has_field(hdr, date))
      continue;
    std::string iso = exif_to_iso(hdr.get_string(date));
    if (iso.empty())
      continue;
    if (has_field(hdr, offset))
      iso += exif_offset(hdr.get_string(offset));
    return iso;
  }
  return {};
}

VipsInterpretation guessed_interpretation(const VImage& img) {
  return vips_image_guess_interpretation(img.get_image());
}

/// 8-bit sRGB (or 8-bit grey), alpha kept.
VImage to_srgb8(VImage img) {
  VipsInterpretation in = guessed_interpretation(img);
  bool grey = in == VIPS_INTERPRETATION_B_W || in == VIPS_INTERPRETATION_GREY16;
  VipsInterpretation target = grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
  if (img.format() != VIPS_FORMAT_UCHAR || in != target)
    img = img.colourspace(target, VImage::option()->set("source_space", in));
  if (img.format() != VIPS_FORMAT_UCHAR)
    img = img.cast(VIPS_FORMAT_UCHAR);
  return img;
}

/// Ready for the encoder: 8-bit sRGB or grey; for JPEG, alpha flattened on white.
VImage to_saveable(VImage img, const std::string& format) {
  img = to_srgb8(std::move(img));
  if (format == "jpeg" && img.has_alpha()) {
    img = img.flatten(VImage::option()->set("background", std::vector<double>{255.0}));
    if (img.format() != VIPS_FORMAT_UCHAR)
      img = img.cast(VIPS_FORMAT_UCHAR);
  }
  return img;
}

struct blob_guard {
  VipsBlob* blob = nullptr;
  explicit blob_guard(VipsBlob* b) : blob(b) {}
  blob_guard(const blob_guard&) = delete;
  blob_guard& operator=(const blob_guard&) = delete;
  ~blob_guard() {
    if (blob != nullptr)
      vips_area_unref(VIPS_AREA(blob));
  }
};

/// Encodes and writes `img` at `rel` (metadata stripped).
void save(const VImage& img, int root, const std::string& rel, const imaging_settings& s) {
  auto opts = VImage::option()->set("Q", s.quality)->set("strip", true);
  blob_guard b{s.thumbnail_format == "webp" ? img.webpsave_buffer(opts) : img.jpegsave_buffer(opts)};
  std::size_t len = 0;
  const void* data = vips_blob_get(b.blob, &len);
  write_atomic(root, rel, data, len);
}

const char* extension(const imaging_settings& s) {
  return s.thumbnail_format == "webp" ? "webp" : "jpg";
}

void check_rel(const std::string& rel, const char* what) {
  if (!valid_relative(rel))
    fail(imaging_error::kind::invalid, std::string{"invalid relative "} + what + " path '" + rel + "'");
}

void check_not_derived(const std::string& rel) {
  auto first = first_component(rel);
  if (first == thumbnails_dir || first == previews_dir)
    fail(imaging_error::kind::invalid, "'" + rel + "' is a derived file (under "
                                           + std::string{first} + "/)");
}

/// Sniffs the loader of `fd` and checks it against the allow-list.
std::string sniff_format(int fd) {
  VSource src = VSource::new_from_descriptor(fd);
  const char* loader = vips_foreign_find_load_source(src.get_source());
  if (loader == nullptr) {
    vips_error_clear();
    fail(imaging_error::kind::unsupported, "not a supported image format");
  }
  // `loader` is a type name ("VipsForeignLoadJpegSource"); the nickname is "jpegload_source".
  const char* nick = vips_nickname_find(g_type_from_name(loader));
  std::string format = format_of_loader(nick != nullptr ? nick : "");
  if (format.empty())
    fail(imaging_error::kind::unsupported, "unsupported image format (libvips loader "
                                             + std::string{nick != nullptr ? nick : loader} + ")");
  return format;
}

struct header {
  image_info info;
  bool has_icc = false;  ///< an embedded ICC profile
};

header read_header(int fd, std::string format, const imaging_settings& s) {
  VSource src = VSource::new_from_descriptor(fd);
  VImage hdr = VImage::new_from_source(
    src, "", VImage::option()->set("access", VIPS_ACCESS_SEQUENTIAL)->set("fail_on", VIPS_FAIL_ON_ERROR));
  header out;
  out.has_icc = has_field(hdr, VIPS_META_ICC_NAME);
  image_info& info = out.info;
  info.format = std::move(format);
  if (info.format == "heif" && has_field(hdr, "heif-compression")
      && std::string_view{hdr.get_string("heif-compression")} == "av1")
    info.format = "avif";
  info.width = hdr.width();
  info.height = hdr.height();
  if (has_field(hdr, "orientation")) {
    int o = hdr.get_int("orientation");
    info.orientation = o >= 1 && o <= 8 ? o : 1;
  }
  info.taken_at = taken_at(hdr);
  std::uint64_t pixels = static_cast<std::uint64_t>(info.width) * static_cast<std::uint64_t>(info.height);
  if (pixels > s.max_pixels)
    fail(imaging_error::kind::too_large,
         "image is " + std::to_string(info.width) + "x" + std::to_string(info.height) + " ("
           + std::to_string(pixels) + " pixels), over the limit of " + std::to_string(s.max_pixels)
           + " pixels (max_pixels)");
  return out;
}

void rewind_fd(int fd, const std::string& rel) {
  if (::lseek(fd, 0, SEEK_SET) != 0)
    fail(imaging_error::kind::io, "cannot rewind '" + rel + "': " + errno_text(errno));
}

// ---------------------------------------------------------------- watermark

/// The RGBA overlay for a preview of `w` x `h`, alpha already scaled by the opacity.
VImage text_overlay(const imaging_settings& s, int w, int h) {
  int px = std::clamp(std::max(w, h) / text_size_divisor, 8, 512);
  std::string font = "sans bold " + std::to_string(px);
  gchar* escaped = g_markup_escape_text(s.watermark_text.c_str(), -1);
  std::string markup{escaped};
  g_free(escaped);
  int wrap = std::max(1, w - 2 * s.watermark_margin);
  VImage mask = VImage::text(markup.c_str(), VImage::option()
                                               ->set("font", font.c_str())
                                               ->set("dpi", 72)
                                               ->set("width", wrap));
  int d = std::max(1, px / 16);  // shadow offset
  int ow = mask.width() + d, oh = mask.height() + d;
  VImage a_text = mask.embed(0, 0, ow, oh);
  VImage a_shadow = mask.embed(d, d, ow, oh);
  auto layer = [&](const VImage& alpha, double value, double opacity) {
    VImage rgb = alpha.new_from_image(std::vector<double>{value, value, value});
    return rgb.bandjoin((alpha * opacity).cast(VIPS_FORMAT_UCHAR))
      .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  };
  // Opaque text over its shadow first, then the opacity on the whole: the shadow
  // does not show through the letters.
  VImage ov = layer(a_shadow, 0, 0.6).composite2(layer(a_text, 255, 1.0), VIPS_BLEND_MODE_OVER);
  if (ov.format() != VIPS_FORMAT_UCHAR)
    ov = ov.cast(VIPS_FORMAT_UCHAR);
  VImage alpha = (ov[3] * s.watermark_opacity).cast(VIPS_FORMAT_UCHAR);
  return ov.extract_band(0, VImage::option()->set("n", 3)).bandjoin(alpha);
}

VImage image_overlay(const imaging_settings& s, int w, int h) {
  VImage ov;
  try {
    ov = VImage::new_from_file(s.watermark_image.c_str(),
                               VImage::option()->set("fail_on", VIPS_FAIL_ON_ERROR));
    ov = to_srgb8(ov);
    if (!ov.has_alpha())
      ov = ov.bandjoin_const(std::vector<double>{255.0});
    int tw = std::max(1, static_cast<int>(w * overlay_fraction));
    int th = std::max(1, static_cast<int>(h * overlay_fraction));
    if (ov.width() > tw || ov.height() > th)
      ov = ov.thumbnail_image(tw, VImage::option()
                                    ->set("height", th)
                                    ->set("size", VIPS_SIZE_DOWN)
                                    ->set("no_rotate", true));
    ov = to_srgb8(ov);
    VImage alpha = (ov[3] * s.watermark_opacity).cast(VIPS_FORMAT_UCHAR);
    ov = ov.extract_band(0, VImage::option()->set("n", 3)).bandjoin(alpha);
    return ov.copy_memory();
  } catch (const VError& e) {
    fail(imaging_error::kind::io,
         "watermark image '" + s.watermark_image + "' cannot be loaded: " + vips_reason(e));
  }
}

/// The overlay (in memory, shared, read-only) for previews of `w` x `h`, cached.
VImage overlay_for(const imaging_settings& s, int w, int h) {
  std::string key = (s.watermark_text.empty() ? "image\n" + s.watermark_image
                                              : "text\n" + s.watermark_text)
                    + "\n" + std::to_string(w) + "x" + std::to_string(h) + "\n"
                    + std::to_string(s.watermark_opacity) + "\n" + std::to_string(s.watermark_margin);
  {
    std::lock_guard lock{overlay_mutex};
    auto it = overlay_cache.find(key);
    if (it != overlay_cache.end())
      return it->second;
  }
  VImage ov = s.watermark_text.empty() ? image_overlay(s, w, h) : text_overlay(s, w, h).copy_memory();
  // Must fit inside the margins (a long word, a tiny preview).
  int fw = std::max(1, w - 2 * s.watermark_margin);
  int fh = std::max(1, h - 2 * s.watermark_margin);
  if (ov.width() > fw || ov.height() > fh)
    ov = ov.thumbnail_image(fw, VImage::option()
                                  ->set("height", fh)
                                  ->set("size", VIPS_SIZE_DOWN)
                                  ->set("no_rotate", true))
           .copy_memory();
  std::lock_guard lock{overlay_mutex};
  if (overlay_cache.size() >= overlay_cache_max)
    overlay_cache.clear();
  overlay_cache.emplace(key, ov);
  return ov;
}

std::pair<int, int> overlay_position(const imaging_settings& s, int w, int h, int ow, int oh) {
  const std::string& p = s.watermark_position;
  int m = s.watermark_margin;
  int x = p == "center" ? (w - ow) / 2 : p.ends_with("left") ? m : w - ow - m;
  int y = p == "center" ? (h - oh) / 2 : p.starts_with("top") ? m : h - oh - m;
  return {std::max(0, x), std::max(0, y)};
}

} // namespace

// ------------------------------------------------------------------- public

void imaging_settings::validate() const {
  if (thumbnail_sizes.empty())
    throw std::invalid_argument("thumbnail_sizes: at least one size is needed");
  for (int size : thumbnail_sizes)
    if (size < 1 || size > max_thumbnail_size)
      throw std::invalid_argument("thumbnail_sizes: " + std::to_string(size) + " is not in 1.."
                                  + std::to_string(max_thumbnail_size));
  if (thumbnail_format != "jpeg" && thumbnail_format != "webp")
    throw std::invalid_argument("thumbnail_format: '" + thumbnail_format
                                + "' is not one of jpeg, webp");
  if (quality < 1 || quality > 100)
    throw std::invalid_argument("quality: " + std::to_string(quality) + " is not in 1..100");
  if (max_pixels < 1)
    throw std::invalid_argument("max_pixels: must be at least 1");
  static constexpr std::string_view positions[] = {"top-left", "top-right", "bottom-left",
                                                   "bottom-right", "center"};
  if (std::find(std::begin(positions), std::end(positions), watermark_position) == std::end(positions))
    throw std::invalid_argument("watermark_position: '" + watermark_position
                                + "' is not one of top-left, top-right, bottom-left, bottom-right, center");
  if (watermark_margin < 0 || watermark_margin > max_thumbnail_size)
    throw std::invalid_argument("watermark_margin: " + std::to_string(watermark_margin)
                                + " is not in 0.." + std::to_string(max_thumbnail_size));
  if (!(watermark_opacity >= 0.0 && watermark_opacity <= 1.0))
    throw std::invalid_argument("watermark_opacity: must be in 0..1");
  if (!watermark_text.empty() && !watermark_image.empty())
    throw std::invalid_argument("watermark_text and watermark_image: set one, not both");
}

void imaging_init(int vips_threads) {
  init_impl(vips_threads, true);
}

void imaging_shutdown() {
  std::lock_guard lock{init_mutex};
  if (init_state.load() != 1) {
    init_state.store(2);
    return;
  }
  {
    std::lock_guard olock{overlay_mutex};
    overlay_cache.clear();
  }
  vips_shutdown();
  init_state.store(2);
}

const std::string& thumbnail_result::largest() const {
  static const std::string none;
  return thumbnails.empty() ? none : thumbnails.front().second;
}

std::string thumbnail_rel_path(int size, const std::string& rel_path, const imaging_settings& s) {
  std::string out{thumbnails_dir};
  out.append("/").append(std::to_string(size)).append("/").append(rel_path).append(".");
  return out.append(extension(s));
}

std::string preview_rel_path(const std::string& rel_path, const imaging_settings& s) {
  std::string out{previews_dir};
  out.append("/").append(rel_path).append(".");
  return out.append(extension(s));
}

thumbnail_result make_thumbnails(int root, const std::string& rel_path, const imaging_settings& s) {
  s.validate();
  ensure_init();
  check_rel(rel_path, "source");
  check_not_derived(rel_path);

  std::vector<int> sizes = s.thumbnail_sizes;
  std::sort(sizes.begin(), sizes.end(), std::greater<>{});
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());

  fd_guard fd = open_file(root, rel_path);
  thumbnail_result res;
  try {
    std::string format = sniff_format(fd.fd);
    rewind_fd(fd.fd, rel_path);
    header hdr = read_header(fd.fd, std::move(format), s);
    res.info = std::move(hdr.info);
    rewind_fd(fd.fd, rel_path);

    int big = sizes.front();
    auto opts = VImage::option()
                  ->set("height", big)
                  ->set("size", VIPS_SIZE_DOWN)
                  // 8.14 does not pass its own fail_on to the loader: the option string does
                  ->set("option_string", "fail_on=error")
                  ->set("fail_on", VIPS_FAIL_ON_ERROR);
    // An embedded profile (Display P3, Adobe RGB, ...) is converted to sRGB, as
    // the stripped output is read as sRGB. Only then: 8.14 also transforms
    // profile-less images when export_profile is set, and shifts their colours.
    if (hdr.has_icc)
      opts->set("export_profile", "srgb");
    VImage thumb = VImage::thumbnail_source(VSource::new_from_descriptor(fd.fd), big, opts);
    thumb = to_saveable(thumb, s.thumbnail_format);
    if (sizes.size() > 1)
      thumb = thumb.copy_memory();  // decode once; smaller sizes resize from memory
    for (int size : sizes) {
      VImage img = size == big ? thumb
                               : thumb.thumbnail_image(size, VImage::option()
                                                               ->set("height", size)
                                                               ->set("size", VIPS_SIZE_DOWN)
                                                               ->set("no_rotate", true));
      std::string rel = thumbnail_rel_path(size, rel_path, s);
      save(img, root, rel, s);
      res.thumbnails.emplace_back(size, std::move(rel));
    }
  } catch (const VError& e) {
    fail(imaging_error::kind::decode, vips_reason(e));
  }
  return res;
}

std::string make_preview(int root, const std::string& largest_thumbnail_rel,
                         const std::string& rel_path, const imaging_settings& s) {
  s.validate();
  ensure_init();
  check_rel(largest_thumbnail_rel, "thumbnail");
  check_rel(rel_path, "source");
  check_not_derived(rel_path);
  if (s.watermark_text.empty() && s.watermark_image.empty())
    fail(imaging_error::kind::invalid, "no watermark configured (watermark_text or watermark_image)");

  fd_guard fd = open_file(root, largest_thumbnail_rel);
  std::string rel = preview_rel_path(rel_path, s);
  try {
    VImage base = VImage::new_from_source(VSource::new_from_descriptor(fd.fd), "",
                                          VImage::option()
                                            ->set("access", VIPS_ACCESS_SEQUENTIAL)
                                            ->set("fail_on", VIPS_FAIL_ON_ERROR));
    std::uint64_t pixels = static_cast<std::uint64_t>(base.width()) * static_cast<std::uint64_t>(base.height());
    if (pixels > s.max_pixels)
      fail(imaging_error::kind::too_large,
           "thumbnail '" + largest_thumbnail_rel + "' has " + std::to_string(pixels)
             + " pixels, over the limit of " + std::to_string(s.max_pixels) + " pixels (max_pixels)");
    base = to_srgb8(base);
    bool had_alpha = base.has_alpha();
    if (base.bands() < 3)
      base = base.colourspace(VIPS_INTERPRETATION_sRGB);
    VImage ov = overlay_for(s, base.width(), base.height());
    auto [x, y] = overlay_position(s, base.width(), base.height(), ov.width(), ov.height());
    VImage out = base.composite2(ov, VIPS_BLEND_MODE_OVER,
                                 VImage::option()->set("x", x)->set("y", y));
    if (!had_alpha && out.bands() > 3)
      out = out.extract_band(0, VImage::option()->set("n", 3));
    save(to_saveable(out, s.thumbnail_format), root, rel, s);
  } catch (const VError& e) {
    fail(imaging_error::kind::decode, vips_reason(e));
  }
  return rel;
}

bool is_processable_image(const std::string& mime) {
  static constexpr std::string_view plain[] = {"image/jpeg", "image/jpg", "image/png",
                                               "image/webp", "image/tiff", "image/gif"};
  if (std::find(std::begin(plain), std::end(plain), mime) != std::end(plain))
    return true;
  if (mime == "image/heic" || mime == "image/heif" || mime == "image/avif") {
    ensure_init();
    static const bool heif = vips_type_find("VipsOperation", "heifload_source") != 0;
    return heif;
  }
  return false;
}

} // namespace ms
