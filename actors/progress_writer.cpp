#include "actors/progress_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <type_traits>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/ingest.hpp"
#include "actors/metrics.hpp"
#include "storage/store.hpp"

namespace ms {
namespace {

/// A job open for outcomes.
struct open_job {
  std::string source_root;
  std::string dest_root;
  int dest_fd = -1;                    ///< for the per-batch durability barrier
  durable_listener_actor listener;
  std::uint64_t pending_total = 0;     ///< total_files to raise with the next commit
};

struct writer_state {
  static inline const char* name = "progress_writer";
  std::shared_ptr<storage::store> db;
  writer_settings settings;
  std::vector<file_outcome> buffer;
  std::size_t buffered_writes = 0;  ///< outcomes in `buffer` that wrote into the library
  bool timer_armed = false;
  std::map<std::uint64_t, open_job> jobs;
  std::string broken;  ///< set once a commit failed for good: the database cannot be written
  bool broken_resumable = false;  ///< broken by a lost connection (nothing lost, resumable)
  /// Set while the connection is lost: since when, and the next retry delay.
  std::optional<std::chrono::steady_clock::time_point> lost_since;
  std::chrono::milliseconds backoff{0};
  /// finish requests waiting for the connection to come back.
  struct pending_finish {
    std::uint64_t job_id;
    job_status status;
    bool mark_missing;
    caf::typed_response_promise<job_result> promise;
  };
  std::vector<pending_finish> pending_finishes;

  ~writer_state() {
    for (auto& [id, job] : jobs)
      if (job.dest_fd >= 0)
        ::close(job.dest_fd);
  }
};

using writer_ptr = progress_writer_actor::stateful_pointer<writer_state>;

metric_labels stage_status_labels(std::size_t sg, std::size_t status) {
  return {{"stage", std::string{to_string(static_cast<stage>(sg))}},
          {"status", std::string{to_string(static_cast<file_status>(status))}}};
}

/// After a commit that returned: what it inserted, its size and its duration.
void count_commit(metrics& m, const storage::commit_stats& stats, std::size_t outcomes,
                  double seconds) {
  for (std::size_t sg = 0; sg < stage_count; ++sg)
    for (std::size_t status = 0; status < 3; ++status)
      if (auto n = stats.per_stage[sg][status]; n > 0)
        m.add(writer_metrics::files, stage_status_labels(sg, status), static_cast<double>(n));
  if (stats.ok_bytes > 0)
    m.add(writer_metrics::bytes, {}, static_cast<double>(stats.ok_bytes));
  m.add(writer_metrics::commits, {}, 1);
  m.observe(writer_metrics::batch_size, {}, static_cast<double>(outcomes));
  m.observe(writer_metrics::duration, {}, seconds);
}

/// True when the outcome put a file into the library (a copy, thumbnails, a preview):
/// a batch holding one needs the durability barrier before its commit.
bool wrote_library(const file_outcome& o) {
  return o.status == file_status::ok
         && (o.stg != stage::sync || (o.touches_media && !o.library_path.empty()));
}

/// Outcomes that wrote nothing (unchanged files, skips and failures the coordinator
/// decided) are buffered up to this many times `batch_size` before they force a commit:
/// a no-change pass commits once per this many files instead of once per scan chunk.
constexpr std::size_t record_only_factor = 8;

/// The buffered-outcomes gauge, after the buffer grew.
void show_buffered(const writer_state& st) {
  if (st.settings.metrics)
    st.settings.metrics->set(writer_metrics::buffered, {}, static_cast<double>(st.buffer.size()));
}

/// After outcomes left the buffer (a commit, a finished job): recount, show the gauge.
void note_buffered(writer_ptr self) {
  auto& st = self->state;
  st.buffered_writes =
    static_cast<std::size_t>(std::count_if(st.buffer.begin(), st.buffer.end(), wrote_library));
  show_buffered(st);
}

job_progress to_progress(const job_row& row, std::uint64_t committed) {
  job_progress p;
  p.job_id = row.id;
  p.committed = committed;
  p.total_files = row.total_files;
  p.processed_files = row.processed_files;
  p.failed_files = row.failed_files;
  p.skipped_files = row.skipped_files;
  p.processed_bytes = row.processed_bytes;
  return p;
}

/// Commits one job's outcomes: library files durable first, then one transaction.
void commit_job(writer_ptr self, std::uint64_t job_id, std::vector<file_outcome>& outs) {
  auto& st = self->state;
  auto it = st.jobs.find(job_id);
  if (it == st.jobs.end()) {
    spdlog::error("writer: dropping {} outcome(s) of job {} that is not open", outs.size(), job_id);
    return;
  }
  auto& job = it->second;
  auto barrier = std::chrono::steady_clock::now();
  if (job.dest_fd >= 0 && std::any_of(outs.begin(), outs.end(), wrote_library))
    sync_filesystem(job.dest_fd, job.dest_root);
  auto t0 = std::chrono::steady_clock::now();
  // The scan's total rides in the batch's transaction (one durable write, not two).
  auto stats = st.db->commit(job_id, job.source_root, outs, job.pending_total);
  job.pending_total = 0;
  if (st.settings.metrics)  // counted at once: a later step failing redoes a committed batch
    count_commit(*st.settings.metrics, stats, outs.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - barrier).count());
  auto row = st.db->job(job_id);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::steady_clock::now() - t0).count();
  spdlog::debug("writer: job {} committed {} outcome(s) ({} new) in {} us", job_id, outs.size(),
                stats.inserted, us);
  if (row)
    self->send(job.listener, durable_atom::value, to_progress(*row, outs.size()));
}

