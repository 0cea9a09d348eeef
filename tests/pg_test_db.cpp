#include "pg_test_db.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>

#include <pqxx/pqxx>

namespace ms::test {
namespace {

std::string read_first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (!f || !std::getline(f, line) || line.empty()) return {};
  return line;
}

/// The server URL split around the database name: "postgresql:///" and "?host=...".
struct url_parts {
  std::string before, after;
};

url_parts server_url_parts() {
  std::string url = read_first_line(pg_server_dir() + "/url");
  const std::string scheme = "postgresql:///";
  auto q = url.find('?');
  if (url.rfind(scheme, 0) != 0 || q == std::string::npos)
    throw std::runtime_error("unexpected test server URL '" + url + "' in " + pg_server_dir() +
                             "/url");
  return {scheme, url.substr(q)};
}

std::string unique_name() {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "ms_test_%d_%u_%08x", static_cast<int>(::getpid()),
                counter.fetch_add(1), rd());
  return buf;
}

} // namespace

std::string pg_server_dir() {
  const char* dir = std::getenv("MEDIASYNC_TEST_PG_DIR");
  if (!dir || !*dir)
    throw std::runtime_error(
        "MEDIASYNC_TEST_PG_DIR is not set: the PostgreSQL tests need the test server. ctest "
        "starts it (fixture pg_start); by hand: bash tests/pg_server.sh start /tmp/pgt, then "
        "MEDIASYNC_TEST_PG_DIR=/tmp/pgt build/tests/ms_tests \"[postgres]\"");
  std::string d = dir;
  if (read_first_line(d + "/url").empty())
    throw std::runtime_error("no test server in MEDIASYNC_TEST_PG_DIR=" + d + " (" + d +
                             "/url is missing or empty): run bash tests/pg_server.sh start " + d);
  return d;
}

std::string pg_url(const std::string& dbname) {
  auto p = server_url_parts();
  return p.before + dbname + p.after;
}

int pg_port() {
  std::string port = read_first_line(pg_server_dir() + "/port");
  if (port.empty()) throw std::runtime_error("no port file in " + pg_server_dir());
  return std::stoi(port);
}

std::string pg_socket_dir() {
  std::string q = server_url_parts().after; // ?host=DIR&port=PORT
  auto b = q.find("host=");
  if (b == std::string::npos) throw std::runtime_error("no host in the test server URL");
  b += 5;
  return q.substr(b, q.find('&', b) - b);
}

void pg_admin_exec(const std::string& sql) {
  pqxx::connection c(pg_url("postgres"));
  pqxx::nontransaction n(c);
  n.exec(sql);
}

pg_database::pg_database() : name_(unique_name()), url_(pg_url(name_)) {
  pg_admin_exec("CREATE DATABASE " + name_ + " ENCODING 'UTF8' TEMPLATE template0");
}

pg_database::~pg_database() {
  try {
    pg_admin_exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (...) {
    // Best effort: the server is removed at the end of the test run anyway.
  }
}

void pg_database::exec(const std::string& sql) const {
  pqxx::connection c(url_);
  pqxx::nontransaction n(c);
  n.exec(sql);
}

std::vector<std::vector<std::string>> pg_database::rows(
    const std::string& sql, const std::vector<std::string>& params) const {
  pqxx::connection c(url_);
  pqxx::nontransaction n(c);
  n.exec("SET bytea_output = 'hex'");
  pqxx::result r = n.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
  std::vector<std::vector<std::string>> out;
  for (const auto& row : r) {
    std::vector<std::string> v;
    for (const auto& f : row)
      v.push_back(f.is_null() ? "<NULL>" : std::string(f.c_str(), f.size()));
    out.push_back(std::move(v));
  }
  return out;
}

std::string pg_database::text(const std::string& sql,
                              const std::vector<std::string>& params) const {
  auto r = rows(sql, params);
  if (r.empty() || r[0].empty()) throw std::runtime_error("query returned nothing: " + sql);
  return r[0][0];
}

long long pg_database::integer(const std::string& sql,
                               const std::vector<std::string>& params) const {
  return std::stoll(text(sql, params));
}

std::string pg_hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out = "\\x";
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 0xF];
  }
  return out;
}

} // namespace ms::test
