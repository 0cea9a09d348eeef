// Tests of the PostgreSQL store (storage/postgres_store.*, the postgres branch of
// storage/store.cpp) against a real PostgreSQL 15 server (tests/pg_server.sh,
// a CTest fixture). Every test works in a fresh database of its own
// (tests/pg_test_db.hpp), dropped at the end; a second connection checks what
// actually landed in the tables.
//
// The backend-independent behaviours are in tests/store_contract.* (functions
// taking a store factory), run here on PostgreSQL with checks of the tables.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "pg_test_db.hpp"
#include "storage/postgres_store.hpp"
#include "storage/store.hpp"
#include "store_contract.hpp"
#include "test_util.hpp"

namespace {

using namespace ms;
using namespace ms::test::contract;
using ms::storage::errc;
using ms::storage::open_mode;
using ms::storage::open_store;
using ms::test::pg_database;

open_fn opener(const std::string& url) {
  return [url](open_mode mode) { return open_store(url, mode); };
}

/// The contract's SQL reads on `db` (which must outlive the probe).
probe pg_probe(const pg_database& db) {
  probe pr;
  pr.stage_counters = [&db](std::uint64_t job) {
    return counters_matrix(db.rows("SELECT stage, ok_files, failed_files, skipped_files"
                                   " FROM job_stage_counters WHERE job_id = $1",
                                   {std::to_string(job)}));
  };
  pr.stage_rows = [&db](std::uint64_t job) {
    return rows_matrix(db.rows("SELECT stage, status, count(*) FROM file_results"
                               " WHERE job_id = $1 GROUP BY stage, status",
                               {std::to_string(job)}));
  };
  pr.image = [&db](const std::string& root,
                   const std::string& path) -> std::optional<image_columns> {
    auto r = db.rows("SELECT width, height, orientation,"
                     " to_char(taken_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),"
                     " thumbnail_paths IS NOT NULL"
                     " FROM media_items WHERE source_root = $1 AND source_root_raw IS NULL"
                     " AND path = $2 AND path_raw IS NULL",
                     {root, path});
    if (r.empty()) return std::nullopt;
    return image_columns_of(r[0], "t");
  };
  pr.nodes = [&db](std::uint64_t job) {
    return db.rows("SELECT path, stage, node FROM file_results WHERE job_id = $1"
                   " ORDER BY path, stage",
                   {std::to_string(job)});
  };
  return pr;
}

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
int unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

} // namespace

// ---------------------------------------------------------------------------
// The shared behaviours, on PostgreSQL.

TEST_CASE("postgres_store: commit keeps counters equal to the rows", "[postgres]") {
  pg_database db;
  commit_keeps_counters_equal_to_rows(opener(db.url()));
  // What landed: optional text NULL when empty, timestamps, media rows.
  auto r = db.rows("SELECT status, sha256, error, stage, duration_us, path_raw,"
                   " recorded_at > now() - interval '1 hour'"
                   " FROM file_results WHERE path = 'dir0000/file000003.jpg'");
  REQUIRE(r.size() == 1);
  CHECK(r[0] == std::vector<std::string>{"failed", "<NULL>", "open: Permission denied", "sync",
                                         "42", "<NULL>", "t"});
  auto m = db.rows("SELECT sha256, mime, library_path, first_job_id, last_job_id, missing,"
                   " path_raw, source_root_raw"
                   " FROM media_items WHERE path = 'dir0000/file000000.jpg'");
  REQUIRE(m.size() == 1);
  CHECK(m[0] == std::vector<std::string>{std::string(64, 'a'), "image/jpeg",
                                         "2026/11/28/dir0000/file000000.jpg", "1", "1", "f",
                                         "<NULL>", "<NULL>"});
  CHECK(db.integer("SELECT count(*) FROM file_results") == 500);
  CHECK(db.integer("SELECT count(*) FROM media_items") == 300);
}

TEST_CASE("postgres_store: re-applying a batch is a no-op", "[postgres]") {
  pg_database db;
  reapplying_a_batch_is_a_noop(opener(db.url()));
  CHECK(db.integer("SELECT count(*) FROM file_results") == 50);
}

TEST_CASE("postgres_store: a failing commit writes nothing", "[postgres]") {
  pg_database db;
  failing_commits_write_nothing(opener(db.url()));
  CHECK(db.integer("SELECT count(*) FROM file_results") == 20);
}

TEST_CASE("postgres_store: jobs are created, finished, totalled and listed", "[postgres]") {
  pg_database db;
  jobs_are_created_finished_totalled_and_listed(opener(db.url()));
  CHECK(db.text("SELECT pg_typeof(settings)::text FROM sync_jobs LIMIT 1") == "jsonb");
  CHECK(db.text("SELECT settings->>'dry_run' FROM sync_jobs WHERE source_root = '/src/a'") ==
        "false");
}

TEST_CASE("postgres_store: odd name bytes round-trip exactly", "[postgres]") {
  pg_database db;
  odd_names_round_trip(opener(db.url()));

  // Plain SQL reads well: exact names as they are, the others in display form
  // with the exact bytes in path_raw.
  const auto& names = odd_names();
  std::set<std::string> exact_bytes, expected;
  for (const auto& r : db.rows("SELECT COALESCE(path_raw, convert_to(path, 'UTF8'))"
                               " FROM media_items"))
    exact_bytes.insert(r[0]);
  for (const auto& n : names) expected.insert(ms::test::pg_hex(n));
  CHECK(exact_bytes == expected);
  CHECK(db.text("SELECT path FROM media_items WHERE path_raw = $1::bytea",
                {ms::test::pg_hex("bad\xff\xfe utf8.jpg")}) == "bad\\xff\\xfe utf8.jpg");
  CHECK(db.text("SELECT path FROM media_items WHERE path_raw = $1::bytea",
                {ms::test::pg_hex(std::string("nul \0 inside", 12))}) == "nul \\x00 inside");
  CHECK(db.text("SELECT path FROM media_items WHERE path_raw = $1::bytea",
                {ms::test::pg_hex("surrogate \xed\xa0\x80.jpg")}) ==
        "surrogate \\xed\\xa0\\x80.jpg");
  // The valid name "\xff" and the byte 0xff share a display form: two rows.
  CHECK(db.integer("SELECT count(*) FROM media_items WHERE path = '\\xff'") == 2);
  CHECK(db.integer("SELECT count(*) FROM file_results WHERE path = '\\xff'") == 4); // two jobs
  CHECK(db.text("SELECT path FROM file_results WHERE path = $1", {"'; DROP TABLE sync_jobs; --"}) ==
        "'; DROP TABLE sync_jobs; --");
  CHECK(db.integer("SELECT count(*) FROM media_items WHERE path_raw IS NULL") ==
        static_cast<long long>(names.size()) - 6);
  CHECK(db.integer("SELECT count(*) FROM sync_jobs") == 2); // the injection stayed data
  CHECK(db.text("SELECT source_root FROM sync_jobs LIMIT 1") == "/src\n'root' \\xfe");
  CHECK(db.text("SELECT error FROM file_results WHERE error_raw IS NOT NULL") ==
        "cannot open 'failed \\xff.jpg': Permission denied");
  bool exact = true;
  CHECK(storage::pg_display_form("a\xff" "b", exact) == "a\\xffb");
  CHECK_FALSE(exact);
  CHECK(storage::pg_display_form("caf\xc3\xa9", exact) == "caf\xc3\xa9");
  CHECK(exact);
}

TEST_CASE("postgres_store: media_items upsert keeps first_job_id and updates the rest",
          "[postgres]") {
  pg_database db;
  media_upsert_keeps_first_job_id(opener(db.url()));
  auto r = db.rows("SELECT first_job_id, last_job_id, missing FROM media_items");
  REQUIRE(r.size() == 1);
  CHECK(r[0] == std::vector<std::string>{"1", "3", "f"});
}

