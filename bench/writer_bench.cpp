// writer_bench: throughput of storage::store::commit() against a plain sqlite3 loop.
//
// Usage: writer_bench [--rows N] [--batch N] [--dir DIR] [--runs N]
//   --rows N    outcomes per run (default 200000)
//   --batch N   outcomes per commit / per transaction (default 200)
//   --dir DIR   where the scratch databases go (default /dev/shm)
//   --runs N    runs of each variant, alternating; medians are reported (default 5)
//
// Both variants write the same rows (paths "dir0042/file000123.jpg" in sorted
// order, half of them ok + touches_media, a quarter skipped, a quarter failed)
// into a fresh database whose schema the store's migrations created, with the
// same PRAGMAs (storage::sqlite_write_pragmas()) and one transaction per batch:
//   store  store::commit(): INSERT ... ON CONFLICT DO NOTHING per result,
//          media_items upsert for new results that touch media, one counter
//          UPDATE of sync_jobs per batch;
//   raw    the hand-written minimum: plain INSERT into file_results and plain
//          INSERT into media_items for the rows that touch media.
//   actor  the progress-writer actor itself: every outcome sent as its own message (as
//          the coordinator forwards worker results), committed by batch size, timed
//          until the last durable ack (includes the per-batch syncfs of --dir).
// The timed part is the commit loop only (not open, migration or close).
// The store run is also followed by a lookup() of every path (reported apart).
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/messages.hpp"
#include "actors/progress_writer.hpp"
#include "storage/sqlite_store.hpp"
#include "bench/bench_common.hpp"
#include "storage/store.hpp"

namespace {

using namespace ms::bench;

struct options {
  std::uint64_t rows = 200000;
  std::size_t batch = 200;
  std::string dir = "/dev/shm";
  int runs = 5;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "writer_bench: %s\nusage: writer_bench [--rows N] [--batch N] [--dir DIR] "
               "[--runs N]\n",
               msg);
  std::exit(2);
}

std::uint64_t parse_count(const char* opt, const char* v) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n == 0)
    usage((std::string(opt) + " needs a positive integer, got '" + v + "'").c_str());
  return n;
}

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage("benchmark of store::commit against a raw sqlite3 loop");
    if (i + 1 >= argc) usage((a + " needs a value").c_str());
    const char* v = argv[++i];
    if (a == "--rows")
      o.rows = parse_count("--rows", v);
    else if (a == "--batch")
      o.batch = parse_count("--batch", v);
    else if (a == "--dir")
      o.dir = v;
    else if (a == "--runs")
      o.runs = static_cast<int>(parse_count("--runs", v));
    else
      usage(("unknown option '" + a + "'").c_str());
  }
  return o;
}


void remove_db(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path + suffix).c_str());
}

std::string now_iso() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(ts.tv_nsec / 1000000));
  return buf;
}



/// Outcomes per second of one timed loop, by wall clock and by CPU time
/// (the latter is less disturbed by other load on a shared machine).
struct rate {
  double wall = 0;
  double cpu = 0;
};

struct store_result {
  rate commit;
  double lookup_per_s = 0;
};

store_result run_store(const std::string& db, const batches& data, std::uint64_t rows) {
  remove_db(db);
  auto st = ms::storage::open_store(db);
  std::uint64_t job = st->create_job("/src", "/lib", "{}");
  if (job != data.front().front().job_id) throw std::runtime_error("unexpected job id");

  auto t0 = clock_type::now();
  double c0 = cpu_seconds();
  std::uint64_t inserted = 0;
  for (const auto& b : data) inserted += st->commit(job, "/src", b).inserted;
  double commit_s = seconds_since(t0), commit_cpu = cpu_seconds() - c0;
  if (inserted != rows) throw std::runtime_error("store inserted " + std::to_string(inserted));

  std::vector<std::string> paths;
  std::vector<ms::known_file> known;
  std::uint64_t looked = 0, with_media = 0;
  t0 = clock_type::now();
  for (const auto& b : data) {
    paths.clear();
    for (const auto& f : b) paths.push_back(f.path);
    st->lookup(job, "/src", paths, known);
    looked += known.size();
    for (const auto& k : known) with_media += k.has_media && k.has_result;
  }
  double lookup_s = seconds_since(t0);
  if (with_media != (rows + 1) / 2)
    throw std::runtime_error("lookup found " + std::to_string(with_media) + " media items");
  st.reset();
  remove_db(db);
  store_result r;
  r.commit = {static_cast<double>(rows) / commit_s, static_cast<double>(rows) / commit_cpu};
  r.lookup_per_s = static_cast<double>(looked) / lookup_s;
  return r;
}