/// Runs a store call that is not a batch commit (lookups, job rows). A lost connection
/// is retried in place with the same capped backoff until `reconnect_limit`: the writer
/// could do nothing else meanwhile anyway, and the callers' requests simply wait.
template <class F>
auto with_reconnect(writer_ptr self, F&& call) {
  auto& cfg = self->state.settings;
  auto t0 = std::chrono::steady_clock::now();
  auto backoff = cfg.reconnect_initial;
  bool lost = false;
  for (;;) {
    try {
      auto recovered = [&] {
        if (lost)
          spdlog::info("writer: database reachable again after {} ms",
                       std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - t0).count());
      };
      if constexpr (std::is_void_v<decltype(call())>) {
        call();
        recovered();
        return;
      } else {
        auto result = call();
        recovered();
        return result;
      }
    } catch (const storage::error& e) {
      if (e.code() != storage::errc::connection_lost
          || std::chrono::steady_clock::now() - t0 + backoff > cfg.reconnect_limit)
        throw;
      lost = true;
      spdlog::warn("writer: lost the database connection ({}); retrying in {} ms", e.what(),
                   backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, cfg.reconnect_max);
    }
  }
}

/// Tells every open job that the database cannot take its outcomes any more.
void break_writer(writer_ptr self, std::string reason, bool resumable) {
  auto& st = self->state;
  st.broken = std::move(reason);
  st.broken_resumable = resumable;
  spdlog::critical("writer: {}", st.broken);
  for (auto& [id, job] : st.jobs)
    self->send(job.listener, fatal_atom::value, st.broken, resumable);
}

/// Commits everything buffered; returns true when the buffer is empty afterwards.
/// A lost connection keeps the batch and retries it with capped exponential backoff
/// (the only retry in the design: the same batch, idempotent) until it commits or the
/// server stayed away longer than `reconnect_limit`. Any other error keeps the batch,
/// tells every open job, and the writer accepts no more outcomes.
bool commit_buffer(writer_ptr self) {
  auto& st = self->state;
  if (st.buffer.empty())
    return true;
  if (!st.broken.empty())
    return false;
  // Group by job, keeping each job's order (paths arrive mostly sorted).
  std::map<std::uint64_t, std::vector<file_outcome>> by_job;
  for (auto& o : st.buffer)
    by_job[o.job_id].push_back(std::move(o));
  st.buffer.clear();
  for (auto it = by_job.begin(); it != by_job.end(); ++it) {
    try {
      commit_job(self, it->first, it->second);
    } catch (const std::exception& e) {
      // Keep what was not committed, so nothing is silently lost from memory.
      for (auto rest = it; rest != by_job.end(); ++rest)
        for (auto& o : rest->second)
          st.buffer.push_back(std::move(o));
      auto se = dynamic_cast<const storage::error*>(&e);
      if (!se || se->code() != storage::errc::connection_lost) {
        break_writer(self, "cannot commit to " + st.db->describe() + ": " + e.what(), false);
        return false;
      }
      if (st.settings.metrics)
        st.settings.metrics->add(writer_metrics::connection_lost, {}, 1);
      auto now = std::chrono::steady_clock::now();
      if (!st.lost_since) {
        st.lost_since = now;
        st.backoff = st.settings.reconnect_initial;
      } else {
        st.backoff = std::min(st.backoff * 2, st.settings.reconnect_max);
      }
      auto away = std::chrono::duration_cast<std::chrono::seconds>(now - *st.lost_since);
      if (now - *st.lost_since >= st.settings.reconnect_limit) {
        break_writer(self, "database " + st.db->describe() + " unreachable for "
                             + std::to_string(away.count()) + " s: " + e.what(), true);
        return false;
      }
      spdlog::warn("writer: lost the database connection ({}); holding {} outcome(s), "
                   "retrying in {} ms", e.what(), st.buffer.size(), st.backoff.count());
      self->delayed_send(self, st.backoff, retry_atom::value);
      return false;
    }
  }
  if (st.lost_since) {
    spdlog::info("writer: database reachable again after {} ms; batch committed",
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - *st.lost_since).count());
    st.lost_since.reset();
  }
  return true;
}

