// Tests of the SQLite store (storage/sqlite_store.*, storage/store.cpp).
// Every test works in its own mkdtemp directory, removed at the end. A second,
// raw sqlite3 connection checks what actually landed in the file.
//
// The backend-independent behaviours are in tests/store_contract.* (run on SQLite
// by "store contract on SQLite"); here are only what is SQLite's own: URLs,
// files, locking, and the stored column forms behind those behaviours.
#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/sqlite_store.hpp"
#include "storage/store.hpp"
#include "store_contract.hpp"
#include "test_util.hpp"

namespace {

using namespace ms;
using namespace ms::test::contract;
using ms::storage::errc;
using ms::storage::open_mode;
using ms::storage::open_store;

using ms::test::temp_dir;

/// A raw sqlite3 connection for checking the database behind the store's back.
class raw_db {
public:
  explicit raw_db(const std::string& path, bool writable = false) {
    int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close_v2(db_);
      throw std::runtime_error("raw open of " + path + ": " + msg);
    }
  }
  ~raw_db() { sqlite3_close_v2(db_); }
  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;
  sqlite3* get() const { return db_; }

  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error("raw exec '" + sql + "': " + msg);
    }
  }

  /// All rows of `sql` (with optional text parameters bound exactly), each
  /// column read with its exact bytes; NULL reads as "<NULL>".
  std::vector<std::vector<std::string>> rows(const std::string& sql,
                                             const std::vector<std::string>& params = {}) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
      throw std::runtime_error("raw prepare '" + sql + "': " + sqlite3_errmsg(db_));
    for (std::size_t i = 0; i < params.size(); ++i)
      sqlite3_bind_text(s, static_cast<int>(i + 1), params[i].data(),
                        static_cast<int>(params[i].size()), SQLITE_TRANSIENT);
    std::vector<std::vector<std::string>> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int c = 0; c < sqlite3_column_count(s); ++c) {
        if (sqlite3_column_type(s, c) == SQLITE_NULL) {
          row.emplace_back("<NULL>");
          continue;
        }
        auto p = reinterpret_cast<const char*>(sqlite3_column_text(s, c));
        row.emplace_back(p, static_cast<std::size_t>(sqlite3_column_bytes(s, c)));
      }
      out.push_back(std::move(row));
    }
    std::string msg = sqlite3_errmsg(db_);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) throw std::runtime_error("raw step '" + sql + "': " + msg);
    return out;
  }

  std::string text(const std::string& sql, const std::vector<std::string>& params = {}) {
    auto r = rows(sql, params);
    if (r.empty() || r[0].empty()) throw std::runtime_error("raw query returned nothing: " + sql);
    return r[0][0];
  }
  long long integer(const std::string& sql, const std::vector<std::string>& params = {}) {
    return std::stoll(text(sql, params));
  }

private:
  sqlite3* db_ = nullptr;
};

} // namespace

// ---------------------------------------------------------------------------
// Opening, URLs, schema.

TEST_CASE("sqlite_store: open_store accepts a plain path and sqlite: URLs", "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db"; // absolute: sqlite:///tmp/... -> /tmp/...
  struct form {
    std::string url;
  };
  const std::vector<form> forms = {
      {path}, {"sqlite:" + path}, {"sqlite://" + path}, {"SQLite://" + path}};
  std::uint64_t jobs_created = 0;
  for (const auto& f : forms) {
    INFO("url: " << f.url);
    auto st = open_store(f.url);
    CHECK(st->describe() == path);
    st->create_job("/src", "/dst", "{}");
    ++jobs_created;
    // Every form names the same file, read_write and read_only.
    CHECK(st->jobs(100).size() == jobs_created);
    auto ro = open_store(f.url, open_mode::read_only);
    CHECK(ro->describe() == path);
    CHECK(ro->jobs(100).size() == jobs_created);
  }
  CHECK(std::filesystem::exists(path));
}

TEST_CASE("sqlite_store: open_store rejects unknown URLs and empty paths with bad_url",
          "[sqlite_store]") {
  // (PostgreSQL URLs belong to the PostgreSQL backend and are tested there.)
  struct row {
    std::string url;
    std::string expect; // in the message
  };
  const std::vector<row> rows = {
      {"mysql://db/ms", "unsupported URL scheme 'mysql'"},
      {"sqlite:", "the database path is empty"},
      {"sqlite://", "the database path is empty"},
      {"", "the database path is empty"},
  };
  for (const auto& r : rows) {
    INFO("url: " << r.url);
    auto e = expect_error([&] { open_store(r.url); });
    CHECK(e.code == errc::bad_url);
    CHECK(contains(e.what, "cannot open database '" + r.url + "'"));
    CHECK(contains(e.what, r.expect));
  }
}

