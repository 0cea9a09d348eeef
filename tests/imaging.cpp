// Tests of the image-processing core (actors/imaging.hpp): metadata, thumbnails,
// previews, failures, the pixel limit and the library-root confinement.
// Test images are made with libvips itself; real photos come from the
// gnome-backgrounds package (skipped with a warning when it is not installed).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips8>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actors/imaging.hpp"

using namespace ms;
using vips::VImage;
namespace fs = std::filesystem;

namespace {

/// A library root in a fresh temp dir (`outside/` next to it for escape checks).
struct lib_sandbox {
  fs::path base;
  fs::path root;
  fs::path outside;
  int fd = -1;

  lib_sandbox() {
    imaging_init(1);
    char tmpl[] = "/tmp/ms-imaging-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    base = tmpl;
    root = base / "library";
    outside = base / "outside";
    fs::create_directories(root);
    fs::create_directories(outside);
    fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      throw std::runtime_error("cannot open library root");
  }
  ~lib_sandbox() {
    ::close(fd);
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  fs::path operator/(const std::string& rel) const { return root / rel; }

  /// Every regular file and symlink under `dir`, relative to it, sorted.
  static std::vector<std::string> files_under(const fs::path& dir) {
    std::vector<std::string> out;
    if (!fs::exists(dir))
      return out;
    for (auto& e : fs::recursive_directory_iterator(dir))
      if (!e.is_directory() || e.is_symlink())
        out.push_back(fs::relative(e.path(), dir).string());
    std::sort(out.begin(), out.end());
    return out;
  }
  bool no_temp_files() const {
    for (auto& f : files_under(root))
      if (f.find(".mediasync-tmp.") != std::string::npos)
        return false;
    return true;
  }
};

/// A smooth colour gradient, sRGB uchar.
VImage gradient(int w, int h) {
  VImage xy = VImage::xyz(w, h);
  VImage r = xy[0] * (255.0 / w);
  VImage g = xy[1] * (255.0 / h);
  VImage b = (xy[0] + xy[1]) * (255.0 / (w + h));
  return r.bandjoin(g).bandjoin(b).cast(VIPS_FORMAT_UCHAR).copy(
    VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

/// A gradient with noise, so it compresses like a photo.
VImage photo_like(int w, int h, int seed) {
  VImage noise = VImage::gaussnoise(
    w, h, VImage::option()->set("mean", 0.0)->set("sigma", 12.0)->set("seed", seed));
  return (gradient(w, h) + noise).cast(VIPS_FORMAT_UCHAR).copy(
    VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

void save_as(const VImage& img, const fs::path& path) {
  fs::create_directories(path.parent_path());
  img.write_to_file(path.c_str());
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

VImage load(const fs::path& p) {
  return VImage::new_from_file(p.c_str());
}

/// Mean absolute difference of two same-sized images over a rectangle.
double mean_diff(const VImage& a, const VImage& b, int x, int y, int w, int h) {
  VImage da = a.extract_area(x, y, w, h).cast(VIPS_FORMAT_FLOAT);
  VImage db = b.extract_area(x, y, w, h).cast(VIPS_FORMAT_FLOAT);
  return (da - db).abs().avg();
}

/// Pixels in a rectangle where some band differs by more than 40.
int changed_pixels(const VImage& a, const VImage& b, int x, int y, int w, int h) {
  VImage da = a.extract_area(x, y, w, h).cast(VIPS_FORMAT_FLOAT);
  VImage db = b.extract_area(x, y, w, h).cast(VIPS_FORMAT_FLOAT);
  VImage changed = ((da - db).abs() > 40).bandor();  // 255 where changed
  return static_cast<int>(std::lround(changed.avg() / 255.0 * w * h));
}

/// Catches the imaging_error of `fn`; fails the test if there is none.
template <typename F>
imaging_error expect_error(F&& fn) {
  try {
    fn();
  } catch (const imaging_error& e) {
    return e;
  }
  FAIL("no imaging_error thrown");
  return imaging_error(imaging_error::kind::invalid, "unreachable");
}

/// Peak resident set size (VmHWM) in KiB, or -1.
long peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0)
      return std::stol(line.substr(6));
  return -1;
}

/// Resets the peak to the current RSS (Linux >= 4.0); false if not possible.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

} // namespace

TEST_CASE("imaging: thumbnails of every supported format at the configured sizes", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;  // 256 and 1024, jpeg
  VImage small = gradient(640, 480);
  struct input { std::string name, format; };
  std::vector<input> inputs = {{"a/b/pic.jpg", "jpeg"}, {"pic.png", "png"},  {"pic.webp", "webp"},
                               {"pic.tif", "tiff"},      {"pic.gif", "gif"}};
  for (auto& in : inputs) {
    INFO(in.name);
    save_as(small, lib / in.name);
    auto res = make_thumbnails(lib.fd, in.name, s);
    CHECK(res.info.format == in.format);
    CHECK(res.info.width == 640);
    CHECK(res.info.height == 480);
    CHECK(res.info.orientation == 1);
    CHECK(res.info.taken_at.empty());
    REQUIRE(res.thumbnails.size() == 2);
    CHECK(res.thumbnails[0].first == 1024);
    CHECK(res.thumbnails[0].second == ".thumbnails/1024/" + in.name + ".jpg");
    CHECK(res.thumbnails[1].first == 256);
    CHECK(res.thumbnails[1].second == ".thumbnails/256/" + in.name + ".jpg");
    CHECK(res.largest() == res.thumbnails[0].second);
    VImage big = load(lib / res.thumbnails[0].second);
    CHECK(big.width() == 640);  // never upscaled
    CHECK(big.height() == 480);
    VImage t256 = load(lib / res.thumbnails[1].second);
    CHECK(t256.width() == 256);
    CHECK(t256.height() == 192);
    CHECK(std::string{t256.get_string("vips-loader")}.starts_with("jpegload"));
    CHECK(t256.bands() == 3);
  }

  SECTION("a 4000x3000 photo gives 1024x768 and 256x192, metadata stripped") {
    VImage photo = photo_like(4000, 3000, 1).copy();
    photo.set("exif-ifd0-Make", "mediasync-test");
    save_as(photo, lib / "big.jpg");
    auto res = make_thumbnails(lib.fd, "big.jpg", s);
    CHECK(res.info.width == 4000);
    CHECK(res.info.height == 3000);
    VImage t1024 = load(lib / res.thumbnails[0].second);
    VImage t256 = load(lib / res.thumbnails[1].second);
    CHECK(t1024.width() == 1024);
    CHECK(t1024.height() == 768);
    CHECK(t256.width() == 256);
    CHECK(t256.height() == 192);
    CHECK(t1024.get_typeof("exif-data") == 0);
    CHECK(t1024.get_typeof("icc-profile-data") == 0);
  }
  SECTION("webp output, odd sizes, duplicates merged") {
    s.thumbnail_format = "webp";
    s.thumbnail_sizes = {100, 333, 100};
    auto res = make_thumbnails(lib.fd, "pic.png", s);
    REQUIRE(res.thumbnails.size() == 2);
    CHECK(res.thumbnails[0] == std::pair<int, std::string>{333, ".thumbnails/333/pic.png.webp"});
    CHECK(res.thumbnails[1] == std::pair<int, std::string>{100, ".thumbnails/100/pic.png.webp"});
    VImage t333 = load(lib / res.thumbnails[0].second);
    CHECK(std::string{t333.get_string("vips-loader")}.starts_with("webpload"));
    CHECK(std::max(t333.width(), t333.height()) == 333);
    CHECK(std::max(load(lib / res.thumbnails[1].second).width(), 0) == 100);
  }
  CHECK(lib.no_temp_files());
  CHECK(lib_sandbox::files_under(lib.outside).empty());
}

TEST_CASE("imaging: portrait and transparent sources", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  SECTION("EXIF orientation 6 is applied: the thumbnail is portrait") {
    VImage img = photo_like(1600, 1200, 2).copy();
    img.set("orientation", 6);
    save_as(img, lib / "rot.jpg");
    auto res = make_thumbnails(lib.fd, "rot.jpg", s);
    CHECK(res.info.orientation == 6);
    CHECK(res.info.width == 1600);  // as stored
    CHECK(res.info.height == 1200);
    VImage t1024 = load(lib / res.thumbnails[0].second);
    CHECK(t1024.width() == 768);
    CHECK(t1024.height() == 1024);
    CHECK(t1024.get_typeof("orientation") == 0);  // stripped: viewers must not rotate again
    VImage t256 = load(lib / res.thumbnails[1].second);
    CHECK(t256.width() == 192);
    CHECK(t256.height() == 256);
  }
  SECTION("a portrait PNG with alpha: long edge is the height, alpha flattened on white") {
    VImage rgb = gradient(300, 900);
    VImage alpha = VImage::black(300, 900).new_from_image(std::vector<double>{0.0})
                     .cast(VIPS_FORMAT_UCHAR);  // fully transparent
    save_as(rgb.bandjoin(alpha), lib / "clear.png");
    auto res = make_thumbnails(lib.fd, "clear.png", s);
    VImage t256 = load(lib / res.thumbnails[1].second);
    CHECK(t256.width() == 85);
    CHECK(t256.height() == 256);
    CHECK(t256.bands() == 3);
    CHECK(t256.avg() > 250.0);  // white, not black
  }
  SECTION("an embedded Display P3 profile is converted to sRGB") {
    VImage flat = VImage::black(600, 400).new_from_image(std::vector<double>{200, 60, 40})
                    .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
    VImage p3 = flat.icc_transform("p3", VImage::option()->set("input_profile", "srgb"));
    REQUIRE(p3.get_typeof("icc-profile-data") != 0);
    save_as(p3, lib / "p3.jpg");
    auto px_p3 = load(lib / "p3.jpg").getpoint(10, 10);
    CHECK(std::abs(px_p3[1] - 60) > 6);  // P3 values differ
    auto res = make_thumbnails(lib.fd, "p3.jpg", s);
    VImage t = load(lib / res.thumbnails[1].second);
    CHECK(t.get_typeof("icc-profile-data") == 0);
    auto px = t.getpoint(10, 10);
    CHECK(std::abs(px[0] - 200) <= 4);
    CHECK(std::abs(px[1] - 60) <= 4);
    CHECK(std::abs(px[2] - 40) <= 4);
    // Without a profile, the values are kept.
    save_as(flat, lib / "srgb.jpg");
    res = make_thumbnails(lib.fd, "srgb.jpg", s);
    auto px2 = load(lib / res.thumbnails[1].second).getpoint(10, 10);
    CHECK(std::abs(px2[1] - 60) <= 4);
  }
  SECTION("16-bit PNG and grey JPEG") {
    save_as((gradient(500, 400).cast(VIPS_FORMAT_USHORT) * 256)
              .cast(VIPS_FORMAT_USHORT)
              .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_RGB16)),
            lib / "deep.png");
    auto res = make_thumbnails(lib.fd, "deep.png", s);
    VImage t = load(lib / res.thumbnails[1].second);
    CHECK(t.width() == 256);
    CHECK(t.format() == VIPS_FORMAT_UCHAR);
    save_as(gradient(500, 400)[0].copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_B_W)),
            lib / "grey.jpg");
    res = make_thumbnails(lib.fd, "grey.jpg", s);
    CHECK(load(lib / res.thumbnails[0].second).width() == 500);
  }
  CHECK(lib.no_temp_files());
}