/// commit_buffer, then the buffered-outcomes gauge.
bool commit_all(writer_ptr self) {
  bool empty = commit_buffer(self);
  note_buffered(self);
  return empty;
}

/// Commits the job's rest and sets its final status.
job_result finish_job(writer_ptr self, std::uint64_t job_id, job_status status, bool mark_missing) {
  auto& st = self->state;
  job_result res;
  res.job_id = job_id;
  res.status = status;
  auto it = st.jobs.find(job_id);
  try {
    if (!st.broken.empty()) {
      res.error = st.broken;
      if (st.broken_resumable)
        res.status = job_status::interrupted;
      else
        res.status = job_status::failed;
      // Best effort: record the end if the database still takes writes.
      st.db->set_job_status(job_id, res.status, res.status != job_status::interrupted);
    } else {
      // Each step is idempotent: a retry after a lost connection repeats it safely.
      with_reconnect(self, [&] {
        if (it != st.jobs.end() && it->second.pending_total > 0)
          st.db->raise_total(job_id, it->second.pending_total);
        if (mark_missing && it != st.jobs.end())
          res.missing_marked = st.db->mark_missing(job_id, it->second.source_root);
        st.db->set_job_status(job_id, status, status != job_status::interrupted);
      });
    }
    if (auto row = st.broken.empty() ? with_reconnect(self, [&] { return st.db->job(job_id); })
                                     : st.db->job(job_id))
      res.counters = to_progress(*row, 0);
  } catch (const std::exception& e) {
    if (res.error.empty()) {
      res.status = job_status::failed;
      res.error = std::string{"database: "} + e.what();
    }
  }
  if (it != st.jobs.end()) {
    if (it->second.dest_fd >= 0)
      ::close(it->second.dest_fd);
    // Drop what can never be committed for this job (the writer is broken).
    std::erase_if(st.buffer, [job_id](const file_outcome& o) { return o.job_id == job_id; });
    st.jobs.erase(it);
    note_buffered(self);
  }
  return res;
}

/// After a commit attempt: answers finish requests that waited for the connection.
void settle_finishes(writer_ptr self) {
  auto& st = self->state;
  if (st.lost_since && st.broken.empty())
    return;  // still retrying
  auto waiting = std::move(st.pending_finishes);
  st.pending_finishes.clear();
  for (auto& f : waiting)
    f.promise.deliver(finish_job(self, f.job_id, f.status, f.mark_missing));
}

