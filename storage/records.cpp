// Names of the record enums as they are stored in the database.
// These strings are part of the schema contract (CHECK constraints in
// sqlite_store.cpp); do not rename them without a migration.
#include "storage/records.hpp"

#include <nlohmann/json.hpp>

namespace ms {

std::string_view to_string(stage x) {
  switch (x) {
    case stage::sync: return "sync";
    case stage::processing: return "processing";
    case stage::watermark: return "watermark";
  }
  return "unknown";
}

bool parse_stage(std::string_view s, stage& out) {
  for (auto x : {stage::sync, stage::processing, stage::watermark})
    if (to_string(x) == s) {
      out = x;
      return true;
    }
  return false;
}

std::string_view to_string(file_status x) {
  switch (x) {
    case file_status::ok: return "ok";
    case file_status::skipped: return "skipped";
    case file_status::failed: return "failed";
  }
  return "unknown";
}

std::string_view to_string(job_status x) {
  switch (x) {
    case job_status::running: return "running";
    case job_status::interrupted: return "interrupted";
    case job_status::completed: return "completed";
    case job_status::failed: return "failed";
  }
  return "unknown";
}

bool parse_job_status(std::string_view s, job_status& out) {
  static constexpr job_status all[] = {job_status::running, job_status::interrupted,
                                       job_status::completed, job_status::failed};
  for (job_status x : all) {
    if (to_string(x) == s) {
      out = x;
      return true;
    }
  }
  return false;
}

namespace {

/// One path as thumbnail_paths_to_json() stores it (a JSON string, quotes included).
std::string stored_form(std::string p) {
  for (std::size_t i = 0; (i = p.find('\0', i)) != std::string::npos; i += 3)
    p.replace(i, 1, "\xEF\xBF\xBD");
  return nlohmann::json(p).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace

std::string thumbnail_paths_to_json(const std::vector<std::string>& paths) {
  std::string out = "[";
  for (const std::string& p : paths) {
    if (out.size() > 1) out += ',';
    out += stored_form(p);
  }
  return out += ']';
}

std::vector<std::string> thumbnail_paths_from_json(std::string_view json,
                                                   std::string_view library_path) {
  std::vector<std::string> out;
  if (json.empty()) return out;
  auto j = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (!j.is_array()) return out;
  out.reserve(j.size());
  for (auto& e : j) {
    if (!e.is_string()) continue;
    std::string p = e.get<std::string>();
    auto dir_end = p.find('/');
    auto size_end = dir_end == std::string::npos ? dir_end : p.find('/', dir_end + 1);
    auto ext = p.rfind('.');
    if (!library_path.empty() && p.find("\xEF\xBF\xBD") != std::string::npos
        && size_end != std::string::npos && ext != std::string::npos && ext > size_end) {
      std::string exact = p.substr(0, size_end + 1);
      exact.append(library_path).append(p, ext);
      if (exact != p && stored_form(exact) == stored_form(p)) p = std::move(exact);
    }
    out.push_back(std::move(p));
  }
  return out;
}

} // namespace ms
