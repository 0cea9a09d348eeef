// Crash anywhere: the real binary syncing a 5,000-file tree (small files in nested
// folders, larger multi-chunk files and real images, so all three stages run) is killed
// with SIGKILL at 20 random moments and resumed each time; at the end the database and
// the library must be exactly what one uninterrupted run gives. Also: the sweep of
// temporary files dead processes left in the library.
//
// Replay a failure: the seed is printed ("crash anywhere [...] seed=N") and read from
// MEDIASYNC_CRASH_SEED; MEDIASYNC_CRASH_KILLS changes the number of kills (default 20).
// The seed fixes the tree and every choice (kill mode, progress target, delays); the
// machine's timing does the rest.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include <pqxx/pqxx>
#include <vips/vips8>

#include "actors/imaging.hpp"
#include "e2e_db.hpp"
#include "test_util.hpp"

using namespace ms::test;
using namespace std::chrono_literals;
using vips::VImage;
namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

long env_number(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0')
    return fallback;
  return std::stol(v);
}

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

VImage noisy(int w, int h, int seed) {
  VImage xy = VImage::xyz(w, h);
  VImage rgb = (xy[0] * (255.0 / w)).bandjoin(xy[1] * (255.0 / h)).bandjoin(xy[0] * 0.0 + 90);
  VImage noise = VImage::gaussnoise(w, h, VImage::option()->set("sigma", 10.0)->set("seed", seed));
  return (rgb + noise).cast(VIPS_FORMAT_UCHAR).copy(
    VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

struct tree {
  std::vector<std::string> paths;  ///< every file, relative
  std::set<std::string> images;    ///< the ones the image stages process
};

/// `n` files under `root`: `n_images` images (jpg, png, webp) made with libvips, about 40
/// files of 1-3 MiB (several read/write chunks: kills land mid-write), a few empty files, the
/// rest 0.5-8 KiB, in folders 2-4 deep.
tree make_crash_tree(const std::string& root, std::size_t n, std::size_t n_images,
                     std::mt19937_64& rng) {
  tree t;
  const std::size_t big_every = std::max<std::size_t>(1, n / 40);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (std::size_t i = 0; i < n_images; ++i) {
    static const char* ext[] = {"jpg", "jpg", "jpg", "png", "webp"};
    std::string rel = "photos/" + std::to_string(2015 + i % 7) + "/" + std::to_string(1 + i % 12)
                      + "/img" + std::to_string(i) + "." + ext[i % 5];
    fs::create_directories(fs::path(root + "/" + rel).parent_path());
    noisy(pick(160, 560), pick(120, 420), static_cast<int>(i) + 1)
      .write_to_file((root + "/" + rel).c_str());
    t.paths.push_back(rel);
    t.images.insert(rel);
  }
  for (std::size_t i = n_images; i < n; ++i) {
    std::string rel = "a" + std::to_string(i % 9) + "/b" + std::to_string((i / 9) % 11) + "/";
    if (i % 3 == 0)
      rel += "c" + std::to_string(i % 5) + "/";
    rel += "f" + std::to_string(i) + (i % 4 == 0 ? ".txt" : ".bin");
    std::size_t size = i % big_every == 7  ? static_cast<std::size_t>(pick(1 << 20, 3 << 20))
                       : i % 997 == 3 ? 0
                                      : static_cast<std::size_t>(pick(512, 8192));
    write_file(root + "/" + rel, content(size, i));
    t.paths.push_back(rel);
  }
  return t;
}

/// Counts a job's rows as another program would while it runs: one connection held
/// (SQLite read-only once the file exists; PostgreSQL), reopened after an error.
class row_counter {
public:
  row_counter(std::string kind, std::string url) : kind_(std::move(kind)), url_(std::move(url)) {}
  ~row_counter() { close(); }
  /// Rows of job 1, or -1 while the database or the job is not there yet.
  long rows() {
    static const char* sql = "SELECT count(*) FROM file_results WHERE job_id = 1";
    try {
      if (kind_ == "postgres") {
        if (!pg_)
          pg_ = std::make_unique<pqxx::connection>(url_);
        pqxx::nontransaction n(*pg_);
        return n.exec(sql)[0][0].as<long>();
      }
      if (lite_ == nullptr) {
        if (!fs::exists(url_))
          return -1;
        if (sqlite3_open_v2(url_.c_str(), &lite_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
          close();
          return -1;
        }
      }
      sqlite3_stmt* st = nullptr;
      long out = -1;
      if (sqlite3_prepare_v2(lite_, sql, -1, &st, nullptr) == SQLITE_OK
          && sqlite3_step(st) == SQLITE_ROW)
        out = static_cast<long>(sqlite3_column_int64(st, 0));
      sqlite3_finalize(st);
      if (out < 0)
        close();
      return out;
    } catch (const std::exception&) {
      close();
      return -1;
    }
  }

private:
  void close() {
    pg_.reset();
    if (lite_ != nullptr)
      sqlite3_close(lite_);
    lite_ = nullptr;
  }
  std::string kind_;
  std::string url_;
  sqlite3* lite_ = nullptr;
  std::unique_ptr<pqxx::connection> pg_;
};

/// Regular files under `root` (relative), not following symlinks; other entry types
/// (symlinks, FIFOs, ...) go to `others`.
std::vector<std::string> files_under(const std::string& root, std::vector<std::string>& others) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(root)) {
    auto rel = fs::relative(e.path(), root).string();
    if (e.is_symlink())
      others.push_back(rel);
    else if (e.is_regular_file())
      out.push_back(rel);
    else if (!e.is_directory())
      others.push_back(rel);
  }
  return out;
}

bool is_temp_name(const std::string& rel) {
  return fs::path(rel).filename().string().rfind(".mediasync-tmp.", 0) == 0;
}

/// A complete JPEG: SOI at the start, EOI at the end.
bool complete_jpeg(const std::string& bytes) {
  return bytes.size() > 4 && static_cast<unsigned char>(bytes[0]) == 0xFF
         && static_cast<unsigned char>(bytes[1]) == 0xD8
         && static_cast<unsigned char>(bytes[bytes.size() - 2]) == 0xFF
         && static_cast<unsigned char>(bytes[bytes.size() - 1]) == 0xD9;
}

/// Temporary files under `root` (a kill's leftovers until a later run sweeps them).
long temp_files(const std::string& root) {
  long n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec))
    n += is_temp_name(it->path().string()) ? 1 : 0;
  return n;
}