TEST_CASE("imaging: EXIF date taken", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  VImage img = gradient(320, 240).copy();
  img.set("exif-ifd0-DateTime", "2023:01:02 03:04:05");
  img.set("exif-ifd2-DateTimeOriginal", "2021:07:04 12:30:00");
  save_as(img, lib / "dated.jpg");
  auto res = make_thumbnails(lib.fd, "dated.jpg", s);
  CHECK(res.info.taken_at == "2021-07-04T12:30:00");

  VImage only_ifd0 = gradient(320, 240).copy();
  only_ifd0.set("exif-ifd0-DateTime", "2023:01:02 03:04:05");
  save_as(only_ifd0, lib / "dated0.jpg");
  CHECK(make_thumbnails(lib.fd, "dated0.jpg", s).info.taken_at == "2023-01-02T03:04:05");

  VImage blank = gradient(320, 240).copy();
  blank.set("exif-ifd2-DateTimeOriginal", "0000:00:00 00:00:00");
  save_as(blank, lib / "blank.jpg");
  CHECK(make_thumbnails(lib.fd, "blank.jpg", s).info.taken_at.empty());
}

TEST_CASE("imaging: pixel limit refuses before decoding", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  SECTION("configured limit") {
    save_as(gradient(2000, 1000), lib / "two-mp.png");
    s.max_pixels = 1'000'000;
    auto e = expect_error([&] { make_thumbnails(lib.fd, "two-mp.png", s); });
    CHECK(e.code() == imaging_error::kind::too_large);
    CHECK_THAT(e.what(), Catch::Contains("2000x1000") && Catch::Contains("limit of 1000000 pixels")
                           && Catch::Contains("max_pixels"));
    CHECK(lib_sandbox::files_under(lib.root / ".thumbnails").empty());
    s.max_pixels = 2'000'000;  // exactly at the limit is fine
    CHECK(make_thumbnails(lib.fd, "two-mp.png", s).info.width == 2000);
  }
  SECTION("default limit: a JPEG whose header says 30000x30000") {
    // A small valid JPEG with its SOF0 dimensions patched: only the header is read.
    VImage tiny = gradient(16, 16);
    void* buf = nullptr;
    size_t len = 0;
    tiny.write_to_buffer(".jpg", &buf, &len);
    std::string bytes(static_cast<const char*>(buf), len);
    g_free(buf);
    auto sof = bytes.find("\xFF\xC0");
    REQUIRE(sof != std::string::npos);
    // FFC0, length(2), precision(1), height(2), width(2)
    bytes[sof + 5] = char(30000 >> 8);
    bytes[sof + 6] = char(30000 & 0xFF);
    bytes[sof + 7] = char(30000 >> 8);
    bytes[sof + 8] = char(30000 & 0xFF);
    write_bytes(lib / "bomb.jpg", bytes);
    auto e = expect_error([&] { make_thumbnails(lib.fd, "bomb.jpg", s); });
    CHECK(e.code() == imaging_error::kind::too_large);
    CHECK_THAT(e.what(), Catch::Contains("30000x30000") && Catch::Contains("268402689"));
    CHECK(lib_sandbox::files_under(lib.root / ".thumbnails").empty());
  }
}