TEST_CASE("sqlite_store: opening twice migrates once and records schema_version",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  std::uint64_t job = 0;
  {
    auto st = open_store(path);
    job = st->create_job("/src", "/dst", R"({"workers":4})");
  }
  {
    // Closed without readers, the writer leaves an empty WAL (nothing for the next
    // opener to recover) and did not delete it (which needs an EXCLUSIVE lock).
    std::error_code ec;
    auto wal_size = std::filesystem::file_size(path + "-wal", ec);
    CHECK_FALSE(ec);
    CHECK(wal_size == 0);
  }
  {
    auto st = open_store(path); // second open: nothing to migrate, data intact
    auto j = st->job(job);
    REQUIRE(j);
    CHECK(j->settings == R"({"workers":4})");
  }
  raw_db raw(path);
  auto versions = raw.rows("SELECT version, applied_at FROM schema_version ORDER BY version");
  REQUIRE(versions.size() == static_cast<std::size_t>(storage::sqlite_schema_version));
  CHECK(versions.back()[0] == std::to_string(storage::sqlite_schema_version));
  CHECK(is_iso_ms_utc(versions.back()[1]));
  CHECK(raw.text("PRAGMA journal_mode") == "wal");

  // The column names are a public contract.
  const std::map<std::string, std::set<std::string>> contract = {
      {"sync_jobs",
       {"id", "source_root", "dest_root", "status", "total_files", "processed_files",
        "failed_files", "skipped_files", "processed_bytes", "created_at", "updated_at",
        "finished_at", "settings"}},
      {"file_results",
       {"job_id", "path", "stage", "status", "size", "sha256", "error", "duration_us",
        "recorded_at", "node"}},
      {"media_items",
       {"id", "source_root", "path", "library_path", "size", "mtime_ns", "sha256", "mime",
        "first_job_id", "last_job_id", "missing", "width", "height", "taken_at", "orientation",
        "thumbnail_paths", "preview_path"}},
      {"job_stage_counters", {"job_id", "stage", "ok_files", "failed_files", "skipped_files"}},
  };
  for (const auto& [table, columns] : contract) {
    INFO("table " << table);
    std::set<std::string> found;
    for (const auto& r : raw.rows("SELECT name FROM pragma_table_info('" + table + "')"))
      found.insert(r[0]);
    CHECK(found == columns);
  }
  // file_results is keyed by (job_id, path, stage) without a rowid.
  CHECK(raw.integer("SELECT COUNT(*) FROM pragma_index_list('file_results') WHERE origin = 'pk'") ==
        1);
  CHECK_THROWS(raw.rows("SELECT rowid FROM file_results"));
}

