// pg_writer_bench: throughput of storage::store::commit() on PostgreSQL against
// a plain libpq COPY loop writing the same rows.
//
// Usage: pg_writer_bench [--url URL] [--rows N] [--batch N] [--runs N]
//   --url URL   a PostgreSQL URL whose role may CREATE DATABASE (default: the
//               test server's, read from $MEDIASYNC_TEST_PG_DIR/url); the bench
//               works in a scratch database ms_bench_<pid> that it creates on
//               that server and drops at the end
//   --rows N    outcomes per run (default 200000)
//   --batch N   outcomes per commit / per transaction (default 500)
//   --runs N    runs of each variant, alternating; medians are reported (default 5)
//
// Both variants write the same rows (paths "dir0042/file000123.jpg" in sorted
// order, half of them ok + touches_media, a quarter skipped, a quarter failed)
// into tables the store's migration created (all indexes in place), emptied
// (TRUNCATE) before every run, one transaction per batch:
//   store  store::commit() (see storage/postgres_store.hpp): COPY into
//          file_results, media_items upsert (ON CONFLICT DO UPDATE) for the rows
//          that touch media and the sync_jobs counter UPDATE in one statement;
//   copy   the hand-written minimum: BEGIN, COPY file_results, COPY
//          media_items (plain rows, no upsert) for the rows that touch media,
//          COMMIT; no counters.
// The timed part is the commit loop only (not connecting or creating tables).
// The store run is also followed by a lookup() of every path (reported apart).
// Wall-clock rates include the server's work; the client and the server share
// the machine's cores.
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "storage/postgres_store.hpp"
#include "bench/bench_common.hpp"
#include "storage/store.hpp"

namespace {

using namespace ms::bench;

struct options {
  std::string url;
  std::uint64_t rows = 200000;
  std::size_t batch = 500;
  int runs = 5;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr,
               "pg_writer_bench: %s\nusage: pg_writer_bench [--url URL] [--rows N] [--batch N] "
               "[--runs N]\n",
               msg.c_str());
  std::exit(2);
}

std::uint64_t parse_count(const std::string& opt, const char* v) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n == 0)
    usage(opt + " needs a positive integer, got '" + v + "'");
  return n;
}

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage("benchmark of store::commit against a libpq COPY loop");
    if (i + 1 >= argc) usage(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--url")
      o.url = v;
    else if (a == "--rows")
      o.rows = parse_count(a, v);
    else if (a == "--batch")
      o.batch = parse_count(a, v);
    else if (a == "--runs")
      o.runs = static_cast<int>(parse_count(a, v));
    else
      usage("unknown option '" + a + "'");
  }
  if (o.url.empty()) {
    const char* dir = std::getenv("MEDIASYNC_TEST_PG_DIR");
    if (dir && *dir) std::getline(std::ifstream(std::string(dir) + "/url"), o.url);
    if (o.url.empty())
      usage("--url is required (or MEDIASYNC_TEST_PG_DIR naming a tests/pg_server.sh server)");
  }
  return o;
}




// -- libpq helpers -------------------------------------------------------------

struct conn_closer {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_closer>;

conn_ptr connect(const std::string& conninfo) {
  conn_ptr c(PQconnectdb(conninfo.c_str()));
  if (!c || PQstatus(c.get()) != CONNECTION_OK)
    throw std::runtime_error("cannot connect to '" + ms::storage::redact_url(conninfo) +
                             "': " + (c ? PQerrorMessage(c.get()) : "out of memory"));
  return c;
}

void exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  ExecStatusType st = PQresultStatus(r);
  std::string err = PQresultErrorMessage(r);
  PQclear(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    throw std::runtime_error("'" + sql.substr(0, 80) + "': " + err);
}

std::string query_one(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("'" + sql + "': " + err);
  }
  std::string v = PQgetvalue(r, 0, 0);
  PQclear(r);
  return v;
}