TEST_CASE("imaging: a 30000x30000 JPEG is streamed, not loaded whole", "[.][imaging-slow]") {
  // Hidden (slow: ~10 s): run with ms_tests "[imaging-slow]".
  lib_sandbox lib;
  imaging_settings s;
  s.max_pixels = 1'000'000'000;
  gradient(30000, 30000).write_to_file((lib / "huge.jpg").c_str(),
                                       VImage::option()->set("Q", 50));
  long before = peak_rss_kib();
  if (before < 0 || !reset_peak_rss()) {
    WARN("cannot read or reset the peak RSS (/proc/self/status, clear_refs): skipped");
    return;
  }
  before = peak_rss_kib();
  auto res = make_thumbnails(lib.fd, "huge.jpg", s);
  long grew = peak_rss_kib() - before;
  CHECK(res.info.width == 30000);
  CHECK(load(lib / res.thumbnails[0].second).width() == 1024);
  WARN("peak RSS grew by " << grew / 1024 << " MiB for a 900 MP image");
  CHECK(grew < 300 * 1024);  // whole image would be 2.5 GiB
}

TEST_CASE("imaging: corrupt, truncated and unsupported files fail with a reason", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  std::mt19937 rng{42};
  std::string junk(20000, '\0');
  for (auto& c : junk)
    c = static_cast<char>(rng());

  SECTION("random bytes after a JPEG header") {
    write_bytes(lib / "corrupt.jpg", std::string{"\xFF\xD8\xFF\xE0", 4} + junk);
    auto e = expect_error([&] { make_thumbnails(lib.fd, "corrupt.jpg", s); });
    CHECK(e.code() == imaging_error::kind::decode);
    INFO("corrupt: " << e.what());
    CHECK_THAT(e.what(), Catch::Contains("VipsJpeg", Catch::CaseSensitive::No));
  }
  SECTION("the first half of a valid JPEG") {
    photo_like(1200, 900, 3).write_to_file((lib / "full.jpg").c_str());
    std::string bytes = read_bytes(lib / "full.jpg");
    write_bytes(lib / "half.jpg", bytes.substr(0, bytes.size() / 2));
    auto e = expect_error([&] { make_thumbnails(lib.fd, "half.jpg", s); });
    CHECK(e.code() == imaging_error::kind::decode);
    INFO("truncated: " << e.what());
    CHECK_THAT(e.what(), Catch::Contains("premature end", Catch::CaseSensitive::No));
  }
  SECTION("a truncated PNG") {
    photo_like(600, 400, 4).write_to_file((lib / "full.png").c_str());
    std::string bytes = read_bytes(lib / "full.png");
    write_bytes(lib / "half.png", bytes.substr(0, bytes.size() / 2));
    auto e = expect_error([&] { make_thumbnails(lib.fd, "half.png", s); });
    CHECK(e.code() == imaging_error::kind::decode);
    INFO("truncated png: " << e.what());
    CHECK(std::string{e.what()}.size() > 5);
  }
  SECTION("not an image") {
    write_bytes(lib / "notes.txt", "just some text\n");
    auto e = expect_error([&] { make_thumbnails(lib.fd, "notes.txt", s); });
    CHECK(e.code() == imaging_error::kind::unsupported);
    CHECK_THAT(e.what(), Catch::Contains("not a supported image format"));
  }
  SECTION("an SVG (untrusted loader) is refused") {
    write_bytes(lib / "x.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>");
    auto e = expect_error([&] { make_thumbnails(lib.fd, "x.svg", s); });
    CHECK(e.code() == imaging_error::kind::unsupported);
  }
  SECTION("a missing file") {
    auto e = expect_error([&] { make_thumbnails(lib.fd, "nope.jpg", s); });
    CHECK(e.code() == imaging_error::kind::io);
    CHECK_THAT(e.what(), Catch::Contains("No such file"));
  }
  CHECK(lib_sandbox::files_under(lib.root / ".thumbnails").empty());
  CHECK(lib.no_temp_files());
}