TEST_CASE("postgres_store: lookup reports media rows and the results of the job", "[postgres]") {
  pg_database db;
  lookup_reports_media_and_results(opener(db.url()));
}

TEST_CASE("postgres_store: mark_missing marks only items the job did not see", "[postgres]") {
  pg_database db;
  mark_missing_marks_only_unseen(opener(db.url()));
  CHECK(db.integer("SELECT count(*) FROM media_items WHERE missing") == 1); // d.jpg
}

TEST_CASE("postgres_store: lookup reports the stages done", "[postgres]") {
  pg_database db;
  lookup_reports_the_stages_done(opener(db.url()));
  CHECK(db.integer("SELECT count(*) FROM file_results") == 6);
  CHECK(db.integer("SELECT count(*) FROM media_items") == 1);
}

TEST_CASE("postgres_store: a read_only store reads and refuses to write", "[postgres]") {
  pg_database db;
  read_only_reads_and_refuses_writes(opener(db.url()));
}

TEST_CASE("postgres_store: job_stage_counters equal the rows of each stage", "[postgres]") {
  pg_database db;
  stage_counters_equal_the_rows_of_each_stage(opener(db.url()), pg_probe(db));
  // The same, in one query over every job.
  CHECK(db.integer("SELECT count(*) FROM ("
                   "  SELECT job_id, stage, ok_files, failed_files, skipped_files"
                   "  FROM job_stage_counters"
                   "  EXCEPT"
                   "  SELECT job_id, stage, count(*) FILTER (WHERE status = 'ok'),"
                   "         count(*) FILTER (WHERE status = 'failed'),"
                   "         count(*) FILTER (WHERE status = 'skipped')"
                   "  FROM file_results GROUP BY job_id, stage) AS diff") == 0);
  CHECK(db.integer("SELECT count(*) FROM job_stage_counters") == 5); // 3 + 2 stages of `other`
}

TEST_CASE("postgres_store: commit stats count exactly the new rows by stage and status",
          "[postgres][metrics]") {
  pg_database db;
  // The first commit takes the COPY path, the redone ones ms_commit_redo.
  commit_stats_count_exactly_the_new_rows(opener(db.url()), pg_probe(db));
}

TEST_CASE("postgres_store: result rows record the node, on the first try and on the redo",
          "[postgres]") {
  pg_database db;
  // The first commit takes the COPY path, the re-commit with new rows ms_commit_redo.
  results_record_the_node(opener(db.url()), pg_probe(db));
  CHECK(db.integer("SELECT count(*) FROM file_results WHERE node IS NULL") == 3);
  CHECK(db.integer("SELECT count(*) FROM file_results WHERE node = ''") == 0);
  CHECK(db.text("SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM file_results"
                " WHERE node LIKE 'worker-%'") == "worker-1,worker-2,worker-3");
}

TEST_CASE("postgres_store: processing and watermark outcomes write the image columns",
          "[postgres]") {
  pg_database db;
  image_stages_write_the_media_columns(opener(db.url()), pg_probe(db));
  // Types and forms in plain SQL.
  auto r = db.rows("SELECT width, height, orientation, taken_at = '2022-02-03T04:05:06Z',"
                   " jsonb_typeof(thumbnail_paths), thumbnail_paths->>0, preview_path,"
                   " preview_path_raw"
                   " FROM media_items WHERE path = 'a.jpg'");
  REQUIRE(r.size() == 1);
  CHECK(r[0] == std::vector<std::string>{"2000", "1500", "8", "t", "array",
                                         ".thumbnails/512/a.jpg.jpg", ".previews/v2/a.jpg.jpg",
                                         "<NULL>"});
  // A preview path that is not UTF-8: display form plus the exact bytes.
  r = db.rows("SELECT preview_path, preview_path_raw, thumbnail_paths->>0"
              " FROM media_items WHERE path = 'e.jpg'");
  REQUIRE(r.size() == 1);
  CHECK(r[0][0] == "p/bad \\xff\\xfe name\n'\".jpg");
  CHECK(r[0][1] == ms::test::pg_hex("p/bad \xff\xfe name\n'\".jpg"));
  CHECK(r[0][2] == "t/bad \xef\xbf\xbd.jpg");
}

TEST_CASE("postgres_store: a sync outcome with new content clears thumbnails and preview",
          "[postgres]") {
  pg_database db;
  new_content_clears_the_derived_files(opener(db.url()), pg_probe(db));
  CHECK(db.text("SELECT preview_path_raw IS NULL AND preview_path IS NULL"
                " AND thumbnail_paths IS NULL FROM media_items WHERE path = 'late.jpg'") == "t");
}

