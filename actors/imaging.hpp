// Image-processing core of the `processing` and `watermark` stages: metadata,
// thumbnails and watermarked previews with libvips 8.14 (C++ API). Plain code,
// no CAF: the stage workers call it from their own threads.
//
// Derived-file layout, under the library root (<ext> is "jpg" or "webp"):
//   .thumbnails/<size>/<rel_path>.<ext>   one per configured size (long edge, px)
//   .previews/<rel_path>.<ext>            watermarked preview (from the largest thumbnail)
// <rel_path> keeps the original name and extension ("2021/IMG_1.JPG" gives
// ".thumbnails/256/2021/IMG_1.JPG.jpg"), so "a.jpg" and "a.png" never collide.
// Files are written like library files, with the same code (actors/atomic_file.hpp):
// an unnamed O_TMPFILE in the target directory, linked under its final name, or
// linked under a temporary name ".mediasync-tmp.<pid>.<n>" and renamed over an
// existing one (readers see the old or the new file, never a mix); a named temporary
// file renamed into place only where the filesystem has no O_TMPFILE. Not fsynced
// (the writer's syncfs per batch makes them durable). A kill leaves no temporary
// file, except in the link + rename window or in the named fallback; the first write
// of a process into a library sweeps such leftovers of dead processes away
// (atomic_file::sweep_stale_temps_once). Every directory is walked from the library root fd
// with O_NOFOLLOW (missing ones are created): nothing is read or written outside
// the library root, even if a folder inside it was replaced by a symlink.
//
// Thread safety: every function may be called from any thread, concurrently,
// once imaging_init() has returned and until imaging_shutdown() is called.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ms {

/// Name of the thumbnails folder in the library root.
inline constexpr std::string_view thumbnails_dir = ".thumbnails";
/// Name of the previews folder in the library root.
inline constexpr std::string_view previews_dir = ".previews";

/// What the processing and watermark stages make. Plain values, copyable.
struct imaging_settings {
  std::vector<int> thumbnail_sizes{256, 1024}; ///< long edge, px, 1..16384; never upscaled
  std::string thumbnail_format = "jpeg";       ///< jpeg | webp (also used for previews)
  int quality = 82;                            ///< encoder quality, 1..100
  /// Images whose header says width*height exceeds this are refused before any
  /// decoding. Streaming decoders (baseline JPEG, non-interlaced PNG, TIFF) keep
  /// memory bounded whatever the size; progressive JPEG, interlaced PNG, GIF, WebP
  /// and HEIF hold up to a few bytes per source pixel: this limit bounds them.
  std::uint64_t max_pixels = 268'402'689;      ///< 16383^2
  // watermark: exactly one of watermark_text / watermark_image for make_preview()
  std::string watermark_text;   ///< plain text (not markup), white with a dark shadow
  std::string watermark_image;  ///< path of an overlay image (PNG with alpha, any vips format)
  std::string watermark_position = "bottom-right"; ///< top-left|top-right|bottom-left|bottom-right|center
  int watermark_margin = 16;                ///< px from the edges (not for center), >= 0
  double watermark_opacity = 0.5;           ///< 0..1, multiplies the overlay's own alpha

  /// Throws std::invalid_argument naming the first bad field. Does not check
  /// that the watermark image exists (make_preview reports that).
  void validate() const;
};

/// A file-level imaging failure: becomes a `failed` row with what() as its error.
class imaging_error : public std::runtime_error {
public:
  enum class kind {
    decode,      ///< corrupt or truncated: what() carries the decoder's reason
    unsupported, ///< not an image format this core handles
    too_large,   ///< over imaging_settings::max_pixels
    io,          ///< cannot open the source or write the derived file
    invalid,     ///< bad relative path, or nothing to do (no watermark configured)
  };
  imaging_error(kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  kind code() const noexcept { return kind_; }

private:
  kind kind_;
};

/// Initialises libvips for the process. The first call runs VIPS_INIT, blocks
/// untrusted loaders, disables the operation cache and silences libvips warnings
/// (decoder problems surface as imaging_error); every call sets the number of
/// threads each vips pipeline uses (`vips_threads`, >= 1): with N stage workers on
/// C cores, pass max(1, C / N). Call it before starting imaging work (changing the
/// thread count while pipelines run is not supported). The other functions call
/// it with 1 on first use if nobody did. Thread-safe. Throws std::runtime_error
/// if libvips cannot start, std::logic_error after imaging_shutdown().
void imaging_init(int vips_threads = 1);

/// Shuts libvips down (vips_shutdown). Call once at process exit, when no imaging
/// call is running or will run. Idempotent; later imaging calls throw std::logic_error.
void imaging_shutdown();

/// Metadata of the source image, as read from its header.
struct image_info {
  std::string format;   ///< jpeg | png | webp | tiff | gif | heif | avif
  int width = 0;        ///< as stored (before orientation is applied)
  int height = 0;
  int orientation = 1;  ///< EXIF orientation 1..8 (1 when absent)
  std::string taken_at; ///< EXIF DateTimeOriginal (else DateTimeDigitized, else DateTime)
                        ///< as "YYYY-MM-DDTHH:MM:SS[+hh:mm]", empty when absent or invalid
};

struct thumbnail_result {
  /// (size, path relative to the library root), one per distinct configured
  /// size, largest first.
  std::vector<std::pair<int, std::string>> thumbnails;
  image_info info;
  /// The largest thumbnail's relative path (the input of make_preview), or "".
  const std::string& largest() const;
};

/// Path of a thumbnail, relative to the library root: ".thumbnails/<size>/<rel_path>.<ext>".
std::string thumbnail_rel_path(int size, const std::string& rel_path, const imaging_settings&);
/// Path of a preview, relative to the library root: ".previews/<rel_path>.<ext>".
std::string preview_rel_path(const std::string& rel_path, const imaging_settings&);

/// Reads the metadata of `library_root_fd`/`rel_path` and writes its thumbnails
/// (EXIF orientation applied, metadata stripped, alpha flattened on white for
/// JPEG) at thumbnail_rel_path(size, ...). `library_root_fd` is borrowed (any
/// directory fd, O_PATH is fine). Pixels are decoded once, with shrink-on-load,
/// for the largest size; smaller sizes are derived from it in memory. An embedded
/// ICC profile is converted to sRGB. Animated and multi-page images give the
/// thumbnails of their first frame/page.
/// Throws imaging_error (see kind) on any file-level problem; std::invalid_argument
/// for bad settings. Thumbnails written before a failure stay (they are complete).
thumbnail_result make_thumbnails(int library_root_fd, const std::string& rel_path,
                                 const imaging_settings&);

/// Writes the watermarked preview of the library file `rel_path`, made from its
/// thumbnail `largest_thumbnail_rel` (both relative to the library root, whose
/// fd is borrowed), at preview_rel_path(rel_path, ...), and returns that path.
/// The overlay is positioned per the settings: text of height ~1/20 of the
/// preview's long edge (wrapped to fit), or the overlay image scaled down (never
/// up) to fit a quarter of the preview's width and height. Overlays are cached
/// per (settings, preview size), so a watermark image changed on disk is seen by
/// the next process only. Throws like make_thumbnails.
std::string make_preview(int library_root_fd, const std::string& largest_thumbnail_rel,
                         const std::string& rel_path, const imaging_settings&);

/// True if `mime` (as actors/ingest.hpp's sniff_mime gives it) is an image the
/// processing stage handles: jpeg, png, webp, tiff, gif; heic/heif/avif when
/// this libvips has a HEIF loader.
bool is_processable_image(const std::string& mime);

} // namespace ms