/// The progress-writer actor fed one outcome per message; timed until the last durable ack.
rate run_actor(caf::actor_system& sys, const std::string& db, const std::string& dir,
               const batches& data, std::uint64_t rows, std::size_t batch) {
  remove_db(db);
  std::shared_ptr<ms::storage::store> st{ms::storage::open_store(db)};
  std::uint64_t job = st->create_job("/src", dir, "{}");
  auto writer = ms::spawn_progress_writer(sys, st, ms::writer_settings{batch, std::chrono::milliseconds(100)});
  caf::scoped_actor self{sys};
  self->request(writer, caf::infinite, ms::open_atom::value, job,
                caf::actor_cast<ms::durable_listener_actor>(self))
    .receive([](ms::job_row&) {}, [](caf::error& e) { throw std::runtime_error(caf::to_string(e)); });
  auto t0 = clock_type::now();
  double c0 = cpu_seconds();
  for (const auto& b : data)
    for (const auto& f : b)
      self->send(writer, ms::outcome_atom::value, std::vector<ms::file_outcome>{f});
  std::uint64_t acked = 0;
  while (acked < rows)
    self->receive([&](ms::durable_atom, const ms::job_progress& p) { acked += p.committed; });
  double s = seconds_since(t0), cpu = cpu_seconds() - c0;
  self->send_exit(writer, caf::exit_reason::user_shutdown);
  self->wait_for(writer);
  st.reset();
  remove_db(db);
  return {static_cast<double>(rows) / s, static_cast<double>(rows) / cpu};
}

void check(sqlite3* db, int rc, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE)
    throw std::runtime_error(std::string("raw loop: ") + what + ": " + sqlite3_errmsg(db));
}

rate run_raw(const std::string& path, const batches& data, std::uint64_t rows) {
  remove_db(path);
  {
    // The store creates the schema, so both variants write identical tables and indexes.
    auto st = ms::storage::open_store(path);
    st->create_job("/src", "/lib", "{}");
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  check(db, rc, "open");
  std::string pragmas(ms::storage::sqlite_write_pragmas());
  check(db, sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, nullptr), "pragmas");

  sqlite3_stmt* ins = nullptr;
  sqlite3_stmt* med = nullptr;
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  check(db,
        sqlite3_prepare_v2(db,
                           "INSERT INTO file_results (job_id, path, stage, status, size, sha256,"
                           " error, duration_us, recorded_at) VALUES (?,?,?,?,?,?,?,?,?)",
                           -1, &ins, nullptr),
        "prepare");
  check(db,
        sqlite3_prepare_v2(db,
                           "INSERT INTO media_items (source_root, path, library_path, size,"
                           " mtime_ns, sha256, mime, first_job_id, last_job_id)"
                           " VALUES (?,?,?,?,?,?,?,?,?)",
                           -1, &med, nullptr),
        "prepare");
  check(db, sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, nullptr), "prepare");
  check(db, sqlite3_prepare_v2(db, "COMMIT", -1, &commit, nullptr), "prepare");

  auto text = [](sqlite3_stmt* s, int i, const std::string& v) {
    if (v.empty())
      sqlite3_bind_null(s, i);
    else
      sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  };
  const std::int64_t job = 1;

  auto t0 = clock_type::now();
  double c0 = cpu_seconds();
  for (const auto& b : data) {
    std::string ts = now_iso();
    check(db, sqlite3_step(begin), "begin");
    sqlite3_reset(begin);
    for (const auto& f : b) {
      sqlite3_bind_int64(ins, 1, job);
      sqlite3_bind_text(ins, 2, f.path.data(), static_cast<int>(f.path.size()), SQLITE_STATIC);
      std::string_view stg = ms::to_string(f.stg), status = ms::to_string(f.status);
      sqlite3_bind_text(ins, 3, stg.data(), static_cast<int>(stg.size()), SQLITE_STATIC);
      sqlite3_bind_text(ins, 4, status.data(), static_cast<int>(status.size()), SQLITE_STATIC);
      sqlite3_bind_int64(ins, 5, static_cast<std::int64_t>(f.size));
      text(ins, 6, f.sha256);
      text(ins, 7, f.error);
      sqlite3_bind_int64(ins, 8, f.duration_us);
      sqlite3_bind_text(ins, 9, ts.data(), static_cast<int>(ts.size()), SQLITE_STATIC);
      check(db, sqlite3_step(ins), "insert file_results");
      sqlite3_reset(ins);
      if (f.touches_media) {
        sqlite3_bind_text(med, 1, "/src", 4, SQLITE_STATIC);
        sqlite3_bind_text(med, 2, f.path.data(), static_cast<int>(f.path.size()), SQLITE_STATIC);
        text(med, 3, f.library_path);
        sqlite3_bind_int64(med, 4, static_cast<std::int64_t>(f.size));
        sqlite3_bind_int64(med, 5, f.mtime_ns);
        text(med, 6, f.sha256);
        text(med, 7, f.mime);
        sqlite3_bind_int64(med, 8, job);
        sqlite3_bind_int64(med, 9, job);
        check(db, sqlite3_step(med), "insert media_items");
        sqlite3_reset(med);
      }
    }
    check(db, sqlite3_step(commit), "commit");
    sqlite3_reset(commit);
  }
  double s = seconds_since(t0), cpu = cpu_seconds() - c0;

  sqlite3_stmt* cnt = nullptr;
  check(db, sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM file_results", -1, &cnt, nullptr),
        "prepare");
  if (sqlite3_step(cnt) != SQLITE_ROW ||
      static_cast<std::uint64_t>(sqlite3_column_int64(cnt, 0)) != rows)
    throw std::runtime_error("raw loop: wrong row count");
  for (sqlite3_stmt* st : {ins, med, begin, commit, cnt}) sqlite3_finalize(st);
  sqlite3_close_v2(db);
  remove_db(path);
  return {static_cast<double>(rows) / s, static_cast<double>(rows) / cpu};
}


} // namespace

