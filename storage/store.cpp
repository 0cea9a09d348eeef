// open_store(): picks the backend from the database URL: PostgreSQL for
// postgres:// / postgresql:// URLs and libpq key=value strings, else SQLite.
#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <string_view>

#include "storage/postgres_store.hpp"
#include "storage/sqlite_store.hpp"
#include "storage/store.hpp"

namespace ms::storage {
namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), s.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

/// True if `url` starts with "scheme://" for some URL scheme.
bool has_scheme(std::string_view url) {
  auto pos = url.find("://");
  if (pos == std::string_view::npos || pos == 0) return false;
  if (!std::isalpha(static_cast<unsigned char>(url[0]))) return false;
  return std::all_of(url.begin(), url.begin() + static_cast<std::ptrdiff_t>(pos), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  });
}

/// The SQLite file `url` names, or nullopt for a PostgreSQL URL. Throws bad_url.
std::optional<std::string> sqlite_path(const std::string& url) {
  std::string path;
  if (starts_with_nocase(url, "sqlite://")) {
    path = url.substr(9); // sqlite:///abs/path -> /abs/path
  } else if (starts_with_nocase(url, "sqlite:")) {
    path = url.substr(7);
  } else if (is_postgres_url(url)) {
    return std::nullopt;
  } else if (has_scheme(url)) {
    throw error(errc::bad_url, "cannot open database '" + redact_url(url) +
                                   "': unsupported URL scheme '" + url.substr(0, url.find("://")) +
                                   "' (use a file path, sqlite:PATH, sqlite://PATH, "
                                   "postgresql://... or postgres://...)");
  } else {
    path = url;
  }
  if (path.empty())
    throw error(errc::bad_url, "cannot open database '" + url + "': the database path is empty");
  return path;
}

} // namespace

std::unique_ptr<store> open_store(const std::string& url, open_mode mode) {
  auto path = sqlite_path(url);
  if (!path)
    return std::make_unique<postgres_store>(url, mode);
  return std::make_unique<sqlite_store>(std::move(*path), mode);
}

void check_url(const std::string& url) {
  if (sqlite_path(url))
    return;
  const std::string shown = redact_url(url);
  const std::string conninfo = libpq_conninfo(url);
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (!opts) {
    PQfreemem(err);
    // libpq quotes what it could not parse (the URL, or a token such as the password
    // with a bad %-escape): the cause shown is the one the redacted URL gives, and if
    // that one parses, the error was in the password.
    err = nullptr;
    std::string cause = "the password does not parse (bad %-escape or quoting)";
    if (PQconninfoOption* shown_opts = PQconninfoParse(libpq_conninfo(shown).c_str(), &err)) {
      PQconninfoFree(shown_opts);
    } else {
      cause = err ? err : "out of memory";
      while (!cause.empty() && (cause.back() == '\n' || cause.back() == ' '))
        cause.pop_back();
    }
    PQfreemem(err);
    throw error(errc::bad_url,
                "cannot open database '" + shown + "': not a valid PostgreSQL URL: " + cause);
  }
  std::string bad;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val || std::string_view{o->keyword} != "port")
      continue;
    // A comma-separated list of port numbers (libpq checks it only when connecting).
    std::string_view val = o->val;
    std::size_t start = 0;
    while (start <= val.size()) {
      std::size_t end = val.find(',', start);
      if (end == std::string_view::npos) end = val.size();
      std::string_view one = val.substr(start, end - start);
      int port = 0;
      auto r = std::from_chars(one.data(), one.data() + one.size(), port);
      if (!one.empty() &&
          (r.ec != std::errc() || r.ptr != one.data() + one.size() || port < 1 || port > 65535))
        bad = "invalid port '" + std::string(one) + "'";
      start = end + 1;
    }
  }
  PQconninfoFree(opts);
  if (!bad.empty())
    throw error(errc::bad_url, "cannot open database '" + shown + "': " + bad);
}

} // namespace ms::storage