TEST_CASE("sqlite_store: a version 2 database migrates to version 3 and 4 keeping its rows",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  CHECK(storage::sqlite_migration_sql(0).empty());
  CHECK(storage::sqlite_migration_sql(storage::sqlite_schema_version + 1).empty());
  const std::string sha_a(64, 'a');
  const std::string ts = "2026-11-28T12:00:00.000Z";
  {
    // Version 2 exactly as shipped (migrations 1 and 2, as the store applies them),
    // with rows as a version 2 store wrote them.
    raw_db raw(path, true);
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec("CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
             " applied_at TEXT NOT NULL)");
    for (int v = 1; v <= 2; ++v) {
      raw.exec("BEGIN;" + std::string(storage::sqlite_migration_sql(v)) +
               "INSERT INTO schema_version (version, applied_at) VALUES (" + std::to_string(v) +
               ", '" + ts + "'); COMMIT;");
    }
    raw.exec("INSERT INTO sync_jobs (source_root, dest_root, status, total_files,"
             " processed_files, failed_files, skipped_files, processed_bytes, created_at,"
             " updated_at, settings)"
             " VALUES ('/src', '/lib', 'interrupted', 3, 1, 1, 0, 10, '" + ts + "', '" + ts +
             "', '{\"workers\":2}');"
             "INSERT INTO file_results (job_id, path, stage, status, size, sha256, error,"
             " duration_us, recorded_at)"
             " VALUES (1, 'a.jpg', 'sync', 'ok', 10, '" + sha_a + "', NULL, 5, '" + ts + "'),"
             "        (1, 'b.jpg', 'sync', 'failed', 0, NULL, 'open: Permission denied', 5, '" +
             ts + "'),"
             "        (1, 'a.jpg', 'processing', 'ok', 0, NULL, NULL, 5, '" + ts + "');"
             "INSERT INTO job_stage_counters (job_id, stage, ok_files, failed_files,"
             " skipped_files) VALUES (1, 'sync', 1, 1, 0), (1, 'processing', 1, 0, 0);"
             "INSERT INTO media_items (source_root, path, library_path, size, mtime_ns, sha256,"
             " mime, first_job_id, last_job_id, width, height, orientation, thumbnail_paths)"
             " VALUES ('/src', 'a.jpg', '2026/a.jpg', 10, 1000, '" + sha_a + "', 'image/jpeg',"
             " 1, 1, 640, 480, 1, '[\"t/a.jpg\"]');");
  }
  auto stage_counters_equal_rows = [&](raw_db& raw) {
    return raw.integer("SELECT COUNT(*) FROM ("
                       "  SELECT job_id, stage, ok_files, failed_files, skipped_files"
                       "  FROM job_stage_counters"
                       "  EXCEPT"
                       "  SELECT job_id, stage, SUM(status = 'ok'), SUM(status = 'failed'),"
                       "         SUM(status = 'skipped')"
                       "  FROM file_results GROUP BY job_id, stage)") == 0;
  };

  // read_only does not migrate.
  auto e = expect_error([&] { open_store(path, open_mode::read_only); });
  CHECK(e.code == errc::cannot_open);
  CHECK(contains(e.what, "has schema version 2, this mediasync needs version " +
                             std::to_string(storage::sqlite_schema_version)));
  CHECK(raw_db(path).integer("SELECT MAX(version) FROM schema_version") == 2);

  auto st = open_store(path); // read_write: migrates
  {
    raw_db raw(path);
    CHECK(raw.rows("SELECT version FROM schema_version ORDER BY version") ==
          std::vector<std::vector<std::string>>{{"1"}, {"2"}, {"3"}, {"4"}});
    CHECK(raw.integer("SELECT COUNT(*) FROM pragma_table_info('file_results')"
                      " WHERE name = 'node' AND type = 'TEXT' AND \"notnull\" = 0") == 1);
    // Version 4: the constraints are OR chains, the tables keep their names, columns (in
    // order), keys and rows, and still refuse what the old constraints refused.
    CHECK(raw.integer("SELECT COUNT(*) FROM sqlite_schema WHERE sql LIKE '% IN (%'"
                      " AND name IN ('file_results', 'job_stage_counters')") == 0);
    CHECK(raw.integer("SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE '%_v4'") == 0);
    CHECK(raw.rows("SELECT group_concat(name, ',') FROM pragma_table_info('file_results')") ==
          std::vector<std::vector<std::string>>{
              {"job_id,path,stage,status,size,sha256,error,duration_us,recorded_at,node"}});
    CHECK(raw.integer("SELECT COUNT(*) FROM pragma_index_list('file_results')"
                      " WHERE origin = 'pk'") == 1);
    CHECK(raw.integer("SELECT COUNT(*) FROM pragma_index_list('job_stage_counters')"
                      " WHERE origin = 'pk'") == 1);
    CHECK(raw.integer("SELECT COUNT(*) FROM job_stage_counters") == 2);
    CHECK(raw.text("PRAGMA integrity_check") == "ok");
    raw_db rw(path, true);
    for (const char* bad :
         {"INSERT INTO file_results (job_id, path, stage, status, recorded_at)"
          " VALUES (1, 'x', 'thumbnail', 'ok', 't')",
          "INSERT INTO file_results (job_id, path, stage, status, recorded_at)"
          " VALUES (1, 'x', 'sync', 'done', 't')",
          "INSERT INTO job_stage_counters (job_id, stage) VALUES (9, 'Sync')"}) {
      INFO(bad);
      try {
        rw.exec(bad);
        FAIL("accepted");
      } catch (const std::exception& e) {
        CHECK(contains(e.what(), "CHECK constraint failed"));
      }
    }
    // The rows are kept, without a node.
    CHECK(raw.integer("SELECT COUNT(*) FROM file_results") == 3);
    CHECK(raw.integer("SELECT COUNT(*) FROM file_results WHERE node IS NULL") == 3);
    CHECK(raw.text("SELECT error FROM file_results WHERE path = 'b.jpg'") ==
          "open: Permission denied");
  }
  auto j = st->job(1);
  REQUIRE(j);
  CHECK(j->status == job_status::interrupted);
  CHECK(j->processed_bytes == 10);
  CHECK(j->settings == R"({"workers":2})");
  require_counters_match_rows(*st, 1);
  std::vector<known_file> k;
  st->lookup(1, "/src", {"a.jpg", "b.jpg"}, k);
  CHECK(k[0].has_media);
  CHECK(k[0].sha256 == sha_a);
  CHECK(k[0].stages_done == 3u);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/a.jpg"});
  CHECK_FALSE(k[1].has_media);
  CHECK(k[1].stages_done == 1u);

  // The migrated database takes new rows with their node; a row already there
  // (re-sent by a node) keeps its NULL.
  auto with_node = [](file_outcome o, std::string node) {
    o.node = std::move(node);
    return o;
  };
  auto stats = st->commit(
      1, "/src",
      {with_node(stage_outcome(1, "c.jpg", stage::sync, file_status::ok, true), "worker-1"),
       with_node(stage_outcome(1, "c.jpg", stage::processing, file_status::skipped), "")});
  CHECK(stats.inserted == 2);
  stats = st->commit(
      1, "/src",
      {with_node(stage_outcome(1, "a.jpg", stage::sync, file_status::ok, true), "worker-9"),
       with_node(stage_outcome(1, "a.jpg", stage::watermark, file_status::skipped), "worker-2")});
  CHECK(stats.inserted == 1);
  CHECK(stats.duplicates == 1);
  require_counters_match_rows(*st, 1);
  st.reset();
  {
    raw_db raw(path);
    CHECK(raw.rows("SELECT path, stage, node FROM file_results ORDER BY path, stage") ==
          std::vector<std::vector<std::string>>{{"a.jpg", "processing", "<NULL>"},
                                                {"a.jpg", "sync", "<NULL>"},
                                                {"a.jpg", "watermark", "worker-2"},
                                                {"b.jpg", "sync", "<NULL>"},
                                                {"c.jpg", "processing", "<NULL>"},
                                                {"c.jpg", "sync", "worker-1"}});
    CHECK(stage_counters_equal_rows(raw));
  }
  // Opening again migrates nothing; read_only now works.
  open_store(path).reset();
  CHECK(raw_db(path).integer("SELECT COUNT(*) FROM schema_version") == 4);
  auto ro = open_store(path, open_mode::read_only);
  CHECK(ro->job(1)->processed_files == 2);
}