/// `url` (a URL or key=value string) as a key=value string naming `dbname`.
std::string with_dbname(const std::string& url, const std::string& dbname) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
  if (!opts) {
    std::string msg = err ? err : "out of memory";
    PQfreemem(err);
    throw std::runtime_error("bad --url '" + ms::storage::redact_url(url) + "': " + msg);
  }
  auto quote = [](const std::string& v) {
    std::string q = "'";
    for (char c : v) {
      if (c == '\'' || c == '\\') q += '\\';
      q += c;
    }
    return q + "'";
  };
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (std::strcmp(o->keyword, "dbname") == 0 || !o->val) continue;
    out += std::string(o->keyword) + "=" + quote(o->val) + " ";
  }
  PQconninfoFree(opts);
  return out + "dbname=" + quote(dbname);
}

/// Appends `v` to a COPY text-format line, escaped.
void copy_text(std::string& line, const std::string& v) {
  if (v.empty()) {
    line += "\\N";
    return;
  }
  for (char c : v) {
    switch (c) {
      case '\\': line += "\\\\"; break;
      case '\t': line += "\\t"; break;
      case '\n': line += "\\n"; break;
      case '\r': line += "\\r"; break;
      default: line += c;
    }
  }
}

void copy_rows(PGconn* c, const std::string& copy_sql, const std::string& data) {
  PGresult* r = PQexec(c, copy_sql.c_str());
  if (PQresultStatus(r) != PGRES_COPY_IN) {
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("copy: " + err);
  }
  PQclear(r);
  if (PQputCopyData(c, data.data(), static_cast<int>(data.size())) != 1 ||
      PQputCopyEnd(c, nullptr) != 1)
    throw std::runtime_error(std::string("copy data: ") + PQerrorMessage(c));
  while ((r = PQgetResult(c)) != nullptr) {
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) throw std::runtime_error("copy end: " + err);
  }
}

// -- the two variants ------------------------------------------------------------

/// Outcomes per second of one timed loop, and the client's CPU microseconds per outcome.
struct rate {
  double per_s = 0;
  double client_us = 0;
};

struct store_result {
  rate commit;
  double lookup_per_s = 0;
};

void empty_tables(PGconn* admin) {
  exec(admin, "TRUNCATE file_results, media_items, sync_jobs RESTART IDENTITY");
}

store_result run_store(PGconn* admin, const std::string& url, const batches& data,
                       std::uint64_t rows) {
  empty_tables(admin);
  auto st = ms::storage::open_store(url);
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
  auto j = st->job(job);
  auto c = st->count_rows(job);
  if (!j || j->processed_files != c.ok || j->failed_files != c.failed ||
      j->skipped_files != c.skipped || c.ok + c.failed + c.skipped != rows)
    throw std::runtime_error("store counters do not match the rows");
  return {{static_cast<double>(rows) / commit_s, commit_cpu * 1e6 / static_cast<double>(rows)},
          static_cast<double>(looked) / lookup_s};
}

rate run_copy(PGconn* admin, const std::string& url, const batches& data, std::uint64_t rows) {
  empty_tables(admin);
  exec(admin, "INSERT INTO sync_jobs (source_root, dest_root, status) VALUES ('/src', '/lib',"
              " 'running')");
  conn_ptr c = connect(url);
  const std::string copy_results =
      "COPY file_results (job_id, path, stage, status, size, sha256, error, duration_us)"
      " FROM STDIN";
  const std::string copy_media =
      "COPY media_items (source_root, path, library_path, size, mtime_ns, sha256, mime,"
      " first_job_id, last_job_id) FROM STDIN";
  std::string results, media;
  auto t0 = clock_type::now();
  double c0 = cpu_seconds();
  for (const auto& b : data) {
    results.clear();
    media.clear();
    for (const auto& f : b) {
      results += "1\t";
      copy_text(results, f.path);
      results += "\t";
      results += ms::to_string(f.stg);
      results += "\t";
      results += ms::to_string(f.status);
      results += "\t" + std::to_string(f.size) + "\t";
      copy_text(results, f.sha256);
      results += "\t";
      copy_text(results, f.error);
      results += "\t" + std::to_string(f.duration_us) + "\n";
      if (f.touches_media) {
        media += "/src\t";
        copy_text(media, f.path);
        media += "\t";
        copy_text(media, f.library_path);
        media += "\t" + std::to_string(f.size) + "\t" + std::to_string(f.mtime_ns) + "\t";
        copy_text(media, f.sha256);
        media += "\t";
        copy_text(media, f.mime);
        media += "\t1\t1\n";
      }
    }
    exec(c.get(), "BEGIN");
    copy_rows(c.get(), copy_results, results);
    if (!media.empty()) copy_rows(c.get(), copy_media, media);
    exec(c.get(), "COMMIT");
  }
  double s = seconds_since(t0), cpu = cpu_seconds() - c0;
  if (std::stoull(query_one(c.get(), "SELECT count(*) FROM file_results")) != rows)
    throw std::runtime_error("copy loop: wrong row count");
  return {static_cast<double>(rows) / s, cpu * 1e6 / static_cast<double>(rows)};
}


} // namespace