TEST_CASE("imaging: nothing is read or written outside the library root", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  save_as(gradient(300, 200), lib / "d/ok.jpg");
  save_as(gradient(300, 200), lib.outside / "secret.jpg");

  SECTION("invalid relative paths") {
    for (std::string bad : {"../outside/secret.jpg", "/etc/passwd", "d/../ok.jpg", "", "d//ok.jpg",
                            "./d/ok.jpg"}) {
      INFO(bad);
      auto e = expect_error([&] { make_thumbnails(lib.fd, bad, s); });
      CHECK(e.code() == imaging_error::kind::invalid);
    }
    auto e = expect_error([&] { make_thumbnails(lib.fd, ".thumbnails/256/d/ok.jpg.jpg", s); });
    CHECK(e.code() == imaging_error::kind::invalid);
  }
  SECTION("symlinked source file or directory") {
    fs::create_symlink(lib.outside / "secret.jpg", lib / "link.jpg");
    fs::create_symlink(lib.outside, lib / "linkdir");
    auto e = expect_error([&] { make_thumbnails(lib.fd, "link.jpg", s); });
    CHECK(e.code() == imaging_error::kind::io);
    CHECK_THAT(e.what(), Catch::Contains("symlink"));
    e = expect_error([&] { make_thumbnails(lib.fd, "linkdir/secret.jpg", s); });
    CHECK_THAT(e.what(), Catch::Contains("symlink"));
  }
  SECTION("the thumbnails folder replaced by a symlink") {
    fs::create_directories(lib / ".thumbnails");
    fs::create_symlink(lib.outside, lib / ".thumbnails/1024");
    auto e = expect_error([&] { make_thumbnails(lib.fd, "d/ok.jpg", s); });
    CHECK(e.code() == imaging_error::kind::io);
    CHECK_THAT(e.what(), Catch::Contains("'.thumbnails/1024' is a symlink"));
    fs::remove(lib / ".thumbnails/1024");
    fs::create_symlink(lib.outside, lib / ".previews");
    auto res = make_thumbnails(lib.fd, "d/ok.jpg", s);
    s.watermark_text = "x";
    e = expect_error([&] { make_preview(lib.fd, res.largest(), "d/ok.jpg", s); });
    CHECK_THAT(e.what(), Catch::Contains("'.previews' is a symlink"));
  }
  CHECK(lib_sandbox::files_under(lib.outside) == std::vector<std::string>{"secret.jpg"});
  CHECK(lib.no_temp_files());
}

