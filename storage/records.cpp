// Names of the record enums as they are stored in the database.
// These strings are part of the schema contract (CHECK constraints in
// sqlite_store.cpp); do not rename them without a migration.
#include "storage/records.hpp"

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

} // namespace ms