TEST_CASE("sqlite_store: read_only open of a missing file fails naming the path",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "absent.db";
  auto e = expect_error([&] { open_store(path, open_mode::read_only); });
  CHECK(e.code == errc::cannot_open);
  CHECK(contains(e.what, "'" + path + "'"));
  CHECK(contains(e.what, "file does not exist"));
  CHECK_FALSE(std::filesystem::exists(path)); // read_only never creates
}

TEST_CASE("sqlite_store: a file without the mediasync schema is refused", "[sqlite_store]") {
  temp_dir t;
  SECTION("an empty SQLite database, read_only") {
    const std::string path = t / "empty.db";
    raw_db(path, true).exec("PRAGMA user_version = 1"); // creates a valid, table-less file
    auto e = expect_error([&] { open_store(path, open_mode::read_only); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "'" + path + "' has no mediasync schema"));
    // ... and read_only did not create the schema.
    CHECK(raw_db(path).integer("SELECT COUNT(*) FROM sqlite_master") == 0);
  }
  SECTION("another application's database, read_write") {
    const std::string path = t / "other.db";
    raw_db(path, true).exec("CREATE TABLE foo (x)");
    auto e = expect_error([&] { open_store(path); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "'" + path + "' is not a mediasync database"));
    CHECK(raw_db(path).integer("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sync_jobs'") == 0);
  }
  SECTION("a text file, both modes") {
    const std::string path = t / "notes.txt";
    std::ofstream(path) << std::string(4096, 'x');
    for (auto mode : {open_mode::read_write, open_mode::read_only}) {
      auto e = expect_error([&] { open_store(path, mode); });
      CHECK(e.code == errc::cannot_open);
      CHECK(contains(e.what, "'" + path + "'"));
      CHECK(contains(e.what, "not a database"));
    }
  }
}

TEST_CASE("sqlite_store: a schema newer than the binary is refused in both modes",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  open_store(path).reset();
  const int newer = storage::sqlite_schema_version + 41;
  raw_db(path, true).exec("INSERT INTO schema_version (version, applied_at) VALUES (" +
                          std::to_string(newer) + ", '2030-01-01T00:00:00.000Z')");
  for (auto mode : {open_mode::read_write, open_mode::read_only}) {
    auto e = expect_error([&] { open_store(path, mode); });
    CHECK(e.code == errc::schema_too_new);
    CHECK(contains(e.what, "'" + path + "'"));
    CHECK(contains(e.what, "schema version " + std::to_string(newer)));
    CHECK(contains(e.what, "version " + std::to_string(storage::sqlite_schema_version)));
  }
}