TEST_CASE("postgres_store: taken_at is parsed safely, thumbnail paths are JSON", "[postgres]") {
  std::string lit;
  struct row {
    std::string in, out; // out "" = refused
  };
  const std::vector<row> rows = {
      {"2021-07-04T12:30:00", "2021-07-04 12:30:00+00:00"},
      {"2021-07-04 12:30:00", "2021-07-04 12:30:00+00:00"},
      {"2021-07-04T12:30:00Z", "2021-07-04 12:30:00+00:00"},
      {"2021-07-04T12:30:00+02:00", "2021-07-04 12:30:00+02:00"},
      {"2021-07-04T12:30:00-0530", "2021-07-04 12:30:00-05:30"},
      {"2021-07-04T12:30:00+09", "2021-07-04 12:30:00+09:00"},
      {"2021-07-04T12:30:00.5", "2021-07-04 12:30:00.5+00:00"},
      {"2021-07-04T12:30:00,1234567Z", "2021-07-04 12:30:00.123456+00:00"},
      {"2000-02-29T00:00:00", "2000-02-29 00:00:00+00:00"},
      {"2016-12-31T23:59:60", "2016-12-31 23:59:60+00:00"},
      {"", ""},
      {"2021-07-04", ""},
      {"2021:07:04 12:30:00", ""}, // EXIF's own form: the worker converts it
      {"1900-02-29T00:00:00", ""},
      {"2021-02-30T00:00:00", ""},
      {"2021-13-01T00:00:00", ""},
      {"0000-01-01T00:00:00", ""},
      {"2021-07-04T24:00:00", ""},
      {"2021-07-04T12:60:00", ""},
      {"2021-07-04T12:30:61", ""},
      {"2021-07-04T12:30:00+16:00", ""},
      {"2021-07-04T12:30:00+02:60", ""},
      {"2021-07-04T12:30:00+2", ""},
      {"2021-07-04T12:30:00.", ""},
      {"2021-07-04T12:30:00 ", ""},
      {"2021-07-04T12:30:00x", ""},
      {"2021-07-04T12:30:00'; DROP TABLE media_items; --", ""},
      {std::string("2021-07-04T12:30:00\0", 20), ""},
      {"+2021-07-04T12:30:00", ""},
  };
  for (const auto& r : rows) {
    INFO("'" << r.in << "'");
    CHECK(storage::pg_timestamptz_literal(r.in, lit) == !r.out.empty());
    CHECK(lit == r.out);
  }

  pg_database db;
  auto st = open_store(db.url());
  auto job = st->create_job("/src", "/lib", "{}");
  std::vector<file_outcome> b;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string p = "img" + std::to_string(i) + ".jpg";
    b.push_back(outcome(job, p, file_status::ok, 10, true));
    b.push_back(processing_ok(job, p, 1, 1, 1, rows[i].in, {"t/" + p}));
  }
  // NUL (no file name holds one; jsonb refuses it) becomes U+FFFD too.
  b.push_back(outcome(job, "nul.jpg", file_status::ok, 10, true));
  b.push_back(processing_ok(job, "nul.jpg", 1, 1, 1, "", {std::string("t/a\0b.jpg", 9)}));
  // Out of range for smallint: NULL rather than a failed commit.
  b.push_back(outcome(job, "orient.jpg", file_status::ok, 10, true));
  b.push_back(processing_ok(job, "orient.jpg", 1, 1, 70000, "", {}));
  REQUIRE(st->commit(job, "/src", b).inserted == b.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO("'" << rows[i].in << "'");
    std::string p = "img" + std::to_string(i) + ".jpg";
    std::string stored = db.text("SELECT COALESCE((taken_at = $1::timestamptz)::text, 'null')"
                                 " FROM media_items WHERE path = $2",
                                 {rows[i].out.empty() ? "2000-01-01Z" : rows[i].out, p});
    CHECK(stored == (rows[i].out.empty() ? "null" : "true"));
  }
  // The wall-clock time of a time without offset reads back unchanged in UTC.
  CHECK(db.text("SELECT to_char(taken_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                " FROM media_items WHERE path = 'img0.jpg'") == "2021-07-04 12:30:00");
  CHECK(db.text("SELECT thumbnail_paths->>0 FROM media_items WHERE path = 'nul.jpg'") ==
        "t/a\xef\xbf\xbd" "b.jpg");
  CHECK(db.text("SELECT COALESCE(orientation::text, 'null') FROM media_items"
                " WHERE path = 'orient.jpg'") == "null");
  std::vector<known_file> k;
  st->lookup(job, "/src", {"nul.jpg"}, k);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/a\xef\xbf\xbd" "b.jpg"});
  // A thumbnail_paths that is not an array is refused by the schema.
  CHECK_THROWS_WITH(
      db.exec("UPDATE media_items SET thumbnail_paths = '{\"a\": 1}' WHERE path = 'nul.jpg'"),
      Catch::Contains("media_items_thumbnail_paths_array"));
}

// ---------------------------------------------------------------------------
// Opening, URLs, schema.

TEST_CASE("postgres_store: opening migrates once and records schema_version", "[postgres]") {
  pg_database db;
  std::uint64_t job = 0;
  {
    auto st = open_store(db.url());
    CHECK(st->describe() == db.url());
    job = st->create_job("/src", "/dst", R"({"workers":4})");
  }
  for (int i = 0; i < 2; ++i) {
    auto st = open_store(db.url()); // nothing to migrate, data intact
    REQUIRE(st->job(job));
    CHECK(st->job(job)->settings == R"({"workers":4})");
  }
  auto versions = db.rows("SELECT version, applied_at <= now() FROM schema_version ORDER BY 1");
  REQUIRE(versions.size() == static_cast<std::size_t>(storage::postgres_schema_version));
  CHECK(versions.back() ==
        std::vector<std::string>{std::to_string(storage::postgres_schema_version), "t"});

  // The column names and types are a public contract.
  auto cols = db.rows("SELECT table_name, column_name, data_type FROM information_schema.columns"
                      " WHERE table_schema = current_schema()"
                      " ORDER BY table_name, ordinal_position");
  std::set<std::string> found;
  for (const auto& c : cols) found.insert(c[0] + "." + c[1] + ":" + c[2]);
  const std::set<std::string> expected = {
      "schema_version.version:integer", "schema_version.applied_at:timestamp with time zone",
      "sync_jobs.id:bigint", "sync_jobs.source_root:text", "sync_jobs.source_root_raw:bytea",
      "sync_jobs.dest_root:text", "sync_jobs.dest_root_raw:bytea", "sync_jobs.status:text",
      "sync_jobs.total_files:bigint", "sync_jobs.processed_files:bigint",
      "sync_jobs.failed_files:bigint", "sync_jobs.skipped_files:bigint",
      "sync_jobs.processed_bytes:bigint", "sync_jobs.created_at:timestamp with time zone",
      "sync_jobs.updated_at:timestamp with time zone",
      "sync_jobs.finished_at:timestamp with time zone", "sync_jobs.settings:jsonb",
      "file_results.job_id:bigint", "file_results.path:text", "file_results.path_raw:bytea",
      "file_results.stage:text", "file_results.status:text", "file_results.size:bigint",
      "file_results.sha256:text", "file_results.error:text", "file_results.error_raw:bytea",
      "file_results.duration_us:bigint", "file_results.recorded_at:timestamp with time zone",
      "media_items.id:bigint", "media_items.source_root:text",
      "media_items.source_root_raw:bytea", "media_items.path:text", "media_items.path_raw:bytea",
      "media_items.library_path:text", "media_items.library_path_raw:bytea",
      "media_items.size:bigint", "media_items.mtime_ns:bigint", "media_items.sha256:text",
      "media_items.mime:text", "media_items.first_job_id:bigint",
      "media_items.last_job_id:bigint", "media_items.missing:boolean",
      // version 2
      "media_items.width:integer", "media_items.height:integer",
      "media_items.taken_at:timestamp with time zone", "media_items.orientation:smallint",
      "media_items.thumbnail_paths:jsonb", "media_items.preview_path:text",
      "media_items.preview_path_raw:bytea", "job_stage_counters.job_id:bigint",
      "job_stage_counters.stage:text", "job_stage_counters.ok_files:bigint",
      "job_stage_counters.failed_files:bigint", "job_stage_counters.skipped_files:bigint",
      // version 3
      "file_results.node:text"};
  CHECK(found == expected);
  CHECK(db.integer("SELECT count(*) FROM information_schema.table_constraints"
                   " WHERE table_name = 'job_stage_counters' AND constraint_type = 'PRIMARY KEY'") ==
        1);
  CHECK(db.integer("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()"
                   " AND indexname IN ('file_results_key', 'media_items_key')") == 2);
}

TEST_CASE("postgres_store: a version 1 database migrates to the current schema keeping its data",
          "[postgres]") {
  pg_database db;
  // Version 1 exactly as shipped (migration 1 only), with rows as a version 1
  // store wrote them: its jobs counted stage sync, and it recorded image-stage
  // rows in file_results without image data.
  db.exec("CREATE TABLE schema_version (version integer PRIMARY KEY,"
          " applied_at timestamptz NOT NULL DEFAULT now());" +
          std::string(storage::postgres_migration_sql(1)) +
          "INSERT INTO schema_version (version) VALUES (1);");
  CHECK(storage::postgres_migration_sql(0).empty());
  CHECK(storage::postgres_migration_sql(storage::postgres_schema_version + 1).empty());
  db.exec(R"sql(
INSERT INTO sync_jobs (source_root, dest_root, status, total_files, processed_files,
                       failed_files, skipped_files, processed_bytes, settings)
VALUES ('/src', '/lib', 'completed', 3, 2, 1, 0, 30, '{"workers": 2}'),
       ('/src', '/lib', 'interrupted', 3, 0, 0, 1, 0, '{}');
INSERT INTO file_results (job_id, path, path_raw, stage, status, size, sha256, error)
VALUES (1, 'a.jpg', NULL, 'sync', 'ok', 10, repeat('a', 64), NULL),
       (1, 'bad\xff.jpg', '\x626164ff2e6a7067'::bytea, 'sync', 'ok', 20, repeat('b', 64), NULL),
       (1, 'c.jpg', NULL, 'sync', 'failed', 0, NULL, 'open: Permission denied'),
       (1, 'a.jpg', NULL, 'processing', 'ok', 0, NULL, NULL),
       (1, 'bad\xff.jpg', '\x626164ff2e6a7067'::bytea, 'processing', 'skipped', 0, NULL, 'x'),
       (1, 'a.jpg', NULL, 'watermark', 'failed', 0, NULL, 'y'),
       (2, 'a.jpg', NULL, 'sync', 'skipped', 10, NULL, 'unchanged');
INSERT INTO media_items (source_root, path, path_raw, library_path, library_path_raw, size,
                         mtime_ns, sha256, mime, first_job_id, last_job_id)
VALUES ('/src', 'a.jpg', NULL, '2026/a.jpg', NULL, 10, 1000, repeat('a', 64), 'image/jpeg',
        1, 2),
       ('/src', 'bad\xff.jpg', '\x626164ff2e6a7067'::bytea, '2026/bad\xff.jpg',
        '\x323032362f626164ff2e6a7067'::bytea, 20, 2000, repeat('b', 64), 'image/jpeg', 1, 1);
)sql");
  const std::string bad_name = "bad\xff.jpg";
  REQUIRE(ms::test::pg_hex(bad_name) == "\\x626164ff2e6a7067");

  // read_only does not migrate.
  auto e = expect_error([&] { open_store(db.url(), open_mode::read_only); });
  CHECK(e.code == errc::cannot_open);
  CHECK(contains(e.what, "has schema version 1, this mediasync needs version " +
                             std::to_string(storage::postgres_schema_version)));
  CHECK(db.integer("SELECT max(version) FROM schema_version") == 1);

  auto st = open_store(db.url()); // read_write: migrates (to version 2, then on)
  CHECK(db.text("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version") ==
        "1,2,3");
  // The data is kept ...
  auto j = st->job(1);
  REQUIRE(j);
  CHECK(j->status == job_status::completed);
  CHECK(j->processed_files == 2);
  CHECK(j->processed_bytes == 30);
  CHECK(j->settings == R"({"workers":2})");
  require_counters_match_rows(*st, 1);
  require_counters_match_rows(*st, 2);
  std::vector<known_file> k;
  st->lookup(1, "/src", {"a.jpg", bad_name, "c.jpg"}, k);
  CHECK(k[0].has_media);
  CHECK(k[0].sha256 == std::string(64, 'a'));
  CHECK(k[0].stages_done == 7u);
  CHECK(k[0].thumbnail_paths.empty());
  CHECK(k[0].preview_path.empty());
  CHECK(k[1].has_media);
  CHECK(k[1].library_path == "2026/" + bad_name);
  CHECK(k[1].stages_done == 3u);
  CHECK_FALSE(k[2].has_media);
  CHECK(k[2].stages_done == 1u);
  CHECK(db.integer("SELECT count(*) FROM media_items WHERE width IS NULL AND height IS NULL"
                   " AND taken_at IS NULL AND orientation IS NULL AND thumbnail_paths IS NULL"
                   " AND preview_path IS NULL AND preview_path_raw IS NULL") == 2);
  // ... and the stage counters start equal to the rows already there.
  auto pr = pg_probe(db);
  require_stage_counters_match_rows(pr, 1);
  require_stage_counters_match_rows(pr, 2);
  CHECK(db.rows("SELECT job_id, stage, ok_files, failed_files, skipped_files"
                " FROM job_stage_counters ORDER BY job_id, stage") ==
        std::vector<std::vector<std::string>>{{"1", "processing", "1", "0", "1"},
                                              {"1", "sync", "2", "1", "0"},
                                              {"1", "watermark", "0", "1", "0"},
                                              {"2", "sync", "0", "0", "1"}});

  // The migrated database takes version 2 commits.
  REQUIRE(st->commit(2, "/src",
                     {processing_ok(2, "a.jpg", 640, 480, 1, "2020-05-06T07:08:09",
                                    {"t/a.jpg"}),
                      watermark_ok(2, "a.jpg", "p/a.jpg")})
              .inserted == 2);
  st->lookup(2, "/src", {"a.jpg"}, k);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/a.jpg"});
  CHECK(k[0].preview_path == "p/a.jpg");
  CHECK(pr.image("/src", "a.jpg")->taken_at == "2020-05-06T07:08:09");
  require_stage_counters_match_rows(pr, 2);
  st.reset();
  // Opening again migrates nothing; read_only now works.
  open_store(db.url()).reset();
  CHECK(db.integer("SELECT count(*) FROM schema_version") == storage::postgres_schema_version);
  auto ro = open_store(db.url(), open_mode::read_only);
  CHECK(ro->job(2)->skipped_files == 1);
}

TEST_CASE("postgres_store: a version 2 database migrates to version 3 keeping its rows",
          "[postgres]") {
  pg_database db;
  // Version 2 exactly as shipped (migrations 1 and 2), with rows as a version 2
  // store wrote them (no node).
  db.exec("CREATE TABLE schema_version (version integer PRIMARY KEY,"
          " applied_at timestamptz NOT NULL DEFAULT now());" +
          std::string(storage::postgres_migration_sql(1)) +
          "INSERT INTO schema_version (version) VALUES (1);" +
          std::string(storage::postgres_migration_sql(2)) +
          "INSERT INTO schema_version (version) VALUES (2);");
  CHECK(storage::postgres_migration_sql(storage::postgres_schema_version + 1).empty());
  db.exec(R"sql(
INSERT INTO sync_jobs (source_root, dest_root, status, total_files, processed_files,
                       failed_files, skipped_files, processed_bytes, settings)
VALUES ('/src', '/lib', 'interrupted', 3, 2, 1, 0, 30, '{"workers": 2}');
INSERT INTO file_results (job_id, path, path_raw, stage, status, size, sha256, error)
VALUES (1, 'a.jpg', NULL, 'sync', 'ok', 10, repeat('a', 64), NULL),
       (1, 'bad\xff.jpg', '\x626164ff2e6a7067'::bytea, 'sync', 'ok', 20, repeat('b', 64), NULL),
       (1, 'c.jpg', NULL, 'sync', 'failed', 0, NULL, 'open: Permission denied'),
       (1, 'a.jpg', NULL, 'processing', 'ok', 0, NULL, NULL);
INSERT INTO job_stage_counters (job_id, stage, ok_files, failed_files, skipped_files)
VALUES (1, 'sync', 2, 1, 0), (1, 'processing', 1, 0, 0);
INSERT INTO media_items (source_root, path, path_raw, library_path, library_path_raw, size,
                         mtime_ns, sha256, mime, first_job_id, last_job_id, width, height,
                         orientation, thumbnail_paths)
VALUES ('/src', 'a.jpg', NULL, '2026/a.jpg', NULL, 10, 1000, repeat('a', 64), 'image/jpeg',
        1, 1, 640, 480, 1, '["t/a.jpg"]'),
       ('/src', 'bad\xff.jpg', '\x626164ff2e6a7067'::bytea, '2026/bad\xff.jpg',
        '\x323032362f626164ff2e6a7067'::bytea, 20, 2000, repeat('b', 64), 'image/jpeg', 1, 1,
        NULL, NULL, NULL, NULL);
)sql");
  const std::string bad_name = "bad\xff.jpg";

  // read_only does not migrate.
  auto e = expect_error([&] { open_store(db.url(), open_mode::read_only); });
  CHECK(e.code == errc::cannot_open);
  CHECK(contains(e.what, "has schema version 2, this mediasync needs version " +
                             std::to_string(storage::postgres_schema_version)));
  CHECK(db.integer("SELECT max(version) FROM schema_version") == 2);

  auto st = open_store(db.url()); // read_write: migrates
  CHECK(db.text("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version") ==
        "1,2,3");
  CHECK(db.text("SELECT data_type || ',' || is_nullable FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'file_results'"
                " AND column_name = 'node'") == "text,YES");
  CHECK(db.text("SELECT col_description('file_results'::regclass, attnum) IS NOT NULL"
                " FROM pg_attribute"
                " WHERE attrelid = 'file_results'::regclass AND attname = 'node'") == "t");
  // The rows are kept, without a node.
  CHECK(db.integer("SELECT count(*) FROM file_results") == 4);
  CHECK(db.integer("SELECT count(*) FROM file_results WHERE node IS NULL") == 4);
  auto j = st->job(1);
  REQUIRE(j);
  CHECK(j->status == job_status::interrupted);
  CHECK(j->processed_bytes == 30);
  require_counters_match_rows(*st, 1);
  auto pr = pg_probe(db);
  require_stage_counters_match_rows(pr, 1);
  std::vector<known_file> k;
  st->lookup(1, "/src", {"a.jpg", bad_name, "c.jpg"}, k);
  CHECK(k[0].has_media);
  CHECK(k[0].stages_done == 3u);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/a.jpg"});
  CHECK(k[1].library_path == "2026/" + bad_name);
  CHECK(k[1].stages_done == 1u);
  CHECK_FALSE(k[2].has_media);

  // The migrated database takes new rows with their node, on the first try (COPY)
  // and on the redo (a row already there, re-sent by a node, keeps its NULL).
  auto with_node = [](file_outcome o, std::string node) {
    o.node = std::move(node);
    return o;
  };
  auto stats = st->commit(
      1, "/src",
      {with_node(stage_outcome(1, "d.jpg", stage::sync, file_status::ok, true), "worker-1"),
       with_node(stage_outcome(1, "d.jpg", stage::processing, file_status::skipped), "")});
  CHECK(stats.inserted == 2);
  stats = st->commit(
      1, "/src",
      {with_node(stage_outcome(1, "a.jpg", stage::sync, file_status::ok, true), "worker-9"),
       with_node(stage_outcome(1, bad_name, stage::processing, file_status::skipped),
                 "worker-2")});
  CHECK(stats.inserted == 1);
  CHECK(stats.duplicates == 1);
  CHECK(db.rows("SELECT path, stage, node FROM file_results ORDER BY path, stage") ==
        std::vector<std::vector<std::string>>{{"a.jpg", "processing", "<NULL>"},
                                              {"a.jpg", "sync", "<NULL>"},
                                              {"bad\\xff.jpg", "processing", "worker-2"},
                                              {"bad\\xff.jpg", "sync", "<NULL>"},
                                              {"c.jpg", "sync", "<NULL>"},
                                              {"d.jpg", "processing", "<NULL>"},
                                              {"d.jpg", "sync", "worker-1"}});
  require_counters_match_rows(*st, 1);
  require_stage_counters_match_rows(pr, 1);
  st.reset();
  // Opening again migrates nothing; read_only now works.
  open_store(db.url()).reset();
  CHECK(db.integer("SELECT count(*) FROM schema_version") == 3);
  auto ro = open_store(db.url(), open_mode::read_only);
  CHECK(ro->job(1)->processed_files == 3);
}

TEST_CASE("postgres_store: open_store accepts postgres URLs and key=value strings",
          "[postgres]") {
  pg_database db;
  const std::string sock = ms::test::pg_socket_dir();
  const std::string port = std::to_string(ms::test::pg_port());
  const std::vector<std::string> forms = {
      db.url(),
      "postgres:///" + db.name() + "?host=" + sock + "&port=" + port,
      "POSTGRESQL:///" + db.name() + "?host=" + sock + "&port=" + port,
      "host=" + sock + " port=" + port + " dbname=" + db.name(),
      "dbname=" + db.name() + " host='" + sock + "' port=" + port + " password=s3cret",
  };
  std::uint64_t created = 0;
  for (const auto& url : forms) {
    INFO("url " << url);
    auto st = open_store(url);
    CHECK_FALSE(contains(st->describe(), "s3cret"));
    st->create_job("/src", "/dst", "{}");
    CHECK(st->jobs(100).size() == ++created); // every form names the same database
  }
  CHECK(storage::redact_url("postgresql://ms:s3cret@db.example:5432/ms?sslmode=require") ==
        "postgresql://ms:***@db.example:5432/ms?sslmode=require");
  CHECK(storage::redact_url("postgres://db/ms?user=ms&password=s3cret&sslmode=require") ==
        "postgres://db/ms?user=ms&password=***&sslmode=require");
  CHECK(storage::redact_url("host=db password = 'se cret\\'x' dbname=ms") ==
        "host=db password = *** dbname=ms");
  CHECK(storage::is_postgres_url("host=db dbname=ms"));
  CHECK(storage::is_postgres_url("user = ms"));
  CHECK_FALSE(storage::is_postgres_url("/tmp/hostname=x.db"));
  CHECK_FALSE(storage::is_postgres_url("sqlite:///tmp/ms.db"));
}

TEST_CASE("postgres_store: read_only open of a database without the schema fails",
          "[postgres]") {
  pg_database db;
  auto e = expect_error([&] { open_store(db.url(), open_mode::read_only); });
  CHECK(e.code == errc::cannot_open);
  CHECK(contains(e.what, "'" + db.url() + "' has no mediasync schema"));
  CHECK(db.integer("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0);

  SECTION("an older schema, read_only: migrate first") {
    db.exec("CREATE TABLE schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())");
    e = expect_error([&] { open_store(db.url(), open_mode::read_only); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "has schema version 0"));
    CHECK(contains(e.what, "mediasync migrate"));
  }
  SECTION("mediasync's table names without schema_version, read_write") {
    db.exec("CREATE TABLE sync_jobs (x int)");
    e = expect_error([&] { open_store(db.url()); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "is not a mediasync database"));
    CHECK(db.integer("SELECT count(*) FROM pg_tables WHERE tablename = 'schema_version'") == 0);
  }
  SECTION("another application's tables are left alone") {
    db.exec("CREATE TABLE other_app (x int)");
    open_store(db.url()).reset();
    CHECK(db.integer("SELECT count(*) FROM schema_version") == storage::postgres_schema_version);
    open_store(db.url(), open_mode::read_only).reset();
  }
}

TEST_CASE("postgres_store: a schema newer than the binary is refused in both modes",
          "[postgres]") {
  pg_database db;
  open_store(db.url()).reset();
  const int newer = storage::postgres_schema_version + 41;
  db.exec("INSERT INTO schema_version (version) VALUES (" + std::to_string(newer) + ")");
  for (auto mode : {open_mode::read_write, open_mode::read_only}) {
    auto e = expect_error([&] { open_store(db.url(), mode); });
    CHECK(e.code == errc::schema_too_new);
    CHECK(contains(e.what, "'" + db.url() + "'"));
    CHECK(contains(e.what, "schema version " + std::to_string(newer)));
    CHECK(contains(e.what, "version " + std::to_string(storage::postgres_schema_version)));
  }
}

TEST_CASE("postgres_store: concurrent migrations of one database apply it once", "[postgres]") {
  pg_database db;
  std::mutex m;
  std::vector<std::string> failures;
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&] {
      try {
        open_store(db.url()).reset();
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> g(m);
        failures.push_back(e.what());
      }
    });
  for (auto& t : ts) t.join();
  CHECK(failures == std::vector<std::string>{});
  CHECK(db.integer("SELECT count(*) FROM schema_version") == storage::postgres_schema_version);
}

TEST_CASE("postgres_store: connection problems are clear errors naming the redacted URL",
          "[postgres]") {
  pg_database db;
  open_store(db.url()).reset();
  const std::string port = std::to_string(ms::test::pg_port());

  SECTION("bad URLs") {
    for (std::string url : std::vector<std::string>{
             "postgresql://ms:s3cret@[::1/ms", "postgres://ms:s3cret@db/ms?bogus=1",
          "postgresql://ms:s3cret@localhost:notaport/ms", "host=db password=s3cret dbname",
          "postgresql://ms:s3cret@localhost:99999/ms"}) {
      INFO("url " << url);
      auto e = expect_error([&] { open_store(url); });
      CHECK(e.code == errc::bad_url);
      CHECK(contains(e.what, "cannot open database '" + storage::redact_url(url) + "'"));
      CHECK_FALSE(contains(e.what, "s3cret"));
    }
  }
  SECTION("refused connection") {
    const std::string url =
        "postgresql://root:s3cret@127.0.0.1:" + std::to_string(unused_port()) + "/" + db.name();
    auto e = expect_error([&] { open_store(url); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "cannot open database 'postgresql://root:***@127.0.0.1:"));
    CHECK(contains(e.what, "Connection refused"));
    CHECK_FALSE(contains(e.what, "s3cret"));
  }
  SECTION("no socket there") {
    const std::string url = "postgresql:///" + db.name() + "?host=/nonexistent-dir&port=" + port;
    auto e = expect_error([&] { open_store(url, open_mode::read_only); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "cannot open database '" + url + "' read-only"));
    CHECK(contains(e.what, "No such file or directory"));
  }
  SECTION("unknown host") {
    const std::string url = "postgresql://root@no-such-host.invalid/" + db.name();
    auto e = expect_error([&] { open_store(url); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "no-such-host.invalid"));
  }
  SECTION("missing database") {
    const std::string url = ms::test::pg_url(db.name() + "_absent");
    auto e = expect_error([&] { open_store(url); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "cannot open database '" + url + "'"));
    CHECK(contains(e.what, "does not exist"));
  }
  SECTION("password authentication over TCP (scram-sha-256)") {
    const std::string role = db.name() + "_pw";
    ms::test::pg_admin_exec("CREATE ROLE " + role + " LOGIN PASSWORD 'right-pw-123'");
    db.exec("GRANT SELECT ON ALL TABLES IN SCHEMA public TO " + role);
    struct drop_role {
      const pg_database& db;
      std::string role;
      ~drop_role() {
        try {
          db.exec("DROP OWNED BY " + role);
          ms::test::pg_admin_exec("DROP ROLE IF EXISTS " + role);
        } catch (...) {
        }
      }
    } dropper{db, role};
    const std::string base = "postgresql://" + role;
    const std::string where = "@127.0.0.1:" + port + "/" + db.name();

    auto e = expect_error([&] { open_store(base + ":wrong-pw-456" + where); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "cannot open database '" + base + ":***" + where + "'"));
    CHECK(contains(e.what, "password authentication failed"));
    CHECK_FALSE(contains(e.what, "wrong-pw-456"));

    // The right password works in the URL, in PGPASSWORD and in a pgpass file.
    open_store(base + ":right-pw-123" + where, open_mode::read_only).reset();
    ::setenv("PGPASSWORD", "right-pw-123", 1);
    open_store(base + where, open_mode::read_only).reset();
    ::unsetenv("PGPASSWORD");
    ms::test::temp_dir t;
    const std::string passfile = t / "pgpass";
    std::ofstream(passfile) << "127.0.0.1:" << port << ":" << db.name() << ":" << role
                            << ":right-pw-123\n";
    ::chmod(passfile.c_str(), 0600);
    ::setenv("PGPASSFILE", passfile.c_str(), 1);
    open_store(base + where, open_mode::read_only).reset();
    ::unsetenv("PGPASSFILE");
    // No password at all.
    e = expect_error([&] { open_store(base + where, open_mode::read_only); });
    CHECK(e.code == errc::cannot_open);
    CHECK(contains(e.what, "password"));
  }
}

// ---------------------------------------------------------------------------
// Connection loss.

namespace {

/// Terminates the store's backend(s) in `db` (every session but the caller's).
int terminate_sessions(const pg_database& db) {
  return static_cast<int>(
      db.integer("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                 " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                 " AND application_name = 'mediasync'"));
}

} // namespace

TEST_CASE("postgres_store: a lost connection throws connection_lost and the next call reconnects",
          "[postgres]") {
  pg_database db;
  auto st = open_store(db.url());
  auto job = st->create_job("/src", "/lib", "{}");
  REQUIRE(st->commit(job, "/src", mixed_batch(job, 0, 20)).inserted == 20);

  SECTION("terminated while idle") {
    REQUIRE(terminate_sessions(db) == 1);
    auto e = expect_error([&] { st->commit(job, "/src", mixed_batch(job, 20, 20)); });
    CHECK(e.code == errc::connection_lost);
    CHECK(contains(e.what, db.url()));
    CHECK(db.integer("SELECT count(*) FROM file_results") == 20);
    // The next call reconnects; the writer re-applies the held batch.
    CHECK(st->commit(job, "/src", mixed_batch(job, 20, 20)).inserted == 20);
    require_counters_match_rows(*st, job);
  }
  SECTION("terminated in the middle of a commit: nothing half-written") {
    // Another session holds the job's row, so the commit blocks after its
    // INSERTs, at the counter UPDATE; then its backend is terminated.
    pqxx::connection locker(db.url());
    pqxx::work lock(locker);
    lock.exec("SELECT 1 FROM sync_jobs WHERE id = " + std::to_string(job) + " FOR UPDATE");
    caught result{errc::io, ""};
    std::thread writer([&] {
      result = expect_error([&] { st->commit(job, "/src", mixed_batch(job, 20, 500)); });
    });
    // Wait until the commit waits for the row lock.
    bool waiting = false;
    for (int i = 0; i < 500 && !waiting; ++i) {
      waiting = db.integer("SELECT count(*) FROM pg_stat_activity"
                           " WHERE datname = current_database()"
                           " AND application_name = 'mediasync' AND wait_event_type = 'Lock'") == 1;
      if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(waiting);
    CHECK(terminate_sessions(db) == 1);
    writer.join();
    lock.abort();
    CHECK(result.code == errc::connection_lost);
    CHECK(db.integer("SELECT count(*) FROM file_results") == 20);
    CHECK(db.integer("SELECT count(*) FROM media_items") == 12);
    CHECK(st->commit(job, "/src", mixed_batch(job, 20, 500)).inserted == 500);
    require_counters_match_rows(*st, job);
  }
  SECTION("the server refuses connections for a while") {
    REQUIRE(terminate_sessions(db) == 1);
    ms::test::pg_admin_exec("ALTER DATABASE " + db.name() + " WITH ALLOW_CONNECTIONS false");
    for (int i = 0; i < 2; ++i) {
      auto e = expect_error([&] { st->job(job); });
      CHECK(e.code == errc::connection_lost);
      CHECK(contains(e.what, db.url()));
    }
    auto e = expect_error([&] { st->commit(job, "/src", mixed_batch(job, 20, 20)); });
    CHECK(e.code == errc::connection_lost);
    CHECK(contains(e.what, "cannot reconnect"));
    ms::test::pg_admin_exec("ALTER DATABASE " + db.name() + " WITH ALLOW_CONNECTIONS true");
    CHECK(st->commit(job, "/src", mixed_batch(job, 20, 20)).inserted == 20);
    require_counters_match_rows(*st, job);
  }
  // In every case the read_only reader still works afterwards, on its own connection.
  auto ro = open_store(db.url(), open_mode::read_only);
  require_counters_match_rows(*ro, job);
}

namespace {

/// The sockets of this process connected to the test server (its unix socket).
std::vector<int> pg_client_sockets() {
  std::vector<int> out;
  std::vector<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (struct dirent* e = ::readdir(d))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') fds.push_back(std::atoi(e->d_name));
    ::closedir(d);
  }
  for (int fd : fds) {
    struct stat sb;
    if (::fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode)) continue;
    sockaddr_un a{};
    socklen_t len = sizeof a;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 && a.sun_family == AF_UNIX &&
        std::string(a.sun_path).find(".s.PGSQL.") != std::string::npos)
      out.push_back(fd);
  }
  return out;
}

