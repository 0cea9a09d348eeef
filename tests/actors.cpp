// In-process actor tests: writer batching, the coordinator's window, the supervisor's restart.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <thread>

#include <caf/all.hpp>
#include <sqlite3.h>

#include "actors/file_worker.hpp"
#include "actors/progress_writer.hpp"
#include "actors/supervisor.hpp"
#include "actors/sync_coordinator.hpp"
#include "storage/store.hpp"
#include "test_util.hpp"

using namespace ms;
using namespace std::chrono_literals;

namespace {

struct actor_env {
  test::temp_dir dir;
  std::string db_path = dir / "t.db";
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  actor_env() {
    add_message_types(cfg);
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  std::shared_ptr<storage::store> open() {
    return std::shared_ptr<storage::store>{storage::open_store(db_path)};
  }
  /// A separate read-only connection, as another program would have.
  std::unique_ptr<storage::store> reader() {
    return storage::open_store(db_path, storage::open_mode::read_only);
  }
};

file_outcome ok_outcome(std::uint64_t job, int i) {
  file_outcome o;
  o.job_id = job;
  o.path = "p" + std::to_string(1000 + i);
  o.status = file_status::ok;
  o.size = 10;
  o.sha256 = std::string(64, 'a');
  o.library_path = o.path;  // an ok sync put the file into the library
  o.touches_media = true;
  return o;
}

/// An unchanged file's outcome: recorded, nothing written into the library.
file_outcome unchanged_outcome(std::uint64_t job, int i) {
  auto o = ok_outcome(job, i);
  o.status = file_status::skipped;
  o.error = "unchanged";
  return o;
}

/// Receives the next durable ack, or fails the test after `timeout`.
job_progress next_ack(caf::scoped_actor& self, std::chrono::milliseconds timeout = 5s) {
  job_progress got;
  bool received = false;
  self->receive([&](durable_atom, const job_progress& p) { got = p; received = true; },
                caf::after(timeout) >> [] {});
  REQUIRE(received);
  return got;
}

} // namespace

TEST_CASE("writer commits when batch-size outcomes are buffered", "[writer]") {
  actor_env env;
  auto db = env.open();
  auto src = env.dir / "src";
  std::filesystem::create_directories(src);
  auto job = db->create_job(src, env.dir.path(), "{}");
  // A flush interval far beyond the test: only the batch size can trigger commits.
  auto w = spawn_progress_writer(*env.sys, db, writer_settings{10, std::chrono::hours(1)});
  caf::scoped_actor self{*env.sys};
  auto me = caf::actor_cast<durable_listener_actor>(self);
  self->request(w, caf::infinite, open_atom::value, job, me)
    .receive([](job_row&) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  std::vector<file_outcome> outs;
  for (int i = 0; i < 25; ++i)
    outs.push_back(ok_outcome(job, i));
  self->send(w, outcome_atom::value, std::vector<file_outcome>(outs.begin(), outs.begin() + 7));
  self->send(w, outcome_atom::value, std::vector<file_outcome>(outs.begin() + 7, outs.end()));
  // 25 buffered in two messages: one commit at 25 >= 10? No: the first message (7) stays
  // buffered, the second brings the buffer to 25 and commits all of it at once.
  auto a = next_ack(self);
  CHECK(a.committed == 25);
  CHECK(a.processed_files == 25);
  CHECK(env.reader()->count_rows(job).ok == 25);
  // Below the batch size nothing is committed while the interval has not passed.
  self->send(w, outcome_atom::value, std::vector<file_outcome>{ok_outcome(job, 100)});
  bool early = false;
  self->receive([&](durable_atom, const job_progress&) { early = true; },
                caf::after(300ms) >> [] {});
  CHECK_FALSE(early);
  CHECK(env.reader()->count_rows(job).ok == 25);
  self->send(w, flush_atom::value);
  CHECK(next_ack(self).processed_files == 26);
  // Outcomes that wrote nothing into the library (unchanged files) wait for 8 times the
  // batch size: 79 stay buffered, the 80th commits them all.
  std::vector<file_outcome> skips;
  for (int i = 0; i < 80; ++i)
    skips.push_back(unchanged_outcome(job, 200 + i));
  self->send(w, outcome_atom::value, std::vector<file_outcome>(skips.begin(), skips.end() - 1));
  early = false;
  self->receive([&](durable_atom, const job_progress&) { early = true; },
                caf::after(300ms) >> [] {});
  CHECK_FALSE(early);
  CHECK(env.reader()->count_rows(job).skipped == 0);
  self->send(w, outcome_atom::value, std::vector<file_outcome>{skips.back()});
  a = next_ack(self);
  CHECK(a.committed == 80);
  CHECK(a.skipped_files == 80);
  // Mixed: 9 buffered skips and 9 ok copies stay buffered, the 10th copy commits all 19.
  std::vector<file_outcome> mixed;
  for (int i = 0; i < 9; ++i) {
    mixed.push_back(unchanged_outcome(job, 300 + i));
    mixed.push_back(ok_outcome(job, 400 + i));
  }
  self->send(w, outcome_atom::value, std::move(mixed));
  early = false;
  self->receive([&](durable_atom, const job_progress&) { early = true; },
                caf::after(300ms) >> [] {});
  CHECK_FALSE(early);
  self->send(w, outcome_atom::value, std::vector<file_outcome>{ok_outcome(job, 409)});
  a = next_ack(self);
  CHECK(a.committed == 19);
  CHECK(a.processed_files == 36);
  CHECK(a.skipped_files == 89);
  self->send_exit(w, caf::exit_reason::user_shutdown);
}

TEST_CASE("writer commits by flush interval when the batch is not full", "[writer]") {
  actor_env env;
  auto db = env.open();
  auto job = db->create_job(env.dir.path(), env.dir.path(), "{}");
  auto w = spawn_progress_writer(*env.sys, db, writer_settings{1000, 50ms});
  caf::scoped_actor self{*env.sys};
  auto me = caf::actor_cast<durable_listener_actor>(self);
  self->request(w, caf::infinite, open_atom::value, job, me).receive([](job_row&) {}, [](caf::error&) {});
  auto t0 = std::chrono::steady_clock::now();
  self->send(w, outcome_atom::value, std::vector<file_outcome>{ok_outcome(job, 1), ok_outcome(job, 2)});
  auto a = next_ack(self, 5s);
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(a.committed == 2);
  CHECK(a.processed_files == 2);
  // The commit came from the timer, not from the (unreached) batch size.
  CHECK(waited >= 45ms);
  self->send_exit(w, caf::exit_reason::user_shutdown);
}

TEST_CASE("writer finish commits the rest and records the final status", "[writer]") {
  actor_env env;
  auto db = env.open();
  auto job = db->create_job(env.dir.path(), env.dir.path(), "{}");
  auto w = spawn_progress_writer(*env.sys, db, writer_settings{1000, std::chrono::hours(1)});
  caf::scoped_actor self{*env.sys};
  self->request(w, caf::infinite, open_atom::value, job, caf::actor_cast<durable_listener_actor>(self))
    .receive([](job_row&) {}, [](caf::error&) {});
  auto failed = ok_outcome(job, 2);
  failed.status = file_status::failed;
  failed.error = "boom";
  self->send(w, outcome_atom::value, std::vector<file_outcome>{ok_outcome(job, 1), failed});
  job_result res;
  self->request(w, caf::infinite, finish_atom::value, job, job_status::interrupted, false)
    .receive([&](job_result& r) { res = r; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  CHECK(res.status == job_status::interrupted);
  CHECK(res.counters.processed_files == 1);
  CHECK(res.counters.failed_files == 1);
  auto row = env.reader()->job(job);
  REQUIRE(row);
  CHECK(row->status == job_status::interrupted);
  CHECK(row->finished_at.empty());
  self->send_exit(w, caf::exit_reason::user_shutdown);
}

TEST_CASE("coordinator keeps at most `window` tasks not yet durable", "[coordinator]") {
  actor_env env;
  auto src = env.dir / "src";
  auto dst = env.dir / "dst";
  test::make_tree(src, 40, 100, 4);
  std::filesystem::create_directories(dst);
  auto db = env.open();
  auto job = db->create_job(src, dst, "{}");
  // Nothing becomes durable until the test says flush: only the window limits dispatch.
  auto w = spawn_progress_writer(*env.sys, db, writer_settings{100000, std::chrono::hours(1)});
  std::atomic<int> calls{0};
  auto fn = [&calls](const file_task& t) {
    ++calls;
    file_outcome o;
    o.path = t.path;
    o.size = t.size;
    o.status = file_status::ok;
    return o;
  };
  worker_pools workers(stage_count);
  for (int i = 0; i < 4; ++i)
    workers[0].push_back(spawn_file_worker(*env.sys, fn));
  caf::scoped_actor self{*env.sys};
  job_spec spec;
  spec.job_id = job;
  spec.source_root = src;
  spec.dest_root = dst;
  spec.window = 8;
  auto c = spawn_sync_coordinator(*env.sys, spec, w, workers,
                                  caf::actor_cast<supervisor_actor>(self), caf::actor{});
  auto wait_calls = [&](int n) {
    for (int i = 0; i < 500 && calls < n; ++i)
      std::this_thread::sleep_for(10ms);
  };
  wait_calls(8);
  std::this_thread::sleep_for(300ms);
  CHECK(calls == 8);  // the window is full: no more dispatch without a durable ack
  int rounds = 0;
  job_result res;
  bool done = false;
  while (!done && rounds++ < 20) {
    self->send(w, flush_atom::value);
    self->receive([&](done_atom, job_result& r) { res = r; done = true; },
                  caf::after(200ms) >> [] {});
    CHECK(calls <= 8 * rounds + 8);  // each flush frees at most one window
  }
  REQUIRE(done);
  CHECK(res.status == job_status::completed);
  CHECK(calls == 40);
  CHECK(res.counters.processed_files == 40);
  for (auto& x : workers[0])
    self->send_exit(x, caf::exit_reason::user_shutdown);
  self->send_exit(w, caf::exit_reason::user_shutdown);
}

TEST_CASE("supervisor replaces a crashed worker and its task becomes a failed row", "[supervisor]") {
  actor_env env;
  auto src = env.dir / "src";
  auto dst = env.dir / "dst";
  auto paths = test::make_tree(src, 20, 100, 2);
  test::write_file(src + "/boom1.bin", "x");
  test::write_file(src + "/d0/boom2.bin", "y");
  std::filesystem::create_directories(dst);
  supervisor_settings ss;
  ss.workers = {2, 0, 0};
  ss.writer = writer_settings{5, 20ms};
  std::atomic<int> ingested{0};
  ss.make_work[0] = [&ingested] {
    return [real = make_library_ingest(), &ingested](const file_task& t) {
      if (t.path.find("boom") != std::string::npos)
        throw std::runtime_error("decoder exploded on " + t.path);
      ++ingested;
      return real(t);
    };
  };
  auto sup = spawn_supervisor(*env.sys, env.open(), ss);
  caf::scoped_actor self{*env.sys};
  job_spec spec;
  spec.source_root = src;
  spec.dest_root = dst;
  spec.settings_json = "{}";
  spec.window = 64;
  job_result res;
  self->request(sup, caf::infinite, run_atom::value, spec, caf::actor{})
    .receive([&](job_result& r) { res = r; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  CHECK(res.status == job_status::completed);
  CHECK(res.counters.processed_files == 20);
  CHECK(res.counters.failed_files == 2);
  CHECK(ingested == 20);  // the job went on after both crashes, with replaced workers
  auto reader = env.reader();
  auto counts = reader->count_rows(res.job_id);
  CHECK(counts.ok == 20);
  CHECK(counts.failed == 2);
  // The failed rows carry the worker's exception message.
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(env.db_path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, "SELECT path, error FROM file_results WHERE status = 'failed' "
                             "ORDER BY path", -1, &st, nullptr) == SQLITE_OK);
  std::vector<std::pair<std::string, std::string>> failed;
  while (sqlite3_step(st) == SQLITE_ROW)
    failed.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)),
                        reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
  sqlite3_finalize(st);
  sqlite3_close(raw);
  for (auto& f : failed)
    UNSCOPED_INFO(f.first << ": " << f.second);
  REQUIRE(failed.size() == 2);
  CHECK(failed[0].first == "boom1.bin");
  CHECK_THAT(failed[0].second, Catch::Contains("decoder exploded on boom1.bin"));
  CHECK_THAT(failed[1].second, Catch::Contains("worker died"));
  for (auto& p : paths)
    CHECK(test::read_file(dst + "/" + p) == test::read_file(src + "/" + p));
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_CASE("each stage runs with its own concurrency and files flow sync -> processing -> watermark",
          "[supervisor][stages]") {
  actor_env env;
  auto src = env.dir / "src";
  auto dst = env.dir / "dst";
  test::make_tree(src, 60, 10, 3);
  std::filesystem::create_directories(dst);
  // Per stage: calls now running, the most seen at once, and the files seen.
  struct gauge {
    std::atomic<int> now{0}, max{0}, calls{0};
  };
  auto gauges = std::make_shared<std::array<gauge, stage_count>>();
  auto timed = [gauges](stage s, auto&& body) {
    auto& g = (*gauges)[static_cast<std::size_t>(s)];
    int n = ++g.now;
    for (int m = g.max; n > m && !g.max.compare_exchange_weak(m, n);) {
    }
    // Long enough for the pool to fill up; processing is the slow stage, so its queue
    // builds up and all three of its workers are busy at once whatever the timing.
    std::this_thread::sleep_for(s == stage::processing ? 20ms : 5ms);
    auto out = body();
    --g.now;
    ++g.calls;
    return out;
  };
  supervisor_settings ss;
  ss.workers = {2, 3, 1};
  ss.writer = writer_settings{20, 10ms};
  ss.make_work[0] = [timed] {
    return [timed](const file_task& t) {
      return timed(stage::sync, [&] {
        file_outcome o;
        o.path = t.path;
        o.status = file_status::ok;
        o.mime = t.path.find("/f1") != std::string::npos ? "text/plain" : "image/jpeg";
        o.library_path = t.path;
        o.touches_media = true;
        return o;
      });
    };
  };
  ss.make_work[1] = [timed] {
    return [timed](const file_task& t) {
      return timed(stage::processing, [&] {
        file_outcome o;
        o.path = t.path;
        o.status = file_status::ok;
        o.touches_media = true;
        o.width = 640;
        o.height = 480;
        o.thumbnail_paths = {".thumbnails/1024/" + t.path + ".jpg"};
        return o;
      });
    };
  };
  ss.make_work[2] = [timed] {
    return [timed](const file_task& t) {
      return timed(stage::watermark, [&] {
        file_outcome o;
        o.path = t.path;
        o.status = t.thumbnail == ".thumbnails/1024/" + t.path + ".jpg" ? file_status::ok
                                                                           : file_status::failed;
        o.touches_media = true;
        o.preview_path = ".previews/" + t.path + ".jpg";
        return o;
      });
    };
  };
  auto sup = spawn_supervisor(*env.sys, env.open(), ss);
  caf::scoped_actor self{*env.sys};
  job_spec spec;
  spec.source_root = src;
  spec.dest_root = dst;
  spec.settings_json = "{}";
  spec.window = 64;
  spec.thumbnails = true;
  spec.watermark = true;
  job_result res;
  self->request(sup, caf::infinite, run_atom::value, spec, caf::actor{})
    .receive([&](job_result& r) { res = r; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  REQUIRE(res.status == job_status::completed);
  // f1x files are text: the image stages skip them (11 of 60: f1, f10..f19).
  auto& g = *gauges;
  CHECK(g[0].calls == 60);
  CHECK(g[1].calls == 49);
  CHECK(g[2].calls == 49);
  // Each pool is used up to its size and never beyond.
  CHECK(g[0].max == 2);
  CHECK(g[1].max == 3);
  CHECK(g[2].max == 1);
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(env.db_path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  auto count = [&](const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(raw, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    auto n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
  };
  CHECK(count("SELECT count(*) FROM file_results WHERE stage='processing' AND status='ok'") == 49);
  CHECK(count("SELECT count(*) FROM file_results WHERE stage='watermark' AND status='ok'") == 49);
  CHECK(count("SELECT count(*) FROM file_results WHERE stage='processing' AND status='skipped'"
              " AND error LIKE 'not an image%'") == 11);
  CHECK(count("SELECT count(*) FROM file_results WHERE stage='watermark' AND status='skipped'") == 11);
  // Per-stage counters equal the rows.
  for (auto s : {"sync", "processing", "watermark"})
    CHECK(count(std::string{"SELECT (SELECT ok_files + failed_files + skipped_files FROM "
                            "job_stage_counters WHERE stage='"} + s + "') - (SELECT count(*) "
                "FROM file_results WHERE stage='" + s + "')") == 0);
  CHECK(count("SELECT count(*) FROM media_items WHERE width = 640 AND preview_path IS NOT NULL") == 49);
  sqlite3_close(raw);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}