TEST_CASE("imaging: watermarked previews", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  save_as(photo_like(2000, 1500, 5), lib / "p/photo.jpg");
  auto res = make_thumbnails(lib.fd, "p/photo.jpg", s);
  VImage thumb = load(lib / res.largest());
  REQUIRE(thumb.width() == 1024);
  const int w = thumb.width(), h = thumb.height();

  SECTION("text, bottom-right") {
    s.watermark_text = "© mediasync <&> test";  // markup characters are plain text
    std::string rel = make_preview(lib.fd, res.largest(), "p/photo.jpg", s);
    CHECK(rel == ".previews/p/photo.jpg.jpg");
    VImage prev = load(lib / rel);
    REQUIRE(prev.width() == w);
    REQUIRE(prev.height() == h);
    // The text (white, dark shadow) changes many pixels a lot; elsewhere only
    // the JPEG re-encoding noise.
    int marked = changed_pixels(prev, thumb, w / 2, h - h / 6, w / 2, h / 6);
    int clean = changed_pixels(prev, thumb, 0, 0, w / 2, h / 2);
    CHECK(marked > 500);
    CHECK(clean < 50);
    CHECK(prev.get_typeof("exif-data") == 0);
  }
  SECTION("overlay image, top-left, full opacity, and center") {
    VImage red = VImage::black(200, 100).new_from_image(std::vector<double>{255, 0, 0, 255})
                   .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
    save_as(red, lib.outside / "logo.png");
    s.watermark_image = (lib.outside / "logo.png").string();
    s.watermark_position = "top-left";
    s.watermark_opacity = 1.0;
    s.watermark_margin = 10;
    std::string rel = make_preview(lib.fd, res.largest(), "p/photo.jpg", s);
    VImage prev = load(lib / rel);
    // 200x100 fits a quarter of 1024x768 (256x192): not scaled.
    auto px = prev.getpoint(10 + 100, 10 + 50);
    CHECK(px[0] > 230);
    CHECK(px[1] < 30);
    CHECK(px[2] < 30);
    CHECK(mean_diff(prev, thumb, w / 2, h / 2, w / 2, h / 2) < 3.0);

    s.watermark_position = "center";
    s.watermark_opacity = 0.5;
    s.thumbnail_format = "webp";
    rel = make_preview(lib.fd, res.largest(), "p/photo.jpg", s);
    CHECK(rel == ".previews/p/photo.jpg.webp");
    VImage c = load(lib / rel);
    CHECK(std::string{c.get_string("vips-loader")}.starts_with("webpload"));
    CHECK(c.bands() == 3);
    CHECK(mean_diff(c, thumb, w / 2 - 50, h / 2 - 25, 100, 50) > 20.0);
  }
  SECTION("a big overlay is scaled down to a quarter") {
    VImage blue = VImage::black(3000, 3000).new_from_image(std::vector<double>{0, 0, 255})
                    .copy(VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
    save_as(blue, lib.outside / "big.png");
    s.watermark_image = (lib.outside / "big.png").string();
    s.watermark_opacity = 1.0;
    s.watermark_margin = 0;
    VImage prev = load(lib / make_preview(lib.fd, res.largest(), "p/photo.jpg", s));
    // The gradient is red on the right: the blue overlay covers the corner, 192 px high.
    auto corner = prev.getpoint(w - 10, h - 10);
    CHECK(corner[0] < 30);
    CHECK(corner[2] > 230);
    CHECK(prev.getpoint(w - 10, h - 185)[0] < 30);
    CHECK(prev.getpoint(w - 10, h - 200)[0] > 150);
    CHECK(prev.getpoint(w - 185, h - 10)[0] < 30);
    CHECK(prev.getpoint(w - 200, h - 10)[0] > 150);
  }
  SECTION("errors") {
    auto e = expect_error([&] { make_preview(lib.fd, res.largest(), "p/photo.jpg", s); });
    CHECK(e.code() == imaging_error::kind::invalid);
    s.watermark_image = (lib.outside / "missing.png").string();
    e = expect_error([&] { make_preview(lib.fd, res.largest(), "p/photo.jpg", s); });
    CHECK(e.code() == imaging_error::kind::io);
    CHECK_THAT(e.what(), Catch::Contains("missing.png"));
    s.watermark_image.clear();
    s.watermark_text = "x";
    e = expect_error([&] { make_preview(lib.fd, ".thumbnails/1024/none.jpg", "none.jpg", s); });
    CHECK(e.code() == imaging_error::kind::io);
  }
  CHECK(lib.no_temp_files());
}

TEST_CASE("imaging: settings validation and mime types", "[imaging]") {
  imaging_init(1);
  imaging_settings ok;
  CHECK_NOTHROW(ok.validate());
  auto bad = [](auto change) {
    imaging_settings s;
    change(s);
    return s;
  };
  CHECK_THROWS_AS(bad([](auto& s) { s.thumbnail_sizes = {}; }).validate(), std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.thumbnail_sizes = {0}; }).validate(), std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.thumbnail_format = "png"; }).validate(), std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.quality = 0; }).validate(), std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.watermark_position = "middle"; }).validate(),
                  std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.watermark_opacity = 1.5; }).validate(), std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.watermark_opacity = std::nan(""); }).validate(),
                  std::invalid_argument);
  CHECK_THROWS_AS(bad([](auto& s) { s.watermark_text = "a"; s.watermark_image = "b"; }).validate(),
                  std::invalid_argument);

  for (const char* m : {"image/jpeg", "image/png", "image/webp", "image/tiff", "image/gif"})
    CHECK(is_processable_image(m));
  for (const char* m : {"image/svg+xml", "application/pdf", "video/mp4", "", "image/x-canon-cr3"})
    CHECK_FALSE(is_processable_image(m));
  CHECK(is_processable_image("image/heic") == is_processable_image("image/avif"));
}