TEST_CASE("sqlite_store: an unopenable location is reported with the path and the cause",
          "[sqlite_store]") {
  temp_dir t;
  std::ofstream(t / "plain_file") << "x";
  std::filesystem::create_directory(t / "a_dir");
  struct row {
    std::string path;
    open_mode mode;
    std::string cause;
  };
  const std::vector<row> rows = {
      {t / "no/such/dir/ms.db", open_mode::read_write,
       "(directory '" + (t / "no/such/dir") + "' does not exist)"},
      {t / "no/such/dir/ms.db", open_mode::read_only,
       "(directory '" + (t / "no/such/dir") + "' does not exist)"},
      {t / "plain_file/ms.db", open_mode::read_write,
       "('" + (t / "plain_file") + "' is not a directory)"},
      {t / "a_dir", open_mode::read_write, "('" + (t / "a_dir") + "' is a directory)"},
  };
  for (const auto& r : rows) {
    INFO("path " << r.path);
    auto e = expect_error([&] { open_store(r.path, r.mode); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "cannot open database '" + r.path + "'"));
    CHECK(contains(e.what, r.cause));
  }
}

// ---------------------------------------------------------------------------
// Commit: the stored forms. (The behaviours themselves - counters, re-applying,
// overlapping batches, failing commits, jobs, read_only - are in the contract.)

TEST_CASE("sqlite_store: commit stores empty text as NULL, ISO-8601 times and media rows",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  auto st = open_store(path);
  auto job = st->create_job("/src", "/lib", "{}");
  REQUIRE(st->commit(job, "/src", mixed_batch(job, 0, 50)).inserted == 50); // 30 ok

  raw_db raw(path);
  CHECK(raw.integer("SELECT COUNT(*) FROM file_results") == 50);
  CHECK(raw.integer("SELECT COUNT(*) FROM media_items") == 30);
  // Empty optional text is NULL; timestamps are ISO-8601 UTC with milliseconds.
  auto r = raw.rows("SELECT status, sha256, error, recorded_at, stage, duration_us FROM file_results"
                    " WHERE path = 'dir0000/file000003.jpg'");
  REQUIRE(r.size() == 1);
  CHECK(r[0][0] == "failed");
  CHECK(r[0][1] == "<NULL>");
  CHECK(r[0][2] == "open: Permission denied");
  CHECK(is_iso_ms_utc(r[0][3]));
  CHECK(r[0][4] == "sync");
  CHECK(r[0][5] == "42");
  auto m = raw.rows("SELECT sha256, mime, library_path, first_job_id, last_job_id, missing"
                    " FROM media_items WHERE path = 'dir0000/file000000.jpg'");
  REQUIRE(m.size() == 1);
  CHECK(m[0] == std::vector<std::string>{std::string(64, 'a'), "image/jpeg",
                                         "2026/11/28/dir0000/file000000.jpg", std::to_string(job),
                                         std::to_string(job), "0"});
}

TEST_CASE("sqlite_store: re-applying a batch leaves the stored rows unchanged", "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  auto st = open_store(path);
  auto job = st->create_job("/src", "/lib", "{}");
  auto batch = mixed_batch(job, 0, 40);
  REQUIRE(st->commit(job, "/src", batch).inserted == 40);
  raw_db raw(path);
  const std::string media_q =
      "SELECT path, size, mtime_ns, sha256, mime, library_path, first_job_id, last_job_id, missing"
      " FROM media_items ORDER BY path";
  const std::string results_q =
      "SELECT job_id, path, stage, status, size, sha256, error, duration_us, recorded_at"
      " FROM file_results ORDER BY path";
  auto media_before = raw.rows(media_q);
  auto results_before = raw.rows(results_q);

  SECTION("the same batch again") {
    REQUIRE(st->commit(job, "/src", batch).duplicates == 40);
  }
  SECTION("the same keys with different content") {
    for (auto& o : batch) {
      o.size += 1;
      o.sha256 = std::string(64, 'b');
      o.status = file_status::ok;
      o.touches_media = true;
    }
    REQUIRE(st->commit(job, "/src", batch).duplicates == 40);
  }
  CHECK(raw.rows(media_q) == media_before);
  CHECK(raw.rows(results_q) == results_before);
  CHECK(raw.integer("SELECT COUNT(*) FROM file_results") == 40);
}

