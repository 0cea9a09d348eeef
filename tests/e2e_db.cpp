#include "e2e_db.hpp"

#include <sqlite3.h>

#include <filesystem>
#include <stdexcept>

#include <catch2/catch.hpp>

namespace fs = std::filesystem;

namespace ms::test {

test_db::test_db(const std::string& kind, const temp_dir& t, const std::string& file)
  : kind_(kind) {
  if (kind == "postgres") {
    pg_ = std::make_unique<pg_database>();
    url_ = pg_->url();
  } else {
    url_ = t / file;
  }
}

bool test_db::exists() const { return pg_ || fs::exists(url_); }

std::vector<std::vector<std::string>> test_db::rows(const std::string& sql) const {
  if (pg_) {
    auto r = pg_->rows(sql);
    for (auto& row : r)
      for (auto& v : row)
        if (v == "<NULL>")
          v = "<null>";
    return r;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(url_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "cannot open";
    sqlite3_close(db);
    throw std::runtime_error(err);
  }
  sqlite3_stmt* st = nullptr;
  std::vector<std::vector<std::string>> out;
  std::string err;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    err = sqlite3_errmsg(db);
  } else {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        auto p = sqlite3_column_blob(st, i);
        row.push_back(p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(st, i))
                        : std::string{"<null>"});
      }
      out.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE)
      err = sqlite3_errmsg(db);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (!err.empty())
    throw std::runtime_error(err);
  return out;
}

std::string test_db::one(const std::string& sql) const {
  auto r = rows(sql);
  return r.empty() || r[0].empty() ? std::string{} : r[0][0];
}

/// One consistent snapshot (a single statement) of a job's counters next to its rows.
const char* const counters_vs_rows =
  "SELECT j.processed_files, j.failed_files, j.skipped_files, j.processed_bytes,"
  " (SELECT count(*) FROM file_results f WHERE f.job_id = j.id AND f.stage='sync' AND f.status='ok'),"
  " (SELECT count(*) FROM file_results f WHERE f.job_id = j.id AND f.stage='sync' AND f.status='failed'),"
  " (SELECT count(*) FROM file_results f WHERE f.job_id = j.id AND f.stage='sync' AND f.status='skipped'),"
  " (SELECT coalesce(sum(size),0) FROM file_results f WHERE f.job_id = j.id AND f.stage='sync' AND f.status='ok')"
  " FROM sync_jobs j WHERE j.id = ";

/// Checks the counters invariant of a job: counters equal the sync rows.
void check_counters(const test_db& db, int job) {
  auto r = db.rows(counters_vs_rows + std::to_string(job));
  REQUIRE(r.size() == 1);
  for (int i = 0; i < 4; ++i)
    CHECK(r[0][i] == r[0][i + 4]);
}

} // namespace ms::test
