// End-to-end: the real binary through all three stages on generated and real images.
#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <filesystem>
#include <vips/vips8>

#include "actors/imaging.hpp"
#include "test_util.hpp"

using namespace ms::test;
using vips::VImage;
namespace fs = std::filesystem;

namespace {

VImage noisy(int w, int h, int seed) {
  VImage xy = VImage::xyz(w, h);
  VImage rgb = (xy[0] * (255.0 / w)).bandjoin(xy[1] * (255.0 / h)).bandjoin(xy[0] * 0.0 + 90);
  VImage noise = VImage::gaussnoise(w, h, VImage::option()->set("sigma", 10.0)->set("seed", seed));
  return (rgb + noise).cast(VIPS_FORMAT_UCHAR).copy(
    VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

std::int64_t count(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  auto n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

} // namespace

TEST_CASE("images get metadata, thumbnails and watermarked previews, others are skipped",
          "[e2e][stages]") {
  ms::imaging_init(1);
  temp_dir t;
  auto src = t / "src";
  fs::create_directories(src + "/a");
  fs::create_directories(t / "src");
  noisy(1600, 1200, 1).write_to_file((src + "/a/landscape.jpg").c_str());
  auto rotated = noisy(1200, 800, 2);
  rotated.set("orientation", 6);
  rotated.write_to_file((src + "/a/rotated.jpg").c_str());
  noisy(300, 200, 3).write_to_file((src + "/small.png").c_str());
  noisy(900, 900, 4).write_to_file((src + "/b.webp").c_str());
  noisy(640, 480, 5).write_to_file((src + "/c.tif").c_str());
  noisy(320, 240, 6).write_to_file((src + "/d.gif").c_str());
  write_file(src + "/notes.txt", "not an image");
  write_file(src + "/broken.jpg", std::string("\xff\xd8\xff\xe0", 4) + content(5000, 9));
  int real_photos = 0;
  for (auto& e : fs::directory_iterator("/usr/share/backgrounds/gnome")) {
    auto ext = e.path().extension().string();
    if ((ext == ".jpg" || ext == ".webp" || ext == ".png") && real_photos < 3) {
      fs::copy_file(e.path(), src + "/real-" + e.path().filename().string());
      ++real_photos;
    }
  }
  if (real_photos == 0)
    WARN("no real photos found under /usr/share/backgrounds/gnome");

  auto r = run_mediasync({"sync", src, t / "lib", "--db", t / "m.db", "--progress", "none",
                          "--processing-workers", "2", "--watermark-workers", "2"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2((t / "m.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  int images = 6 + real_photos;
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE stage='processing' AND status='ok'")
        == images);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE stage='watermark' AND status='ok'")
        == images);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE stage='processing' AND status='skipped'"
                  " AND path='notes.txt' AND error LIKE 'not an image%'") == 1);
  // The corrupt JPEG: a failed processing row with the decoder's reason; its watermark skipped.
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE stage='processing' AND status='failed'"
                  " AND path='broken.jpg' AND length(error) > 10") == 1);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE stage='watermark' AND status='skipped'"
                  " AND path='broken.jpg'") == 1);
  for (auto s : {"sync", "processing", "watermark"})
    CHECK(count(db, std::string{"SELECT (SELECT ok_files + failed_files + skipped_files FROM "
                                "job_stage_counters WHERE job_id = 1 AND stage='"} + s
                      + "') = (SELECT count(*) FROM file_results WHERE job_id = 1 AND stage='" + s
                      + "')") == 1);
  CHECK(count(db, "SELECT width FROM media_items WHERE path='a/landscape.jpg'") == 1600);
  CHECK(count(db, "SELECT orientation FROM media_items WHERE path='a/rotated.jpg'") == 6);
  CHECK(count(db, "SELECT count(*) FROM media_items WHERE preview_path IS NOT NULL") == images);
  sqlite3_close(db);

  // Thumbnails at the configured long edges, orientation applied, never upscaled.
  auto lib = t / "lib";
  auto big = VImage::new_from_file((lib + "/.thumbnails/1024/a/landscape.jpg.jpg").c_str());
  CHECK(std::max(big.width(), big.height()) == 1024);
  auto small = VImage::new_from_file((lib + "/.thumbnails/256/a/landscape.jpg.jpg").c_str());
  CHECK(std::max(small.width(), small.height()) == 256);
  auto rot = VImage::new_from_file((lib + "/.thumbnails/1024/a/rotated.jpg.jpg").c_str());
  CHECK(rot.height() > rot.width());  // 1200x800 stored with orientation 6: portrait
  auto tiny = VImage::new_from_file((lib + "/.thumbnails/1024/small.png.jpg").c_str());
  CHECK(tiny.width() == 300);
  // The preview is the largest thumbnail plus a watermark: same size, different pixels.
  auto prev = VImage::new_from_file((lib + "/.previews/a/landscape.jpg.jpg").c_str());
  CHECK(prev.width() == big.width());
  CHECK((prev - big).abs().max() > 50);

  // A rerun skips every stage as unchanged.
  auto r2 = run_mediasync({"sync", src, t / "lib", "--db", t / "m.db", "--progress", "none"});
  CHECK(r2.exit_code == 0);
  REQUIRE(sqlite3_open_v2((t / "m.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=2 AND stage='processing'"
                  " AND status='skipped' AND error='unchanged'") == images);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=2 AND status='ok'") == 0);
  sqlite3_close(db);

  // So does a rerun with --checksum: files whose hash matches keep their thumbnails and
  // previews (not made again), and only the changed image goes through the stages.
  auto thumb_time = fs::last_write_time(lib + "/.thumbnails/1024/a/landscape.jpg.jpg");
  auto preview_time = fs::last_write_time(lib + "/.previews/a/landscape.jpg.jpg");
  noisy(500, 400, 8).write_to_file((src + "/small.png").c_str());
  auto r3 = run_mediasync({"sync", src, t / "lib", "--db", t / "m.db", "--progress", "none",
                           "--checksum"});
  INFO(r3.err);
  CHECK(r3.exit_code == 0);
  REQUIRE(sqlite3_open_v2((t / "m.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=3 AND stage='sync'"
                  " AND status='skipped' AND error='unchanged (checksum)'") == images + 2 - 1);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=3 AND stage='processing'"
                  " AND status='skipped' AND error='unchanged'") == images - 1);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=3 AND stage='watermark'"
                  " AND status='skipped' AND error='unchanged'") == images - 1);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=3 AND status='ok'"
                  " AND path='small.png'") == 3);
  CHECK(count(db, "SELECT width FROM media_items WHERE path='small.png'") == 500);
  sqlite3_close(db);
  CHECK(fs::last_write_time(lib + "/.thumbnails/1024/a/landscape.jpg.jpg") == thumb_time);
  CHECK(fs::last_write_time(lib + "/.previews/a/landscape.jpg.jpg") == preview_time);
}

