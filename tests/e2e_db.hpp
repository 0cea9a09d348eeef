// The database of an end-to-end test, read the way another program would read it
// while jobs run: a connection of the test's own, SQLite or PostgreSQL alike.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pg_test_db.hpp"
#include "test_util.hpp"

namespace ms::test {

/// The database of one end-to-end test, on SQLite (a file in `t`) or PostgreSQL (a fresh
/// database on the test server).
class test_db {
public:
  /// `kind`: "sqlite" (the file `file` in `t`) or "postgres".
  test_db(const std::string& kind, const temp_dir& t, const std::string& file = "m.db");
  const std::string& url() const { return url_; }
  bool exists() const;

  /// Rows of a query, each column as text (NULL as "<null>"). Throws with the database's message.
  std::vector<std::vector<std::string>> rows(const std::string& sql) const;
  /// The first column of the first row ("" if none).
  std::string one(const std::string& sql) const;
  long num(const std::string& sql) const { return std::stol(one(sql)); }

private:
  std::string kind_;
  std::string url_;
  std::unique_ptr<pg_database> pg_;
};

/// Both backends: every test tagged with it runs once on SQLite and once on PostgreSQL.
#define EACH_BACKEND GENERATE(as<std::string>{}, "sqlite", "postgres")

/// One consistent snapshot (a single statement) of a job's counters next to its rows:
/// append the job id. Columns: the 4 counters, then the same 4 counted from file_results.
extern const char* const counters_vs_rows;

/// Checks the counters invariant of a job: counters equal the sync rows.
void check_counters(const test_db& db, int job);

} // namespace ms::test
