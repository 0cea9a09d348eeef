// Fuzz target: database URL checking and redaction (storage/store.hpp check_url,
// storage/postgres_store.hpp redact_url).
// Contract:
//  * check_url throws only storage::error with code bad_url; redact_url never throws;
//  * a password in the URL never appears in the redacted form, nor in check_url's error
//    message (which names the URL), and the redacted form does not depend on the password.
// The first input byte picks the mode:
//  * even: the rest is the URL as given. Checked: the redacted URL, parsed by libpq,
//    never carries the password libpq finds in the URL;
//  * odd: a URL is built from the rest (lines: password, user, host, extra parameters) in
//    one of several forms (URL userinfo, URL query parameter, key=value unquoted or quoted,
//    various blanks; percent-encoded/escaped, or raw but for the characters that cannot
//    stand there: "@" and "/" in user info (and ':' in the user), "&" in a query). The password slot is known, so the
//    checks are exact: when libpq takes the slot as the password (or fails because of it),
//    neither the slot's text nor libpq's password appears in the redacted URL or in
//    check_url's message, and the redacted URL equals the one of the same URL with a
//    different password of the same shape.
#include <libpq-fe.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>

#include "fuzz/fuzz_util.hpp"
#include "storage/postgres_store.hpp"
#include "storage/store.hpp"

using namespace ms;

namespace {

struct parsed {
  bool ok = false;
  std::string password;             ///< empty when none
  std::vector<std::string> others;  ///< every other value libpq found (decoded)
};

/// What libpq makes of `url` (as check_url hands it over).
parsed libpq_parse(const std::string& url) {
  parsed out;
  std::string conninfo = storage::libpq_conninfo(url);
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err)
    PQfreemem(err);
  if (!opts)
    return out;
  out.ok = true;
  for (PQconninfoOption* o = opts; o->keyword; ++o)
    if (o->val && std::string_view{o->keyword} == "password")
      out.password = o->val;
    else if (o->val)
      out.others.emplace_back(o->val);
  PQconninfoFree(opts);
  return out;
}

/// check_url's error message, or nullopt when it accepts `url`.
std::optional<std::string> check(const std::string& url) {
  try {
    storage::check_url(url);
    return std::nullopt;
  } catch (const storage::error& e) {
    MS_FUZZ_CHECK(e.code() == storage::errc::bad_url,
                  "check_url threw a storage::error that is not bad_url: " + fuzz::shown(e.what()));
    return std::string{e.what()};
  } catch (const std::exception& e) {
    fuzz::fail(std::string{"check_url threw a non-storage::error: "} + e.what());
  }
}

bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
         || c == '.' || c == '_' || c == '~';
}

std::string percent_encode(const std::string& s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (unreserved(c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

/// Percent-encodes only `specials`: a careless user's password, written raw except for
/// the characters that cannot stand in that place of a URL at all (libpq would never
/// read them as part of the password there).
std::string encode_only(const std::string& s, std::string_view specials) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (specials.find(static_cast<char>(c)) == std::string_view::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

/// Backslash-escapes `specials` (and the backslash) for a libpq key=value value.
std::string conninfo_escape(const std::string& s, std::string_view specials) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || specials.find(c) != std::string_view::npos)
      out += '\\';
    out += c;
  }
  return out;
}

/// The same shape with other letters and digits: a->b, z->a, 0->1, 9->0.
std::string rotated(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (c >= 'a' && c <= 'z')
      c = c == 'z' ? 'a' : static_cast<char>(c + 1);
    else if (c >= 'A' && c <= 'Z')
      c = c == 'Z' ? 'A' : static_cast<char>(c + 1);
    else if (c >= '0' && c <= '9')
      c = c == '9' ? '0' : static_cast<char>(c + 1);
  }
  return out;
}

struct shape {
  unsigned form = 0;    ///< 0 userinfo, 1 query, 2 key=value, 3 key=value quoted
  bool encode = false;  ///< percent-encode / escape the password as a careful user would
  unsigned blank = 0;   ///< key=value: the blanks around '='
  std::string user, host, extra;
};

/// A host or user name that cannot change how the rest is read: in a URI, every byte but
/// letters, digits and ".-_:,[]" (host) percent-encoded; in key=value, blanks and quotes
/// escaped.
std::string uri_host(const std::string& s) {
  static const std::string specials = [] {
    std::string out;
    for (int c = 1; c < 256; ++c)
      if (!unreserved(static_cast<unsigned char>(c))
          && std::string_view{":,[]"}.find(static_cast<char>(c)) == std::string_view::npos)
        out += static_cast<char>(c);
    return out;
  }();
  return encode_only(s, specials);
}