TEST_CASE("sqlite_store: a row violating the schema fails naming the CHECK constraint",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  auto st = open_store(path);
  auto job = st->create_job("/src", "/lib", "{}");
  auto ghost = job + 7;
  auto e = expect_error([&] { st->commit(ghost, "/src", mixed_batch(ghost, 0, 20)); });
  CHECK(e.code == errc::not_found);
  auto batch = mixed_batch(job, 0, 20);
  batch.back().status = static_cast<file_status>(7); // violates the status CHECK
  e = expect_error([&] { st->commit(job, "/src", batch); });
  CHECK(e.code == errc::io);
  CHECK(contains(e.what, "'" + path + "'"));
  CHECK(contains(e.what, "CHECK constraint failed"));
  raw_db raw(path);
  CHECK(raw.integer("SELECT COUNT(*) FROM file_results") == 0);
  CHECK(raw.integer("SELECT COUNT(*) FROM media_items") == 0);
  CHECK(raw.integer("SELECT COUNT(*) FROM job_stage_counters") == 0);
}

TEST_CASE("sqlite_store: a second writer makes commit fail at once, without retrying",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  auto st = open_store(path);
  auto job = st->create_job("/src", "/lib", "{}");
  raw_db other(path, true);
  other.exec("BEGIN IMMEDIATE"); // holds the write lock
  auto e = expect_error([&] { st->commit(job, "/src", mixed_batch(job, 0, 10)); });
  CHECK(e.code == errc::io);
  CHECK(contains(e.what, "'" + path + "'"));
  CHECK(contains(e.what, "locked"));
  other.exec("COMMIT");
  CHECK(st->commit(job, "/src", mixed_batch(job, 0, 10)).inserted == 10);
  require_counters_match_rows(*st, job);
}

// ---------------------------------------------------------------------------
// Paths and media_items: the stored bytes and job ids. (The behaviours - odd
// names, the media upsert, lookup, mark_missing - are in the contract.)

TEST_CASE("sqlite_store: odd path bytes are stored exactly as given", "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  // The contract's round trip, then what it left in the file.
  odd_names_round_trip([&](open_mode mode) { return open_store(path, mode); });
  const std::string root = std::string("/src\n'root' \xfe"); // odd_names_round_trip's root
  const auto& names = odd_names();

  raw_db raw(path);
  std::set<std::string> stored, expected(names.begin(), names.end());
  for (const auto& r : raw.rows("SELECT path FROM media_items")) stored.insert(r[0]);
  CHECK(stored == expected);
  stored.clear();
  for (const auto& r : raw.rows("SELECT path FROM media_items WHERE source_root = ?", {root}))
    stored.insert(r[0]);
  CHECK(stored == expected);
  expected.insert(std::string("failed \xff.jpg"));
  stored.clear();
  for (const auto& r : raw.rows("SELECT path FROM file_results")) stored.insert(r[0]);
  CHECK(stored == expected);
  for (const auto& n : names) {
    INFO("name " << n);
    CHECK(raw.text("SELECT library_path FROM media_items WHERE path = ?", {n}) == "lib/" + n);
  }
  CHECK(raw.text("SELECT error FROM file_results WHERE path = ?", {"failed \xff.jpg"}) ==
        "cannot open 'failed \xff.jpg': Permission denied");
  CHECK(raw.integer("SELECT COUNT(*) FROM sync_jobs") == 2); // the injection stayed data
  CHECK(raw.integer("SELECT COUNT(*) FROM sync_jobs WHERE source_root = ?", {root}) == 2);
  CHECK(raw.integer("SELECT COUNT(*) FROM sync_jobs WHERE dest_root = ?", {"/lib \xff\""}) == 2);
}

TEST_CASE("sqlite_store: media_items upsert keeps first_job_id and sets last_job_id",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  auto st = open_store(path);
  raw_db raw(path);
  const std::string q =
      "SELECT size, mtime_ns, sha256, mime, library_path, first_job_id, last_job_id, missing"
      " FROM media_items WHERE source_root = '/src' AND path = 'a.jpg'";
  auto j1 = st->create_job("/src", "/lib", "{}");
  st->commit(j1, "/src", {outcome(j1, "a.jpg", file_status::ok, 10, true)});
  CHECK(raw.rows(q)[0] == std::vector<std::string>{"10", std::to_string(1'700'000'000'000'000'010LL),
                                                   std::string(64, 'a'), "image/jpeg",
                                                   "2026/11/28/a.jpg", std::to_string(j1),
                                                   std::to_string(j1), "0"});

  SECTION("a changed file: everything but first_job_id is replaced") {
    auto j2 = st->create_job("/src", "/lib", "{}");
    auto o = outcome(j2, "a.jpg", file_status::ok, 20, true);
    o.sha256 = std::string(64, 'c');
    o.mime = "image/png";
    o.library_path = "2026/11/29/a.png";
    st->commit(j2, "/src", {o});
    CHECK(raw.rows(q)[0] ==
          std::vector<std::string>{"20", std::to_string(o.mtime_ns), std::string(64, 'c'),
                                   "image/png", "2026/11/29/a.png", std::to_string(j1),
                                   std::to_string(j2), "0"});
  }
  SECTION("an unchanged skip without a hash refreshes last_job_id and keeps the content fields") {
    auto j2 = st->create_job("/src", "/lib", "{}");
    auto o = outcome(j2, "a.jpg", file_status::skipped, 10, true);
    o.error.clear();
    st->commit(j2, "/src", {o});
    CHECK(raw.rows(q)[0] == std::vector<std::string>{"10", std::to_string(o.mtime_ns),
                                                     std::string(64, 'a'), "image/jpeg",
                                                     "2026/11/28/a.jpg", std::to_string(j1),
                                                     std::to_string(j2), "0"});
  }
  SECTION("an outcome without touches_media leaves the row alone") {
    auto j2 = st->create_job("/src", "/lib", "{}");
    st->commit(j2, "/src", {outcome(j2, "a.jpg", file_status::failed, 99, false)});
    CHECK(raw.rows(q)[0][6] == std::to_string(j1));
    CHECK(raw.rows(q)[0][0] == "10");
  }
  CHECK(raw.integer("SELECT COUNT(*) FROM media_items") == 1);
}

