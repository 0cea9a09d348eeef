// The progress-writer's metrics (writer_settings::metrics) against the database they
// describe: after a run of mixed stages and statuses, with redone (duplicate) batches
// and, on PostgreSQL, a lost connection, every counter equals what the database says.
#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <thread>

#include <caf/all.hpp>
#include <sqlite3.h>

#include "actors/metrics.hpp"
#include "actors/progress_writer.hpp"
#include "pg_test_db.hpp"
#include "storage/store.hpp"
#include "store_contract.hpp"
#include "test_util.hpp"

using namespace ms;
using namespace std::chrono_literals;
using ms::test::contract::stage_matrix;
namespace wm = ms::writer_metrics;

namespace {

/// The database under test, as the writer and the checks see it.
struct backend {
  std::shared_ptr<storage::store> db;
  /// job_stage_counters of a job, read with SQL on a connection of its own.
  std::function<stage_matrix(std::uint64_t)> stage_counters;
  /// Cuts the writer's connection (PostgreSQL); empty when there is none to cut.
  std::function<void()> cut_connection;
};

/// Outcomes of files `first`..`first + n - 1`: a sync row of each status, and for ok
/// syncs processing and watermark rows of each status.
std::vector<file_outcome> run_outcomes(std::uint64_t job, int first, int n) {
  using namespace ms::test::contract;
  std::vector<file_outcome> out;
  for (int i = first; i < first + n; ++i) {
    std::string name = "d" + std::to_string(i % 4) + "/f" + std::to_string(i) + ".jpg";
    auto status = static_cast<file_status>(i % 3);
    auto s = stage_outcome(job, name, stage::sync, status, status == file_status::ok);
    s.size = 1000 + static_cast<std::uint64_t>(i) * 7;
    out.push_back(s);
    if (status != file_status::ok)
      continue;
    switch (i % 4) {
      case 0:
        out.push_back(processing_ok(job, name, 64, 48, 1, "", {"t/" + name}));
        out.push_back(watermark_ok(job, name, "p/" + name));
        break;
      case 1:
        out.push_back(stage_outcome(job, name, stage::processing, file_status::failed));
        out.push_back(stage_outcome(job, name, stage::watermark, file_status::skipped));
        break;
      case 2:
        out.push_back(stage_outcome(job, name, stage::processing, file_status::skipped));
        out.push_back(stage_outcome(job, name, stage::watermark, file_status::skipped));
        break;
      default:
        out.push_back(processing_ok(job, name, 64, 48, 3, "", {"t/" + name}));
        out.push_back(stage_outcome(job, name, stage::watermark, file_status::failed));
    }
  }
  return out;
}

metric_labels labels(std::size_t sg, std::size_t status) {
  return {{"stage", std::string{to_string(static_cast<stage>(sg))}},
          {"status", std::string{to_string(static_cast<file_status>(status))}}};
}

/// Runs a writer with metrics over one job of `b`, then checks the metrics against
/// the database.
void check_writer_metrics(backend& b) {
  test::temp_dir dir;
  caf::actor_system_config cfg;
  add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  auto src = dir / "src";
  auto dst = dir / "dst";
  std::filesystem::create_directories(src);
  std::filesystem::create_directories(dst);
  auto job = b.db->create_job(src, dst, "{}");
  auto reg = std::make_shared<metrics>();

  writer_settings ws;
  ws.batch_size = 16;
  ws.flush_interval = std::chrono::hours(1); // commits by batch size, flush and finish only
  ws.reconnect_initial = 20ms;
  ws.metrics = reg;
  auto w = spawn_progress_writer(sys, b.db, ws);
  caf::scoped_actor self{sys};
  self->request(w, caf::infinite, open_atom::value, job,
                caf::actor_cast<durable_listener_actor>(self))
    .receive([](job_row&) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  // Declared at spawn, visible at 0 before anything happened.
  CHECK(reg->render().find("mediasync_files_total{stage=\"watermark\",status=\"failed\"} 0\n")
        != std::string::npos);
  CHECK(reg->value(wm::commits, {}) == 0);

  // Round trip: when the reply comes, the writer handled everything sent before.
  auto settle = [&] {
    self->request(w, caf::infinite, known_atom::value, src)
      .receive([](std::uint64_t) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  };
  std::size_t sent = 0;
  auto send = [&](std::vector<file_outcome> outs) {
    sent += outs.size();
    self->send(w, outcome_atom::value, std::move(outs));
  };

  // Below the batch size: buffered, nothing committed.
  auto all = run_outcomes(job, 0, 60);
  send(std::vector<file_outcome>(all.begin(), all.begin() + 10));
  settle();
  CHECK(reg->value(wm::buffered, {}) == 10);
  CHECK(reg->value(wm::commits, {}) == 0);
  // The rest in chunks of 10: commits whenever 16 outcomes that wrote library files (or
  // 8 x 16 outcomes in all) are buffered, then the flush.
  for (std::size_t i = 10; i < all.size(); i += 10)
    send(std::vector<file_outcome>(all.begin() + static_cast<std::ptrdiff_t>(i),
                                   all.begin() + static_cast<std::ptrdiff_t>(
                                                   std::min(i + 10, all.size()))));
  self->send(w, flush_atom::value);
  settle();
  CHECK(reg->value(wm::buffered, {}) == 0);
  CHECK(reg->value(wm::commits, {}) >= 2);
  // Redone outcomes (as after a lost commit reply): committed again, counted once.
  send(std::vector<file_outcome>(all.begin() + 5, all.begin() + 40));
  auto more = run_outcomes(job, 60, 12);
  send(more);
  self->send(w, flush_atom::value);
  settle();
  if (b.cut_connection) {
    // The next commit finds the connection gone, holds the batch and retries it.
    b.cut_connection();
    send(run_outcomes(job, 72, 9));
    self->send(w, flush_atom::value);
  }
  job_result res;
  self->request(w, caf::infinite, finish_atom::value, job, job_status::completed, false)
    .receive([&](job_result& r) { res = r; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  CHECK(res.status == job_status::completed);
  CHECK(res.error.empty());

  // Every counter equals the database.
  auto counters = b.stage_counters(job);
  std::uint64_t rows = 0;
  for (std::size_t sg = 0; sg < stage_count; ++sg)
    for (std::size_t status = 0; status < 3; ++status) {
      INFO("stage " << to_string(static_cast<stage>(sg)) << ", status "
                    << to_string(static_cast<file_status>(status)));
      CHECK(reg->value(wm::files, labels(sg, status)) == counters[sg][status]);
      CHECK(counters[sg][status] > 0); // the run had every stage and status
      rows += counters[sg][status];
    }
  auto row = b.db->job(job);
  REQUIRE(row);
  auto counted = b.db->count_rows(job);
  CHECK(reg->value(wm::files, labels(0, 0)) == counted.ok);
  CHECK(reg->value(wm::bytes, {}) == row->processed_bytes);
  CHECK(reg->value(wm::bytes, {}) == counted.ok_bytes);
  CHECK(rows < sent); // duplicates were sent and not counted
  // One commit, one observation of each histogram; every outcome sent was in one
  // successful commit (the redone ones twice, the held batch once).
  const double commits = reg->value(wm::commits, {});
  CHECK(reg->value(wm::batch_size, {}) == commits);
  CHECK(reg->value(wm::duration, {}) == commits);
  CHECK(reg->sum(wm::batch_size, {}) == static_cast<double>(sent));
  CHECK(reg->sum(wm::duration, {}) > 0);
  CHECK(reg->value(wm::buffered, {}) == 0);
  CHECK(reg->value(wm::connection_lost, {}) == (b.cut_connection ? 1 : 0));
  const std::string text = reg->render();
  INFO(text);
  CHECK(ms::test::promtool_check(text).empty());
  self->send_exit(w, caf::exit_reason::user_shutdown);
}

/// Rows of `sql` on a raw read-only connection to the SQLite file `path`.
stage_matrix sqlite_stage_counters(const std::string& path, std::uint64_t job) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db,
                             "SELECT stage, ok_files, failed_files, skipped_files"
                             " FROM job_stage_counters WHERE job_id = ?1",
                             -1, &s, nullptr) == SQLITE_OK);
  sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(job));
  ms::test::contract::text_rows rows;
  while (sqlite3_step(s) == SQLITE_ROW) {
    std::vector<std::string> r;
    for (int c = 0; c < 4; ++c)
      r.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(s, c)));
    rows.push_back(std::move(r));
  }
  sqlite3_finalize(s);
  sqlite3_close_v2(db);
  return ms::test::contract::counters_matrix(rows);
}

} // namespace

