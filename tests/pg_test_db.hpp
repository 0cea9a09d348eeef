// PostgreSQL test databases on the test server that tests/pg_server.sh starts
// (a CTest fixture: ctest sets MEDIASYNC_TEST_PG_DIR). By hand:
//   bash tests/pg_server.sh start /tmp/pgt
//   MEDIASYNC_TEST_PG_DIR=/tmp/pgt build/tests/ms_tests "[postgres]"
//   bash tests/pg_server.sh stop /tmp/pgt
// ctest runs tests in parallel, so every test works in a database of its own.
#pragma once

#include <string>
#include <vector>

namespace ms::test {

/// The test server's directory ($MEDIASYNC_TEST_PG_DIR). Throws a
/// std::runtime_error explaining how to start the server when it is unset or
/// holds no url file.
std::string pg_server_dir();

/// The URL of database `dbname` on the test server (unix socket, trust auth,
/// as the superuser role root).
std::string pg_url(const std::string& dbname);

/// The test server's TCP port (127.0.0.1, scram-sha-256 auth).
int pg_port();

/// The test server's unix socket directory.
std::string pg_socket_dir();

/// A fresh, empty database (CREATE DATABASE with a unique name), dropped
/// WITH (FORCE) on destruction, so connections still open do not keep it.
class pg_database {
public:
  pg_database();
  ~pg_database();
  pg_database(const pg_database&) = delete;
  pg_database& operator=(const pg_database&) = delete;

  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }

  /// Runs `sql` (one or more statements, no parameters) on this database.
  void exec(const std::string& sql) const;
  /// Rows of a query with text parameters $1.. ; every value as its text
  /// output ("<NULL>" for NULL). For exact bytes select the bytea:
  /// convert_to(col, 'UTF8') or the *_raw column, which read as "\x..." hex.
  std::vector<std::vector<std::string>> rows(const std::string& sql,
                                             const std::vector<std::string>& params = {}) const;
  /// The first column of the first row; throws if there is none.
  std::string text(const std::string& sql, const std::vector<std::string>& params = {}) const;
  long long integer(const std::string& sql, const std::vector<std::string>& params = {}) const;

private:
  std::string name_;
  std::string url_;
};

/// Runs SQL on the server's `postgres` database (roles, database options, ...).
void pg_admin_exec(const std::string& sql);

/// "\x" + lower-case hex of `bytes`: how a bytea reads back.
std::string pg_hex(const std::string& bytes);

} // namespace ms::test