/// The password as written in the URL (`slot`) and the whole URL.
std::pair<std::string, std::string> build(const shape& s, const std::string& password) {
  static constexpr const char* blanks[] = {"", " ", "\t", " \t "};
  static constexpr std::string_view blanks_quote = " \t\n\r\f\v'";
  const char* b = blanks[s.blank % 4];
  std::string slot, url;
  switch (s.form) {
    case 0:  // user info: ends at the first '@' before a '/'
      slot = s.encode ? percent_encode(password) : encode_only(password, "@/");
      url = "postgresql://" + percent_encode(s.user) + ":" + slot + "@" + uri_host(s.host) + "/db"
            + (s.extra.empty() ? "" : "?" + s.extra);
      break;
    case 1:  // query parameter: ends at '&'
      slot = s.encode ? percent_encode(password) : encode_only(password, "&");
      url = "postgres://" + uri_host(s.host) + "/db?" + (s.extra.empty() ? "" : s.extra + "&")
            + "password=" + slot + "&sslmode=prefer";
      break;
    case 2:
      slot = s.encode ? conninfo_escape(password, blanks_quote) : password;
      url = "host=" + conninfo_escape(s.host, blanks_quote) + " password" + b + "=" + b + slot + " " + s.extra;
      break;
    default:
      slot = "'" + (s.encode ? conninfo_escape(password, "'") : password) + "'";
      url = "host=" + conninfo_escape(s.host, blanks_quote) + " user" + b + "=" + b
            + conninfo_escape(s.user, blanks_quote) + " password" + b + "=" + b + slot
            + " " + s.extra;
      break;
  }
  return {slot, url};
}

/// `needle` does not occur in `hay`, when it is long and distinctive enough to tell: at
/// least 4 bytes, no '*' (the redaction's own), once in the URL, and nowhere in the
/// rest of the URL (`elsewhere`: the URL without the password, the values libpq reads).
void check_absent(const std::string& needle, const std::string& hay, const std::string& url,
                  const std::vector<std::string>& elsewhere, const char* what) {
  if (needle.size() < 4 || needle.find('*') != std::string::npos)
    return;
  auto first = url.find(needle);
  if (first != std::string::npos && url.find(needle, first + 1) != std::string::npos)
    return;
  for (auto& e : elsewhere)
    if (e.find(needle) != std::string::npos)
      return;
  MS_FUZZ_CHECK(hay.find(needle) == std::string::npos,
                std::string{what} + ": the password '" + fuzz::shown(needle) + "' of '"
                  + fuzz::shown(url) + "' shows in '" + fuzz::shown(hay) + "'");
}

void free_form(const std::string& url) {
  check(url);
  std::string red = storage::redact_url(url);
  if (url.find('\0') != std::string::npos || !storage::is_postgres_url(url))
    return;
  parsed p = libpq_parse(url);
  if (!p.ok || p.password.empty() || p.password == "***")  // "***": already redacted
    return;
  parsed r = libpq_parse(red);
  MS_FUZZ_CHECK(!r.ok || r.password != p.password,
                "redact_url('" + fuzz::shown(url) + "') = '" + fuzz::shown(red)
                  + "' still carries the password '" + fuzz::shown(p.password) + "'");
}

void structured(unsigned char selector, const std::string& rest) {
  auto fields = fuzz::split(rest, '\n');
  fields.resize(4);
  for (auto& f : fields)
    for (auto& c : f)
      if (c == '\0')
        c = '0';
  shape s;
  s.form = selector % 4;
  s.encode = (selector >> 2) & 1;
  s.blank = selector >> 3;
  const std::string& password = fields[0];
  s.user = fields[1].empty() ? "ms" : fields[1];
  s.host = fields[2].empty() ? "db" : fields[2];
  s.extra = fields[3];

  auto [slot, url] = build(s, password);
  auto [slot_rot, url_rot] = build(s, rotated(password));
  std::string url_without = build(s, "").second;

  std::string red = storage::redact_url(url);
  auto msg = check(url);
  parsed p = libpq_parse(url);
  parsed p_without = libpq_parse(url_without);
  // Is the slot what libpq takes as the password, or what makes libpq fail?
  bool slot_is_password = p.ok ? !p.password.empty() && p.password != p_without.password
                               : p_without.ok;
  if (!slot_is_password)
    return;
  std::vector<std::string> elsewhere = p.others;
  elsewhere.insert(elsewhere.end(), p_without.others.begin(), p_without.others.end());
  elsewhere.push_back(url_without);
  check_absent(slot, red, url, elsewhere, "redact_url");
  check_absent(p.password, red, url, elsewhere, "redact_url");
  if (msg) {
    // The message's own words ("cannot open database '") may hold the password by
    // chance: it counts only if the message of the rotated URL holds the rotated password.
    // And the fixed words are left out of the search ("abas" is in "database").
    auto msg_rot = check(url_rot);
    std::string words_out = *msg;
    for (const char* fixed : {"cannot open database '", "': not a valid PostgreSQL URL: "})
      if (auto at = words_out.find(fixed); at != std::string::npos)
        words_out.replace(at, std::strlen(fixed), "\n");
    for (auto [needle, rot] : {std::pair{slot, slot_rot}, std::pair{p.password, rotated(p.password)}})
      if (rot != needle && msg_rot && msg_rot->find(rot) != std::string::npos)
        check_absent(needle, words_out, url, elsewhere, "check_url's message");
  }
  // The redacted form must not depend on the password (a partial leak shows here).
  parsed p_rot = libpq_parse(url_rot);
  if (p.ok && p_rot.ok && p_rot.password == rotated(p.password)) {
    std::string red_rot = storage::redact_url(url_rot);
    MS_FUZZ_CHECK(red == red_rot, "the redacted form depends on the password: '" + fuzz::shown(url)
                                    + "' -> '" + fuzz::shown(red) + "' but '" + fuzz::shown(url_rot)
                                    + "' -> '" + fuzz::shown(red_rot) + "'");
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 4096)
    return 0;
  std::string rest = fuzz::text_of(data + 1, size - 1);
  if (data[0] % 2 == 0)
    free_form(rest);
  else
    structured(static_cast<unsigned char>(data[0] >> 1), rest);
  return 0;
}