TEST_CASE("no-thumbnails option runs the sync stage only", "[e2e][stages]") {
  ms::imaging_init(1);
  temp_dir t;
  fs::create_directories(t / "src");
  noisy(400, 300, 1).write_to_file((t / "src/x.jpg").c_str());
  auto r = run_mediasync({"sync", t / "src", t / "lib", "--db", t / "m.db", "--progress", "none",
                          "--no-thumbnails"});
  CHECK(r.exit_code == 0);
  CHECK_FALSE(fs::exists(t / "lib/.thumbnails"));
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2((t / "m.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE stage <> 'sync'") == 0);
  sqlite3_close(db);
}

TEST_CASE("a later run watermarks the thumbnails of a name that is not UTF-8", "[e2e][stages]") {
  // media_items.thumbnail_paths is JSON, which holds U+FFFD for the byte 0xE9; the
  // watermark stage of the second run must still open the thumbnail the first made.
  ms::imaging_init(1);
  temp_dir t;
  fs::create_directories(t / "src/d\xe9j\xe0");
  const std::string name = "d\xe9j\xe0/caf\xe9.jpg";
  noisy(400, 300, 7).write_to_file((t / "src" + "/" + name).c_str());
  auto r1 = run_mediasync({"sync", t / "src", t / "lib", "--db", t / "m.db", "--progress", "none",
                           "--no-watermark"});
  INFO(r1.err);
  REQUIRE(r1.exit_code == 0);
  CHECK(fs::exists(t / "lib/.thumbnails/1024/" + name + ".jpg"));
  CHECK_FALSE(fs::exists(t / "lib/.previews"));
  auto r2 = run_mediasync({"sync", t / "src", t / "lib", "--db", t / "m.db", "--progress", "none"});
  INFO(r2.err);
  CHECK(r2.exit_code == 0);
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2((t / "m.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=2 AND stage='processing'"
                  " AND status='skipped' AND error='unchanged'") == 1);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE job_id=2 AND stage='watermark'"
                  " AND status='ok'") == 1);
  CHECK(count(db, "SELECT count(*) FROM file_results WHERE status='failed'") == 0);
  sqlite3_close(db);
  // The preview is the watermarked thumbnail: same size, under the exact name.
  auto thumb = VImage::new_from_file((t / "lib/.thumbnails/1024/" + name + ".jpg").c_str());
  auto prev = VImage::new_from_file((t / "lib/.previews/" + name + ".jpg").c_str());
  CHECK(prev.width() == thumb.width());
  CHECK(prev.height() == thumb.height());
}