struct kill_stats {
  int landed = 0;       ///< killed by SIGKILL with the job not completed
  long temps_seen = 0;  ///< temporary files found right after the kills
  int early = 0;        ///< of which at a random instant after the start
  long rows_before = 0; ///< rows when the last run started
  double run_ms = 0;    ///< time the killed runs ran
};

/// The whole scenario on one backend with a tree of `n_files` (`n_images` of them images);
/// `named_temps` runs the binary with named temporary files (MEDIASYNC_TEST_NAMED_TEMP=1),
/// as on a filesystem without O_TMPFILE.
void crash_anywhere(const std::string& backend, bool named_temps, std::size_t n_files,
                    std::size_t n_images) {
  const auto t_start = clock_type::now();
  const auto seed = static_cast<std::uint64_t>(env_number("MEDIASYNC_CRASH_SEED", 20240607));
  const int kills = static_cast<int>(env_number("MEDIASYNC_CRASH_KILLS", 20));
  const std::string label = backend + (named_temps ? ", named temporary files" : "");
  std::printf("crash anywhere [%s] seed=%llu kills=%d (replay: MEDIASYNC_CRASH_SEED=%llu)\n",
              label.c_str(), static_cast<unsigned long long>(seed), kills,
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  INFO("crash anywhere [" << label << "] seed=" << seed << " (MEDIASYNC_CRASH_SEED)");
  std::mt19937_64 rng(seed);
  auto uniform = [&](long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(rng); };

  ms::imaging_init(1);
  temp_dir t;
  test_db db(backend, t);
  const tree src = make_crash_tree(t / "src", n_files, n_images, rng);
  REQUIRE(src.paths.size() == n_files);
  const long total_rows = 3 * static_cast<long>(n_files);  // sync, processing, watermark
  std::printf("  tree: %zu files (%zu images) in %.0f ms\n", src.paths.size(), n_images,
              ms_since(t_start));

  if (named_temps)
    ::setenv("MEDIASYNC_TEST_NAMED_TEMP", "1", 1);
  struct env_guard {
    bool on;
    ~env_guard() {
      if (on)
        ::unsetenv("MEDIASYNC_TEST_NAMED_TEMP");
    }
  } guard{named_temps};

  // Slow enough that 20 kills land mid-job on a busy 2-core machine: few workers, small
  // batches (each one a syncfs and a transaction), a small window.
  const std::vector<std::string> speed = {"--db",         db.url(), "--workers",        "2",
                                          "--processing-workers", "1", "--watermark-workers", "1",
                                          "--batch-size", "8",      "--flush-interval", "10",
                                          "--window",     "64",     "--progress",       "none"};
  auto args_for = [&](bool first) {
    std::vector<std::string> a = first ? std::vector<std::string>{"sync", t / "src", t / "lib"}
                                       : std::vector<std::string>{"resume", "1"};
    a.insert(a.end(), speed.begin(), speed.end());
    return a;
  };
  auto status = [&] { return db.one("SELECT status FROM sync_jobs WHERE id = 1"); };

  row_counter counter(backend, db.url());
  kill_stats ks;
  std::string stop_reason;
  for (int k = 0; k < kills; ++k) {
    const bool first = k == 0;
    long before = first ? 0 : counter.rows();
    // early: at a random instant of the run's first 250 ms (start-up, migration, scan,
    // first batches), while more than 40 % of the rows are left; progress: once this run
    // committed a random number of rows, on average an even share of what is left (so the
    // kills spread over the whole job, its last batches included), then 0-20 ms more.
    // Never so close to the end that the run could finish before the kill lands (400
    // rows: what a run commits in ~100 ms of scheduling lag on a busy machine). The first
    // run always waits for rows (the job row must exist to be resumed).
    const long left = total_rows - before;
    const bool early = !first && left > total_rows * 2 / 5 && uniform(0, 3) == 0;
    const long target =
      uniform(1, std::max(1L, std::min(2 * left / (kills - k + 1), left - 400)));
    const long delay_ms = early ? uniform(0, 250) : uniform(0, 20);
    const auto t0 = clock_type::now();
    int pid = start_mediasync(args_for(first), t / ("run" + std::to_string(k)));
    bool exited = false;
    int rc = -1;
    if (!early) {
      const auto deadline = t0 + 30s * time_scale;
      for (;;) {
        int st = 0;
        if (::waitpid(pid, &st, WNOHANG) == pid) {
          exited = true;
          rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
          break;
        }
        long now = counter.rows();
        if (now >= 0 && now - before >= target)
          break;
        if (clock_type::now() > deadline) {
          std::printf("  kill %d: no %ld new rows after 30 s, killing anyway\n", k + 1, target);
          break;
        }
        std::this_thread::sleep_for(2ms);
      }
    }
    if (!exited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      ::kill(pid, SIGKILL);
      rc = wait_pid(pid);
    }
    const double ran = ms_since(t0);
    const long after = counter.rows();
    const std::string st = status();
    const long temps = fs::exists(t / "lib") ? temp_files(t / "lib") : 0;
    ks.temps_seen += temps;
    std::printf("  kill %2d/%d %-8s after %6.0f ms: rows %5ld -> %5ld, exit %d, job %s, "
                "temporary files in DEST %ld\n",
                k + 1, kills, early ? "early" : "progress", ran, before, after, rc, st.c_str(),
                temps);
    std::fflush(stdout);
    INFO("run " << k << " log: " << read_file(t / ("run" + std::to_string(k) + ".err")));
    if (rc != 128 + SIGKILL || st == "completed") {
      stop_reason = "run " + std::to_string(k + 1) + " ended on its own (exit "
                    + std::to_string(rc) + ", job " + st + ") before the kill";
      CHECK(st == "completed");  // an exit other than the kill is a failure unless done
      break;
    }
    ++ks.landed;
    ks.early += early ? 1 : 0;
    ks.run_ms += ran;
    // Every committed state is consistent: counters equal the rows.
    check_counters(db, 1);
  }

  // The final resume runs to completion.
  const auto t_final = clock_type::now();
  auto r = run_mediasync({"resume", "1", "--db", db.url(), "--progress", "none"});
  const double final_ms = ms_since(t_final);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(status() == "completed");
  std::printf("crash anywhere [%s]: %d of %d kills landed mid-job (%d early), killed runs %.1f s, "
              "final resume %.1f s, %ld temporary files seen after kills, total %.1f s%s%s\n",
              label.c_str(), ks.landed, kills, ks.early, ks.run_ms / 1000, final_ms / 1000,
              ks.temps_seen, ms_since(t_start) / 1000, stop_reason.empty() ? "" : "; ",
              stop_reason.c_str());
  std::fflush(stdout);
  INFO(stop_reason);
  CHECK(ks.landed == kills);

  // --- exactly one row per (path, stage), the right status for each
  std::map<std::string, std::map<std::string, std::string>> rows;  // path -> stage -> status
  long duplicates = 0;
  for (auto& row : db.rows("SELECT path, stage, min(status), count(*) FROM file_results"
                           " WHERE job_id = 1 GROUP BY path, stage")) {
    rows[row[0]][row[1]] = row[2];
    if (std::stol(row[3]) != 1 && duplicates++ < 5)
      UNSCOPED_INFO("duplicate rows: " << row[0] << " " << row[1] << " x" << row[3]);
  }
  CHECK(duplicates == 0);
  CHECK(db.num("SELECT count(*) FROM file_results") == total_rows);
  long wrong = 0;
  for (auto& p : src.paths) {
    const bool image = src.images.count(p) != 0;
    const std::map<std::string, std::string> want = {
      {"sync", "ok"},
      {"processing", image ? "ok" : "skipped"},
      {"watermark", image ? "ok" : "skipped"}};
    auto it = rows.find(p);
    if ((it == rows.end() || it->second != want) && wrong++ < 5)
      UNSCOPED_INFO("rows of " << p << " are not sync ok, processing and watermark "
                               << (image ? "ok" : "skipped"));
  }
  CHECK(wrong == 0);
  CHECK(rows.size() == n_files);  // no row for a path outside the tree

  // --- counters equal the rows: the job's, and per stage
  check_counters(db, 1);
  CHECK(db.num("SELECT processed_files FROM sync_jobs WHERE id = 1") == static_cast<long>(n_files));
  auto stages = db.rows(
    "SELECT c.stage, c.ok_files, c.failed_files, c.skipped_files,"
    " (SELECT count(*) FROM file_results f WHERE f.job_id = c.job_id AND f.stage = c.stage AND f.status = 'ok'),"
    " (SELECT count(*) FROM file_results f WHERE f.job_id = c.job_id AND f.stage = c.stage AND f.status = 'failed'),"
    " (SELECT count(*) FROM file_results f WHERE f.job_id = c.job_id AND f.stage = c.stage AND f.status = 'skipped')"
    " FROM job_stage_counters c WHERE c.job_id = 1 ORDER BY c.stage");
  REQUIRE(stages.size() == 3);
  for (auto& s : stages) {
    INFO("stage " << s[0]);
    CHECK(s[1] == s[4]);
    CHECK(s[2] == s[5]);
    CHECK(s[3] == s[6]);
    CHECK(s[1] == std::to_string(s[0] == "sync" ? n_files : n_images));
    CHECK(s[2] == "0");
  }
  CHECK(db.num("SELECT count(*) FROM media_items") == static_cast<long>(n_files));
  CHECK(db.num("SELECT count(*) FROM media_items WHERE preview_path IS NOT NULL")
        == static_cast<long>(n_images));

  // --- the library: source bytes for every file, no temporary file, nothing without its row
  const std::string lib = t / "lib";
  long differ = 0;
  for (auto& p : src.paths) {
    std::error_code ec;
    bool same = fs::is_regular_file(lib + "/" + p, ec)
                && read_file(lib + "/" + p) == read_file(t / "src/" + p);
    if (!same && differ++ < 5)
      UNSCOPED_INFO("library file differs from the source or is missing: " << p);
  }
  CHECK(differ == 0);
  std::vector<std::string> others;
  auto files = files_under(lib, others);
  for (auto& o : others)
    UNSCOPED_INFO("not a regular file in the library: " << o);
  CHECK(others.empty());
  const ms::imaging_settings is;  // the binary's defaults: sizes 256 and 1024, JPEG
  std::set<std::string> derived_expected;
  for (auto& img : src.images) {
    for (int size : is.thumbnail_sizes)
      derived_expected.insert(ms::thumbnail_rel_path(size, img, is));
    derived_expected.insert(ms::preview_rel_path(img, is));
  }
  long temps = 0, orphans = 0, derived = 0, bad_derived = 0;
  for (auto& f : files) {
    if (is_temp_name(f)) {
      if (temps++ < 5)
        UNSCOPED_INFO("temporary file left behind: " << f);
      continue;
    }
    const bool thumb = f.rfind(".thumbnails/", 0) == 0;
    const bool preview = f.rfind(".previews/", 0) == 0;
    if (!thumb && !preview) {
      auto it = rows.find(f);
      if ((it == rows.end() || it->second["sync"] != "ok") && orphans++ < 5)
        UNSCOPED_INFO("library file without its sync row: " << f);
      continue;
    }
    ++derived;
    // .thumbnails/<size>/<path>.jpg needs processing ok; .previews/<path>.jpg watermark ok
    std::string rel = f.substr(f.find('/') + 1);
    if (thumb)
      rel = rel.substr(rel.find('/') + 1);
    rel = rel.substr(0, rel.size() - 4);
    auto it = rows.find(rel);
    const char* stage = thumb ? "processing" : "watermark";
    if ((it == rows.end() || it->second[stage] != "ok" || derived_expected.count(f) == 0)
        && orphans++ < 5)
      UNSCOPED_INFO("derived file without its " << stage << " ok row: " << f);
    if (!complete_jpeg(read_file(lib + "/" + f)) && bad_derived++ < 5)
      UNSCOPED_INFO("derived file is not a complete JPEG: " << f);
  }
  CHECK(temps == 0);
  CHECK(orphans == 0);
  CHECK(bad_derived == 0);
  CHECK(derived == static_cast<long>(derived_expected.size()));
  CHECK(files.size() == n_files + derived_expected.size());
  std::printf("  checks done at %.1f s\n", ms_since(t_start) / 1000);
  std::fflush(stdout);
}

/// A pid that no process has (a child that exited and was reaped).
pid_t dead_pid() {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0)
    ::_exit(0);
  int st = 0;
  ::waitpid(pid, &st, 0);
  REQUIRE(::kill(pid, 0) != 0);
  return pid;
}

} // namespace