// ---------------------------------------------------------------------------
// Readers.

namespace {

const char* consistency_query =
    "SELECT j.processed_files, j.failed_files, j.skipped_files, j.processed_bytes,"
    " (SELECT COUNT(*) FROM file_results f WHERE f.job_id = j.id AND f.status = 'ok'),"
    " (SELECT COUNT(*) FROM file_results f WHERE f.job_id = j.id AND f.status = 'failed'),"
    " (SELECT COUNT(*) FROM file_results f WHERE f.job_id = j.id AND f.status = 'skipped'),"
    " (SELECT COALESCE(SUM(size), 0) FROM file_results f"
    "   WHERE f.job_id = j.id AND f.status = 'ok')"
    " FROM sync_jobs j WHERE j.id = ?";

} // namespace

TEST_CASE("sqlite_store: a second connection sees counters equal to row counts while commits happen",
          "[sqlite_store]") {
  temp_dir t;
  const std::string path = t / "ms.db";
  auto st = open_store(path);
  auto job = st->create_job("/src", "/lib", "{}");
  const std::string job_s = std::to_string(job);

  SECTION("reading between commits") {
    raw_db reader(path);
    std::uint64_t total = 0;
    for (int i = 0; i < 30; ++i) {
      total += st->commit(job, "/src", mixed_batch(job, i * 20, 20)).inserted;
      auto r = reader.rows(consistency_query, {job_s});
      REQUIRE(r.size() == 1);
      INFO("after commit " << i);
      CHECK(r[0][0] == r[0][4]);
      CHECK(r[0][1] == r[0][5]);
      CHECK(r[0][2] == r[0][6]);
      CHECK(r[0][3] == r[0][7]);
      CHECK(std::stoull(r[0][0]) + std::stoull(r[0][1]) + std::stoull(r[0][2]) == total);
    }
  }
  SECTION("reading concurrently from another thread") {
    std::atomic<bool> done{false};
    std::atomic<int> reads{0}, mismatches{0};
    std::atomic<bool> reader_failed{false};
    std::string reader_error; // written by the reader thread only, read after join
    std::thread reader([&] {
      try {
        raw_db db(path);
        while (!done.load()) {
          auto r = db.rows(consistency_query, {job_s});
          if (r.size() != 1 || r[0][0] != r[0][4] || r[0][1] != r[0][5] || r[0][2] != r[0][6] ||
              r[0][3] != r[0][7])
            ++mismatches;
          ++reads;
        }
      } catch (const std::exception& e) {
        reader_error = e.what();
        reader_failed = true;
      }
    });
    for (int i = 0; i < 200; ++i) {
      st->commit(job, "/src", mixed_batch(job, i * 50, 50));
      if (i == 100)
        while (reads.load() == 0 && !reader_failed.load()) std::this_thread::yield();
    }
    done = true;
    reader.join();
    CHECK(reader_error.empty());
    CHECK(reads.load() > 0);
    CHECK(mismatches.load() == 0);
    require_counters_match_rows(*st, job);
    CHECK(st->count_rows(job).ok + st->count_rows(job).failed + st->count_rows(job).skipped ==
          10000);
  }
}