TEST_CASE("imaging: real photos from gnome-backgrounds", "[imaging]") {
  std::vector<fs::path> photos;
  for (const char* dir : {"/usr/share/backgrounds/gnome", "/usr/share/backgrounds"}) {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) {
      auto ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".webp" || ext == ".png"))
        photos.push_back(e.path());
    }
    if (!photos.empty())
      break;
  }
  if (photos.empty()) {
    WARN("no photos in /usr/share/backgrounds/gnome (install gnome-backgrounds): skipped");
    return;
  }
  std::sort(photos.begin(), photos.end());
  if (photos.size() > 6)
    photos.resize(6);
  lib_sandbox lib;
  imaging_settings s;
  s.watermark_text = "mediasync";
  for (auto& p : photos) {
    INFO(p);
    std::string rel = "real/" + p.filename().string();
    fs::create_directories(lib / "real");
    fs::copy_file(p, lib / rel);
    VImage src = load(p);
    auto res = make_thumbnails(lib.fd, rel, s);
    CHECK(res.info.width == src.width());
    CHECK(res.info.height == src.height());
    int long_edge = std::max(src.width(), src.height());
    for (auto& [size, path] : res.thumbnails) {
      VImage t = load(lib / path);
      CHECK(std::max(t.width(), t.height()) == std::min(size, long_edge));
    }
    std::string prev = make_preview(lib.fd, res.largest(), rel, s);
    CHECK(fs::file_size(lib / prev) > 0);
  }
  CHECK(lib.no_temp_files());
}

TEST_CASE("imaging: concurrent callers", "[imaging]") {
  lib_sandbox lib;
  imaging_settings s;
  s.watermark_text = "concurrent";
  constexpr int n = 12;
  for (int i = 0; i < n; ++i)
    save_as(photo_like(900 + 10 * i, 600, i), lib / ("c/" + std::to_string(i) + ".jpg"));
  write_bytes(lib / "c/bad.jpg", std::string{"\xFF\xD8\xFF\xE0", 4} + std::string(3000, 'x'));
  std::atomic<int> next{0}, ok{0}, failed{0};
  auto work = [&] {
    for (int i; (i = next.fetch_add(1)) <= n;) {
      std::string rel = i == n ? "c/bad.jpg" : "c/" + std::to_string(i) + ".jpg";
      try {
        auto res = make_thumbnails(lib.fd, rel, s);
        make_preview(lib.fd, res.largest(), rel, s);
        ++ok;
      } catch (const imaging_error& e) {
        ++failed;
      }
    }
  };
  std::thread a{work}, b{work};
  a.join();
  b.join();
  CHECK(ok == n);
  CHECK(failed == 1);
  CHECK(lib_sandbox::files_under(lib.root / ".previews/c").size() == n);
  CHECK(lib.no_temp_files());
}