TEST_CASE("crash anywhere: kill -9 at 20 random moments of a 5,000-file sync, resume each time, "
          "one row per file and stage, library equals source",
          "[e2e][crash]") {
  const auto t0 = clock_type::now();
  crash_anywhere(EACH_BACKEND, false, 5000, 100);
  std::printf("  cleaned up at %.1f s\n", ms_since(t0) / 1000);
}

TEST_CASE("crash anywhere with named temporary files (no O_TMPFILE): the sweep leaves none",
          "[e2e][crash]") {
  // A smaller tree (2,000 files): creating and deleting small files is what costs on a busy
  // disk, and this variant is about the leftovers of killed writes, not the scale.
  const auto t0 = clock_type::now();
  crash_anywhere("sqlite", true, 2000, 40);
  std::printf("  cleaned up at %.1f s\n", ms_since(t0) / 1000);
}

TEST_CASE("crash sweep: a run removes temporary files of dead processes from DEST and nothing else",
          "[e2e][crash]") {
  temp_dir t;
  write_file(t / "src/new.bin", "new");
  const std::string lib = t / "lib";
  const std::string dead = std::to_string(dead_pid());
  const std::string self = std::to_string(::getpid());
  const std::string tmp = ".mediasync-tmp.";
  // Left by a killed process: removed wherever they are in DEST.
  const std::vector<std::string> stale = {tmp + dead + ".0", "a/b/" + tmp + dead + ".17",
                                          ".thumbnails/256/x/" + tmp + dead + ".3",
                                          ".previews/" + tmp + dead + ".4"};
  for (auto& s : stale)
    write_file(lib + "/" + s, "stale");
  // Kept: a live process's (this test's, and pid 1's), names that only look alike, a
  // directory with such a name and what is in it, a symlink with such a name and its target.
  const std::vector<std::string> kept = {
    "k/" + tmp + self + ".1",     "k/" + tmp + "1.2",          "k/" + tmp + dead,
    "k/" + tmp + dead + ".x",     "k/" + tmp + "0" + dead + ".1", "k/" + tmp + "-" + dead + ".1",
    "k/" + tmp + dead + ".01",    "k/" + tmp + dead + ".5.6",  "k/x" + tmp + dead + ".1",
    "k/" + tmp + dead + ".7/inner", "k/" + tmp + "99999999999.1"};
  for (auto& k : kept)
    write_file(lib + "/" + k, "keep");
  write_file(t / "outside/victim", "outside");
  write_file(t / "outside/" + tmp + dead + ".8", "outside temp");
  fs::create_symlink(t / "outside/victim", lib + "/k/" + tmp + dead + ".9");
  fs::create_symlink(t / "outside", lib + "/linked");  // never followed

  auto r = run_mediasync({"sync", t / "src", lib, "--db", t / "m.db", "--progress", "none"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(read_file(lib + "/new.bin") == "new");
  for (auto& s : stale) {
    INFO(s);
    CHECK_FALSE(fs::exists(fs::symlink_status(lib + "/" + s)));
  }
  for (auto& k : kept) {
    INFO(k);
    CHECK(read_file(lib + "/" + k) == "keep");
  }
  CHECK(fs::is_symlink(lib + "/k/" + tmp + dead + ".9"));
  CHECK(read_file(t / "outside/victim") == "outside");
  CHECK(read_file(t / "outside/" + tmp + dead + ".8") == "outside temp");
  CHECK(fs::is_symlink(lib + "/linked"));
}