int main(int argc, char** argv) {
  options o = parse_args(argc, argv);
  std::string base = o.dir + "/writer_bench." + std::to_string(::getpid());
  std::string store_db = base + ".store.db", raw_db = base + ".raw.db";
  std::string actor_db = base + ".actor.db";
  caf::actor_system_config cfg;
  ms::add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  cfg.set("scheduler.policy", caf::atom("sharing"));
  caf::actor_system sys{cfg};
  try {
    batches data = make_batches(o.rows, o.batch, 1);
    std::printf("writer_bench: %llu outcomes, batch %zu, dir %s, %d runs each (alternating), "
                "SQLite %s\n",
                static_cast<unsigned long long>(o.rows), o.batch, o.dir.c_str(), o.runs,
                sqlite3_libversion());
    std::vector<double> store_wall, raw_wall, store_cpu, raw_cpu, lookup_rates, actor_wall;
    for (int r = 0; r < o.runs; ++r) {
      // Alternate which variant goes first, so neither always gets the warm (or cold) slot.
      rate raw;
      store_result sr;
      if (r % 2 == 0) {
        sr = run_store(store_db, data, o.rows);
        raw = run_raw(raw_db, data, o.rows);
      } else {
        raw = run_raw(raw_db, data, o.rows);
        sr = run_store(store_db, data, o.rows);
      }
      rate act = run_actor(sys, actor_db, o.dir, data, o.rows, o.batch);
      actor_wall.push_back(act.wall);
      std::printf("run %d: progress-writer actor %7.0f outcomes/s (one message each)\n", r + 1,
                  act.wall);
      store_wall.push_back(sr.commit.wall);
      store_cpu.push_back(sr.commit.cpu);
      raw_wall.push_back(raw.wall);
      raw_cpu.push_back(raw.cpu);
      lookup_rates.push_back(sr.lookup_per_s);
      std::printf("run %d: store.commit %7.0f outcomes/s (cpu %7.0f)   raw sqlite3 loop %7.0f "
                  "outcomes/s (cpu %7.0f)   store.lookup %7.0f paths/s\n",
                  r + 1, sr.commit.wall, sr.commit.cpu, raw.wall, raw.cpu, sr.lookup_per_s);
    }
    double ms = median(store_wall), mr = median(raw_wall);
    double cs = median(store_cpu), cr = median(raw_cpu);
    std::printf("median wall clock: store.commit %.0f outcomes/s, raw sqlite3 loop %.0f "
                "outcomes/s, ratio store/raw %.2f\n",
                ms, mr, ms / mr);
    std::printf("median by CPU time: store.commit %.0f outcomes/s, raw sqlite3 loop %.0f "
                "outcomes/s, ratio store/raw %.2f\n",
                cs, cr, cs / cr);
    std::printf("median wall clock: progress-writer actor %.0f outcomes/s, ratio actor/raw %.2f\n",
                median(actor_wall), median(actor_wall) / mr);
    std::printf("median: store.lookup %.0f paths/s (batches of %zu)\n", median(lookup_rates),
                o.batch);
  } catch (const std::exception& e) {
    remove_db(store_db);
    remove_db(raw_db);
    remove_db(actor_db);
    std::fprintf(stderr, "writer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