TEST_CASE("writer metrics equal the database counts after a run of mixed stages and statuses",
          "[metrics][writer]") {
  test::temp_dir dbdir;
  const std::string path = dbdir / "t.db";
  backend b;
  b.db = std::shared_ptr<storage::store>{storage::open_store(path)};
  b.stage_counters = [path](std::uint64_t job) { return sqlite_stage_counters(path, job); };
  check_writer_metrics(b);
}

TEST_CASE("writer metrics equal the database counts on PostgreSQL with a lost connection",
          "[metrics][writer][postgres]") {
  ms::test::pg_database pg;
  backend b;
  b.db = std::shared_ptr<storage::store>{storage::open_store(pg.url())};
  b.stage_counters = [&pg](std::uint64_t job) {
    return ms::test::contract::counters_matrix(
        pg.rows("SELECT stage, ok_files, failed_files, skipped_files"
                " FROM job_stage_counters WHERE job_id = $1",
                {std::to_string(job)}));
  };
  b.cut_connection = [&pg] {
    CHECK(pg.integer("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                     " AND application_name = 'mediasync'") == 1);
  };
  check_writer_metrics(b);
}

TEST_CASE("writer without metrics runs as before", "[metrics][writer]") {
  // A null registry: nothing declared, nothing counted, the commits happen.
  test::temp_dir dir;
  caf::actor_system_config cfg;
  add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  auto db = std::shared_ptr<storage::store>{storage::open_store(dir / "t.db")};
  auto job = db->create_job(dir.path(), dir.path(), "{}");
  auto w = spawn_progress_writer(sys, db, writer_settings{4, std::chrono::hours(1)});
  caf::scoped_actor self{sys};
  self->request(w, caf::infinite, open_atom::value, job,
                caf::actor_cast<durable_listener_actor>(self))
    .receive([](job_row&) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  self->send(w, outcome_atom::value, run_outcomes(job, 0, 6));
  job_result res;
  self->request(w, caf::infinite, finish_atom::value, job, job_status::completed, false)
    .receive([&](job_result& r) { res = r; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  CHECK(res.counters.processed_files == 2);
  CHECK(res.counters.failed_files == 2);
  CHECK(res.counters.skipped_files == 2);
  self->send_exit(w, caf::exit_reason::user_shutdown);
}