progress_writer_actor::behavior_type writer(writer_ptr self, std::shared_ptr<storage::store> db,
                                            writer_settings settings) {
  self->state.db = std::move(db);
  self->state.settings = settings;
  self->state.buffer.reserve(settings.batch_size);
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& eptr) -> caf::error {
    try {
      std::rethrow_exception(eptr);
    } catch (const std::exception& e) {
      spdlog::critical("writer: {}", e.what());
      return caf::make_error(caf::sec::runtime_error, e.what());
    }
    return caf::make_error(caf::sec::runtime_error, "unknown exception");
  });
  return {
    [=](create_atom, const std::string& src, const std::string& dst,
        const std::string& settings_json) -> caf::result<std::uint64_t> {
      try {
        return with_reconnect(self, [&] { return self->state.db->create_job(src, dst, settings_json); });
      } catch (const std::exception& e) {
        return caf::make_error(caf::sec::runtime_error, e.what());
      }
    },
    [=](open_atom, std::uint64_t job_id, durable_listener_actor listener) -> caf::result<job_row> {
      auto& st = self->state;
      try {
        auto row = with_reconnect(self, [&] { return st.db->job(job_id); });
        if (!row)
          return caf::make_error(caf::sec::runtime_error,
                                 "job " + std::to_string(job_id) + " does not exist in "
                                   + st.db->describe());
        open_job job;
        job.source_root = row->source_root;
        job.dest_root = row->dest_root;
        job.listener = std::move(listener);
        job.dest_fd = ::open(row->dest_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (job.dest_fd < 0)
          return caf::make_error(caf::sec::runtime_error,
                                 "cannot open destination '" + row->dest_root
                                   + "': " + std::strerror(errno));
        if (row->status != job_status::running)
          with_reconnect(self, [&] { st.db->set_job_status(job_id, job_status::running, false); });
        auto old = st.jobs.find(job_id);
        if (old != st.jobs.end() && old->second.dest_fd >= 0)
          ::close(old->second.dest_fd);
        st.jobs[job_id] = std::move(job);
        row->status = job_status::running;
        return *row;
      } catch (const std::exception& e) {
        return caf::make_error(caf::sec::runtime_error, e.what());
      }
    },
    [=](lookup_atom, std::uint64_t job_id,
        const std::vector<std::string>& paths) -> caf::result<std::vector<known_file>> {
      auto& st = self->state;
      auto it = st.jobs.find(job_id);
      if (it == st.jobs.end())
        return caf::make_error(caf::sec::runtime_error, "lookup for a job that is not open");
      std::vector<known_file> out;
      try {
        auto t0 = std::chrono::steady_clock::now();
        with_reconnect(self, [&] { st.db->lookup(job_id, it->second.source_root, paths, out); });
        spdlog::debug("writer: looked up {} path(s) in {} us", paths.size(),
                      std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - t0).count());
      } catch (const std::exception& e) {
        return caf::make_error(caf::sec::runtime_error, e.what());
      }
      return out;
    },
    [=](known_atom, const std::string& source_root) -> caf::result<std::uint64_t> {
      try {
        return with_reconnect(self, [&] { return self->state.db->count_known(source_root); });
      } catch (const std::exception& e) {
        return caf::make_error(caf::sec::runtime_error, e.what());
      }
    },
    [=](outcome_atom, std::vector<file_outcome>& outs) {
      auto& st = self->state;
      if (!st.broken.empty()) {
        // The coordinator was told (fatal); it stops dispatching. Nothing here is durable.
        return;
      }
      for (auto& o : outs) {
        st.buffered_writes += wrote_library(o) ? 1 : 0;
        st.buffer.push_back(std::move(o));
      }
      show_buffered(st);
      if (st.lost_since) {
        // Reconnecting: the retry timer commits; the coordinator's window bounds the buffer.
      } else if (st.buffered_writes >= st.settings.batch_size
                 || st.buffer.size() >= record_only_factor * st.settings.batch_size) {
        commit_all(self);
      } else if (!st.timer_armed) {
        st.timer_armed = true;
        self->delayed_send(self, st.settings.flush_interval, flush_atom::value);
      }
    },
    [=](total_atom, std::uint64_t job_id, std::uint64_t total) {
      auto it = self->state.jobs.find(job_id);
      if (it != self->state.jobs.end())
        it->second.pending_total = std::max(it->second.pending_total, total);
    },
    [=](flush_atom) {
      self->state.timer_armed = false;
      if (!self->state.lost_since)
        commit_all(self);
    },
    [=](retry_atom) {
      commit_all(self);
      settle_finishes(self);
    },
    [=](finish_atom, std::uint64_t job_id, job_status status,
        bool mark_missing) -> caf::result<job_result> {
      auto& st = self->state;
      if (!commit_all(self) && st.lost_since && st.broken.empty()) {
        auto rp = self->make_response_promise<job_result>();
        st.pending_finishes.push_back({job_id, status, mark_missing, rp});
        return rp;
      }
      return finish_job(self, job_id, status, mark_missing);
    },
  };
}

} // namespace

void describe_writer_metrics(metrics& m) {
  using kind = metrics::kind;
  m.describe(writer_metrics::files, kind::counter,
             "Result rows (file_results) committed, by stage and status; only rows a commit "
             "newly inserted count, so the sums equal the jobs' job_stage_counters");
  m.describe(writer_metrics::bytes, kind::counter,
             "Bytes of the stage sync ok result rows committed (what the jobs' "
             "processed_bytes grew by)");
  m.describe(writer_metrics::commits, kind::counter,
             "Batch commits (one database transaction each) that succeeded");
  m.describe(writer_metrics::batch_size, kind::histogram,
             "Outcomes (result rows offered) per successful batch commit",
             {1, 10, 50, 100, 200, 500, 1000, 5000});
  m.describe(writer_metrics::duration, kind::histogram,
             "Wall time of a successful batch commit: the durability barrier (syncfs on the "
             "library) plus the database transaction",
             {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  m.describe(writer_metrics::buffered, kind::gauge,
             "Outcomes buffered in the progress-writer, waiting for the next commit");
  m.describe(writer_metrics::connection_lost, kind::counter,
             "Batch commits that found the database connection lost (the writer holds the "
             "batch and retries it with backoff)");
  for (std::size_t sg = 0; sg < stage_count; ++sg)
    for (std::size_t status = 0; status < 3; ++status)
      m.add(writer_metrics::files, stage_status_labels(sg, status), 0);
  for (const char* name : {writer_metrics::bytes, writer_metrics::commits,
                           writer_metrics::connection_lost, writer_metrics::buffered})
    m.add(name, {}, 0);
}

progress_writer_actor spawn_progress_writer(caf::actor_system& sys,
                                            std::shared_ptr<storage::store> db,
                                            writer_settings settings) {
  if (settings.metrics)
    describe_writer_metrics(*settings.metrics);
  return sys.spawn<caf::detached>(writer, std::move(db), std::move(settings));
}

} // namespace ms