TEST_CASE("sqlite_store: closing the writer never makes a polling reader fail",
          "[sqlite_store]") {
  // Like a web app polling the database: a fresh read-only connection per poll,
  // while the writer commits, closes, and after. (The default SQLite close takes an
  // EXCLUSIVE lock to checkpoint; a reader opening then fails with "database is
  // locked".) The reader pauses only while the writer opens: a first connection
  // runs WAL recovery, and one opening during it gets SQLITE_BUSY_RECOVERY.
  temp_dir t;
  const std::string path = t / "ms.db";
  enum { polling, pause_requested, paused };
  std::atomic<int> state{paused};
  std::atomic<bool> done{false}, reader_failed{false};
  std::atomic<int> polls{0};
  std::atomic<std::uint64_t> job_id{0};
  std::vector<std::string> errors; // reader thread only until join
  std::thread reader([&] {
    while (!done.load()) {
      int expected = pause_requested;
      if (state.compare_exchange_strong(expected, paused) || expected == paused) {
        std::this_thread::yield();
        continue;
      }
      try {
        raw_db db(path);
        db.exec("BEGIN");
        auto r = db.rows(consistency_query, {std::to_string(job_id.load())});
        db.exec("COMMIT");
        if (r.size() != 1 || r[0][0] != r[0][4] || r[0][3] != r[0][7])
          errors.push_back("counters disagree with rows");
        ++polls;
      } catch (const std::exception& e) {
        errors.push_back(e.what());
        reader_failed = true;
      }
    }
  });
  auto wait_for_polls = [&](int n) {
    int target = polls.load() + n;
    while (polls.load() < target && !reader_failed.load()) std::this_thread::yield();
  };
  auto pause_reader = [&] {
    int expected = polling;
    state.compare_exchange_strong(expected, pause_requested);
    while (state.load() != paused && !reader_failed.load()) std::this_thread::yield();
  };
  std::string writer_error;
  const int cycles = 8;
  try {
    for (int c = 0; c < cycles && !reader_failed.load(); ++c) {
      pause_reader();
      auto st = open_store(path);
      auto job = st->create_job("/src", "/lib", "{}");
      job_id = job;
      state = polling;
      wait_for_polls(3);
      for (int i = 0; i < 20; ++i) st->commit(job, "/src", mixed_batch(job, i * 50, 50));
      wait_for_polls(3);
      st.reset(); // close while the reader keeps polling
      wait_for_polls(5);
    }
  } catch (const std::exception& e) {
    writer_error = e.what();
  }
  done = true;
  reader.join();
  CHECK(writer_error == "");
  for (const auto& e : errors) UNSCOPED_INFO(e);
  CHECK(errors.empty());
  CHECK(polls.load() >= cycles * 11);
  auto ro = open_store(path, open_mode::read_only);
  CHECK(ro->jobs(100).size() == static_cast<std::size_t>(cycles));
  require_counters_match_rows(*ro, job_id.load());
}

TEST_CASE("sqlite_store: a new database file appears complete by a rename",
          "[sqlite_store]") {
  // A reader polling for the file must never find it empty or without tables: the
  // store builds it under a temporary name and renames it into place.
  temp_dir t;
  const std::string path = t / "ms.db";
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  REQUIRE(in >= 0);
  REQUIRE(::inotify_add_watch(in, t.path().c_str(), IN_CREATE | IN_MOVED_TO) >= 0);
  open_store(path).reset();
  std::vector<std::pair<std::string, std::uint32_t>> events;
  alignas(inotify_event) char buf[8192];
  for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;) {
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      if (ev->len) events.emplace_back(ev->name, ev->mask);
      p += sizeof(inotify_event) + ev->len;
    }
  }
  ::close(in);
  bool created_in_place = false, renamed_in = false;
  for (const auto& [name, mask] : events) {
    if (name != "ms.db") continue;
    if (mask & IN_CREATE) created_in_place = true;
    if (mask & IN_MOVED_TO) renamed_in = true;
  }
  CHECK_FALSE(created_in_place);
  CHECK(renamed_in);
  // Nothing of the construction is left behind, and the file is complete.
  for (const auto& e : std::filesystem::directory_iterator(t.path()))
    CHECK(e.path().filename().string().find("creating") == std::string::npos);
  raw_db raw(path);
  CHECK(raw.text("PRAGMA journal_mode") == "wal");
  CHECK(raw.integer("SELECT COUNT(*) FROM sqlite_master WHERE name IN"
                    " ('schema_version', 'sync_jobs', 'file_results', 'media_items')") == 4);
  // Opening an existing file does not replace it.
  raw_db(path, true).exec("INSERT INTO sync_jobs (source_root, dest_root, status, created_at,"
                          " updated_at) VALUES ('/s', '/d', 'running', 'x', 'x')");
  CHECK(open_store(path)->jobs(10).size() == 1);
}
