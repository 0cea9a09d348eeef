// open_store(): picks the backend from the database URL: PostgreSQL for
// postgres:// / postgresql:// URLs and libpq key=value strings, else SQLite.
#include <algorithm>
#include <cctype>
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

} // namespace

std::unique_ptr<store> open_store(const std::string& url, open_mode mode) {
  std::string path;
  if (starts_with_nocase(url, "sqlite://")) {
    path = url.substr(9); // sqlite:///abs/path -> /abs/path
  } else if (starts_with_nocase(url, "sqlite:")) {
    path = url.substr(7);
  } else if (is_postgres_url(url)) {
    return std::make_unique<postgres_store>(url, mode);
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
  return std::make_unique<sqlite_store>(std::move(path), mode);
}

} // namespace ms::storage