int main(int argc, char** argv) {
  options o = parse_args(argc, argv);
  const std::string scratch = "ms_bench_" + std::to_string(::getpid());
  conn_ptr server;
  int rc = 0;
  try {
    server = connect(o.url);
    exec(server.get(), "CREATE DATABASE " + scratch + " ENCODING 'UTF8' TEMPLATE template0");
    const std::string url = with_dbname(o.url, scratch);
    ms::storage::open_store(url).reset(); // the store's migration creates the tables
    conn_ptr admin = connect(url);
    batches data = make_batches(o.rows, o.batch, 1);
    std::printf("pg_writer_bench: %llu outcomes, batch %zu, %d runs each (alternating), "
                "PostgreSQL %s, server %s, scratch database %s\n",
                static_cast<unsigned long long>(o.rows), o.batch, o.runs,
                query_one(admin.get(), "SHOW server_version").c_str(),
                ms::storage::redact_url(o.url).c_str(), scratch.c_str());
    std::printf("server settings: fsync=%s synchronous_commit=%s shared_buffers=%s\n",
                query_one(admin.get(), "SHOW fsync").c_str(),
                query_one(admin.get(), "SHOW synchronous_commit").c_str(),
                query_one(admin.get(), "SHOW shared_buffers").c_str());
    std::vector<double> store_rates, copy_rates, lookup_rates, store_cpu, copy_cpu;
    for (int r = 0; r < o.runs; ++r) {
      // Alternate which variant goes first, so neither always gets the warm (or cold) slot.
      store_result sr;
      rate cr;
      if (r % 2 == 0) {
        sr = run_store(admin.get(), url, data, o.rows);
        cr = run_copy(admin.get(), url, data, o.rows);
      } else {
        cr = run_copy(admin.get(), url, data, o.rows);
        sr = run_store(admin.get(), url, data, o.rows);
      }
      store_rates.push_back(sr.commit.per_s);
      store_cpu.push_back(sr.commit.client_us);
      copy_rates.push_back(cr.per_s);
      copy_cpu.push_back(cr.client_us);
      lookup_rates.push_back(sr.lookup_per_s);
      std::printf("run %d: store.commit %7.0f outcomes/s (client cpu %.2f us/outcome)   "
                  "libpq COPY loop %7.0f outcomes/s (client cpu %.2f us/outcome)   "
                  "store.lookup %7.0f paths/s\n",
                  r + 1, sr.commit.per_s, sr.commit.client_us, cr.per_s, cr.client_us,
                  sr.lookup_per_s);
      std::fflush(stdout);
    }
    double ms_ = median(store_rates), mc = median(copy_rates);
    std::printf("median: store.commit %.0f outcomes/s, libpq COPY loop %.0f outcomes/s, ratio "
                "store/copy %.2f\n",
                ms_, mc, ms_ / mc);
    std::printf("median client cpu: store.commit %.2f us/outcome, libpq COPY loop %.2f "
                "us/outcome\n",
                median(store_cpu), median(copy_cpu));
    std::printf("median: store.lookup %.0f paths/s (batches of %zu)\n", median(lookup_rates),
                o.batch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pg_writer_bench: %s\n", e.what());
    rc = 1;
  }
  if (server) {
    try {
      exec(server.get(), "DROP DATABASE IF EXISTS " + scratch + " WITH (FORCE)");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pg_writer_bench: cannot drop %s: %s\n", scratch.c_str(), e.what());
    }
  }
  return rc;
}