/// Waits until the store's backend waits for the test trigger's advisory lock (its
/// COMMIT is in flight).
bool wait_commit_held(const pg_database& db) {
  for (int i = 0; i < 1000; ++i) {
    if (db.integer("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                   " AND application_name = 'mediasync' AND wait_event_type = 'Lock'"
                   " AND wait_event = 'advisory'") == 1)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

/// Sums of commit_stats, to compare with the database's counters.
struct stats_sum {
  stage_matrix per_stage{};
  std::uint64_t ok_bytes = 0;
  void add(const storage::commit_stats& s) {
    for (std::size_t sg = 0; sg < stage_count; ++sg)
      for (std::size_t st = 0; st < 3; ++st) per_stage[sg][st] += s.per_stage[sg][st];
    ok_bytes += s.ok_bytes;
  }
};

/// Outcomes of every stage and status under `dir`, the first file named
/// slow/DIR.jpg (the test trigger's row).
std::vector<file_outcome> doubt_batch(std::uint64_t job, const std::string& dir, int n) {
  std::vector<file_outcome> b;
  for (int i = 0; i < n; ++i) {
    std::string name = i == 0 ? "slow/" + dir + ".jpg" : dir + "/" + std::to_string(i) + ".jpg";
    auto status = static_cast<file_status>(i % 3);
    b.push_back(stage_outcome(job, name, stage::sync, status, status == file_status::ok));
    b.back().size = 1000 + static_cast<std::uint64_t>(i);
    if (status == file_status::ok) {
      b.push_back(processing_ok(job, name, 8, 8, 1, "", {"t/" + name}));
      b.push_back(stage_outcome(job, name, stage::watermark, static_cast<file_status>(i % 2)));
    }
  }
  return b;
}

} // namespace

TEST_CASE("postgres_store: rows of a commit whose COMMIT reply was lost are counted once",
          "[postgres][metrics]") {
  pg_database db;
  auto st = open_store(db.url());
  auto job = st->create_job("/src", "/lib", "{}");
  stats_sum sum;
  sum.add(st->commit(job, "/src", doubt_batch(job, "before", 7)));
  // COMMIT of a transaction that inserted the sync row of a slow/* file waits in a
  // deferred trigger for an advisory lock the test holds: the connection is cut
  // while that COMMIT is in flight.
  db.exec("CREATE FUNCTION ms_test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS"
          " $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;"
          "CREATE CONSTRAINT TRIGGER ms_test_hold AFTER INSERT ON file_results"
          " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
          " WHEN (NEW.path LIKE 'slow%' AND NEW.stage = 'sync')"
          " EXECUTE FUNCTION ms_test_hold_commit()");

  // Commits `batch` on a thread and cuts the connection while its COMMIT waits:
  // `applied` shuts this process' end of the socket down, then lets the COMMIT go on
  // (the server commits, the reply is lost); else the backend is terminated (the
  // transaction rolls back). Either way the store cannot know and throws
  // connection_lost.
  auto commit_in_doubt = [&](const std::vector<file_outcome>& batch, bool applied) {
    pqxx::connection locker(db.url());
    pqxx::nontransaction lock(locker);
    lock.exec("SELECT pg_advisory_lock(4242)");
    caught result{errc::io, ""};
    std::atomic<bool> done{false};
    std::thread writer([&] {
      result = expect_error([&] { st->commit(job, "/src", batch); });
      done = true;
    });
    bool held = wait_commit_held(db);
    CHECK(held);
    if (held && applied) {
      std::vector<int> fds; // the store's connection: every one to the server but `locker`
      for (int fd : pg_client_sockets())
        if (fd != locker.sock()) fds.push_back(fd);
      CHECK(fds.size() == 1);
      if (fds.size() == 1) ::shutdown(fds[0], SHUT_RDWR);
    } else if (held) {
      CHECK(terminate_sessions(db) == 1);
    }
    if (held) {
      // The store finds its connection gone (before the COMMIT goes on, if it does).
      for (int i = 0; i < 1000 && !done; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      CHECK(done);
    }
    lock.exec("SELECT pg_advisory_unlock(4242)");
    writer.join();
    CHECK(result.code == errc::connection_lost);
    CHECK(contains(result.what, "COMMIT"));
    // Waits for the old transaction to end (DROP TRIGGER locks file_results); the
    // redone batches go through at once.
    db.exec("DROP TRIGGER ms_test_hold ON file_results");
  };
  auto rows_now = [&] { return db.integer("SELECT count(*) FROM file_results"); };

  SECTION("applied on the first try (COPY): the redo counts the rows it finds") {
    auto batch = doubt_batch(job, "a", 10);
    auto before = rows_now();
    commit_in_doubt(batch, true);
    CHECK(rows_now() == before + static_cast<long long>(batch.size())); // it was applied
    auto more = batch;
    auto extra = doubt_batch(job, "a2", 4);
    more.insert(more.end(), extra.begin() + 3, extra.end()); // not the slow* row
    // Statements inserting into file_results, failed ones included (a sequence
    // does not roll back): the redo is one INSERT, no COPY that fails first.
    db.exec("CREATE SEQUENCE ms_test_inserts;"
            "CREATE FUNCTION ms_test_count() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM nextval('ms_test_inserts'); RETURN NULL; END $$;"
            "CREATE TRIGGER ms_test_count BEFORE INSERT ON file_results"
            " FOR EACH STATEMENT EXECUTE FUNCTION ms_test_count()");
    auto s = st->commit(job, "/src", more);
    CHECK(db.integer("SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
                     " FROM ms_test_inserts") == 1);
    CHECK(s.inserted == more.size());
    CHECK(s.duplicates == 0);
    sum.add(s);
    // Counted once: committing again counts nothing.
    s = st->commit(job, "/src", more);
    CHECK(s.inserted == 0);
    sum.add(s);
  }
  SECTION("not applied: the redo inserts and counts the rows once") {
    auto batch = doubt_batch(job, "b", 10);
    auto before = rows_now();
    commit_in_doubt(batch, false);
    CHECK(rows_now() == before); // rolled back
    auto s = st->commit(job, "/src", batch);
    CHECK(s.inserted == batch.size());
    sum.add(s);
    CHECK(st->commit(job, "/src", batch).inserted == 0);
  }
  SECTION("applied on the redo path: only the rows new then count") {
    auto batch = doubt_batch(job, "c", 10);
    const auto n_new = batch.size();
    auto old = doubt_batch(job, "before", 7);
    batch.insert(batch.end(), old.begin() + 1, old.begin() + 4); // already committed
    auto before = rows_now();
    commit_in_doubt(batch, true);
    CHECK(rows_now() == before + static_cast<long long>(n_new)); // the new rows only
    auto s = st->commit(job, "/src", batch);
    CHECK(s.inserted == n_new);
    CHECK(s.duplicates == 3);
    sum.add(s);
  }
  SECTION("the rows stay remembered until a commit of them returns") {
    auto batch = doubt_batch(job, "e", 7);
    commit_in_doubt(batch, true);
    // Another batch first (as after a reconnect with other outcomes buffered).
    auto other = doubt_batch(job, "f", 5);
    auto s = st->commit(job, "/src", other);
    CHECK(s.inserted == other.size());
    sum.add(s);
    // Then the held one, in another order and with new rows.
    std::vector<file_outcome> redo(batch.rbegin(), batch.rend());
    auto extra = doubt_batch(job, "g", 3);
    redo.insert(redo.begin(), extra.begin() + 3, extra.end());
    s = st->commit(job, "/src", redo);
    CHECK(s.inserted == redo.size());
    sum.add(s);
    // Counted once: committing them again counts nothing.
    CHECK(st->commit(job, "/src", redo).inserted == 0);
  }
  // Whatever happened, the sums of the stats equal the counters.
  CHECK(sum.per_stage == pg_probe(db).stage_counters(job));
  CHECK(sum.ok_bytes == st->job(job)->processed_bytes);
  require_counters_match_rows(*st, job);
}

// ---------------------------------------------------------------------------
// Several jobs at once.

TEST_CASE("postgres_store: concurrent jobs on one database do not interfere", "[postgres]") {
  pg_database db;
  open_store(db.url()).reset();
  constexpr int writers = 4, batches = 20, batch_size = 100;
  std::atomic<int> errors{0};
  std::vector<std::uint64_t> jobs(writers);
  std::vector<std::thread> ts;
  std::string first_error;
  std::mutex m;
  for (int w = 0; w < writers; ++w)
    ts.emplace_back([&, w] {
      try {
        // Each writer is its own store on its own connection, as separate
        // processes would be; all share one source root, so their media_items
        // upserts hit the same rows.
        auto st = open_store(db.url());
        auto job = st->create_job("/shared", "/lib", "{}");
        jobs[static_cast<std::size_t>(w)] = job;
        for (int b = 0; b < batches; ++b) {
          // Writers walk the same names in opposite orders.
          int first = (w % 2 == 0 ? b : batches - 1 - b) * batch_size;
          auto batch = mixed_batch(job, first, batch_size);
          st->commit(job, "/shared", batch);
          st->raise_total(job, static_cast<std::uint64_t>((b + 1) * batch_size));
        }
        st->set_job_status(job, job_status::completed, true);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> g(m);
        first_error = e.what();
        ++errors;
      }
    });
  for (auto& t : ts) t.join();
  INFO(first_error);
  CHECK(errors.load() == 0);
  auto st = open_store(db.url(), open_mode::read_only);
  std::set<std::uint64_t> ids(jobs.begin(), jobs.end());
  CHECK(ids.size() == writers);
  for (auto job : jobs) {
    auto c = st->count_rows(job);
    CHECK(c.ok + c.failed + c.skipped == batches * batch_size);
    require_counters_match_rows(*st, job);
    CHECK(st->job(job)->status == job_status::completed);
  }
  CHECK(st->count_known("/shared") == batches * batch_size * 3 / 5);
  CHECK(db.integer("SELECT count(*) FROM media_items") == batches * batch_size * 3 / 5);
}

TEST_CASE("postgres_store: a reader sees counters equal to row counts while commits happen",
          "[postgres]") {
  pg_database db;
  auto st = open_store(db.url());
  auto job = st->create_job("/src", "/lib", "{}");
  // sync_jobs counts stage sync; job_stage_counters every stage.
  const std::string q =
      "SELECT j.processed_files = (SELECT count(*) FROM file_results f"
      "                            WHERE f.job_id = j.id AND f.stage = 'sync'"
      "                              AND f.status = 'ok')"
      " AND j.failed_files = (SELECT count(*) FROM file_results f"
      "                       WHERE f.job_id = j.id AND f.stage = 'sync'"
      "                         AND f.status = 'failed')"
      " AND j.skipped_files = (SELECT count(*) FROM file_results f"
      "                        WHERE f.job_id = j.id AND f.stage = 'sync'"
      "                          AND f.status = 'skipped')"
      " AND j.processed_bytes = (SELECT COALESCE(sum(size), 0) FROM file_results f"
      "                          WHERE f.job_id = j.id AND f.stage = 'sync'"
      "                            AND f.status = 'ok')"
      " AND NOT EXISTS ("
      "   SELECT stage, ok_files, failed_files, skipped_files FROM job_stage_counters"
      "   WHERE job_id = j.id"
      "   EXCEPT"
      "   SELECT stage, count(*) FILTER (WHERE status = 'ok'),"
      "          count(*) FILTER (WHERE status = 'failed'),"
      "          count(*) FILTER (WHERE status = 'skipped')"
      "   FROM file_results WHERE job_id = j.id GROUP BY stage)"
      " AND (SELECT count(*) FROM job_stage_counters WHERE job_id = j.id) ="
      "     (SELECT count(DISTINCT stage) FROM file_results WHERE job_id = j.id)"
      " FROM sync_jobs j WHERE j.id = " +
      std::to_string(job);
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, mismatches{0};
  std::string reader_error;
  std::thread reader([&] {
    try {
      pqxx::connection c(db.url());
      while (!done.load()) {
        pqxx::nontransaction n(c);
        if (std::string(n.exec(q)[0][0].c_str()) != "t") ++mismatches;
        ++reads;
      }
    } catch (const std::exception& e) {
      reader_error = e.what();
    }
  });
  std::vector<file_outcome> previous;
  for (int i = 0; i < 100; ++i) {
    // This batch's sync outcomes, and the image stages of the previous batch's.
    auto batch = mixed_batch(job, i * 50, 50);
    for (const auto& o : previous) {
      if (o.status == file_status::ok) {
        batch.push_back(processing_ok(job, o.path, 64, 48, 1, "", {"t/" + o.path}));
        batch.push_back(watermark_ok(job, o.path, "p/" + o.path));
      } else {
        batch.push_back(stage_outcome(job, o.path, stage::processing, file_status::skipped));
      }
    }
    st->commit(job, "/src", batch);
    previous = mixed_batch(job, i * 50, 50);
  }
  while (reads.load() < 10 && reader_error.empty()) std::this_thread::yield();
  done = true;
  reader.join();
  CHECK(reader_error.empty());
  CHECK(mismatches.load() == 0);
  require_counters_match_rows(*st, job);
  require_stage_counters_match_rows(pg_probe(db), job);
}

TEST_CASE("postgres_store: concurrent jobs writing the image stages of shared items",
          "[postgres]") {
  pg_database db;
  open_store(db.url()).reset();
  constexpr int writers = 3, batches = 12, batch_size = 100;
  std::atomic<int> errors{0};
  std::vector<std::uint64_t> jobs(writers);
  std::vector<std::thread> ts;
  std::string first_error;
  std::mutex m;
  for (int w = 0; w < writers; ++w)
    ts.emplace_back([&, w] {
      try {
        auto st = open_store(db.url());
        auto job = st->create_job("/shared", "/lib", "{}");
        jobs[static_cast<std::size_t>(w)] = job;
        std::vector<file_outcome> previous;
        for (int b = 0; b < batches; ++b) {
          // Writers walk the same names in opposite orders; each batch carries
          // the image stages of the batch before.
          int first = (w % 2 == 0 ? b : batches - 1 - b) * batch_size;
          auto batch = mixed_batch(job, first, batch_size);
          for (const auto& o : previous)
            if (o.status == file_status::ok) {
              batch.push_back(processing_ok(job, o.path, w + 1, w + 1, 1, "", {"t/" + o.path}));
              batch.push_back(watermark_ok(job, o.path, "p/" + o.path));
            }
          st->commit(job, "/shared", batch);
          previous = mixed_batch(job, first, batch_size);
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> g(m);
        first_error = e.what();
        ++errors;
      }
    });
  for (auto& t : ts) t.join();
  INFO(first_error);
  CHECK(errors.load() == 0);
  auto pr = pg_probe(db);
  auto st = open_store(db.url(), open_mode::read_only);
  for (auto job : jobs) {
    require_counters_match_rows(*st, job);
    require_stage_counters_match_rows(pr, job);
  }
  // Every item some writer processed has its image columns from one of them.
  CHECK(db.integer("SELECT count(*) FROM media_items WHERE thumbnail_paths IS NOT NULL"
                   " AND preview_path IS NOT NULL AND width BETWEEN 1 AND $1",
                   {std::to_string(writers)}) == batches * batch_size * 3 / 5);
}
