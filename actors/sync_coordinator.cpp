#include "actors/sync_coordinator.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/imaging.hpp"
#include "actors/metrics.hpp"
#include "actors/scanner.hpp"

namespace ms {
namespace {

constexpr std::size_t scan_chunk = 256;
/// Scanned chunks whose database lookup may be in flight at once: the scan of the next
/// chunk (file-system calls, this actor's thread) overlaps the lookup of the previous one
/// (the writer's thread).
constexpr std::size_t lookahead_chunks = 2;

struct coordinator_state {
  static inline const char* name = "sync_coordinator";
  job_spec spec;
  progress_writer_actor writer;
  supervisor_actor supervisor;
  caf::actor listener;
  std::unique_ptr<scanner> scan;
  bool filtered = false;
  bool listed = false;                       ///< only spec.paths, not the tree
  int dest_fd = -1;                          ///< to check that unchanged files are still in the library

  std::array<std::vector<file_worker_actor>, stage_count> idle;  ///< per stage: workers without a task
  std::map<caf::actor_addr, file_task> assigned;  ///< the task each busy worker holds
  std::array<std::deque<file_task>, stage_count> pending;  ///< per stage: waiting for a worker
  /// Scanned chunks waiting for their lookup reply, by request number.
  std::map<std::uint64_t, std::vector<scan_entry>> looking_up;
  std::uint64_t next_lookup = 0;
  /// Files in a --checksum comparison (a sync task with compare_sha256) by path: what the
  /// database knew of them, so that one found unchanged keeps its thumbnails and preview
  /// instead of going through the image stages again. At most a window of tasks.
  std::map<std::string, known_file> comparing;
  std::uint64_t inflight = 0;                ///< sent to a worker or the writer, not yet durable
  job_progress last;                         ///< last durable ack

  bool opened = false;
  std::size_t lookups_pending = 0;            ///< chunk lookups and the empty-source check
  bool scan_done = false;
  bool stopping = false;
  bool finishing = false;
  std::string fatal;                          ///< why the job cannot go on
  bool fatal_resumable = false;               ///< ... and nothing is lost: end interrupted

  std::shared_ptr<metrics> registry;          ///< may be null
  std::string node_name;                      ///< this node's name, for the rows made here
  /// Remote nodes whose workers could not see the paths, by node name: consecutive such
  /// outcomes (reset by a success). At `blind_limit` the node gets no more tasks.
  std::map<std::string, int> blind;
  std::set<std::string> excluded;
  /// What this job added to the queue gauges, per stage: queued, running.
  std::array<double, stage_count> shown_queued{};
  std::array<double, stage_count> shown_running{};

  /// Brings this job's share of the queue gauges to `queued` / `running`.
  void show_queues(const std::array<double, stage_count>& queued,
                   const std::array<double, stage_count>& running) {
    if (!registry)
      return;
    for (std::size_t i = 0; i < stage_count; ++i) {
      metric_labels l{{"stage", std::string{to_string(static_cast<stage>(i))}}};
      if (queued[i] != shown_queued[i])
        registry->add("mediasync_queued_tasks", l, queued[i] - shown_queued[i]);
      if (running[i] != shown_running[i])
        registry->add("mediasync_running_tasks", l, running[i] - shown_running[i]);
    }
    shown_queued = queued;
    shown_running = running;
  }

  ~coordinator_state() {
    show_queues({}, {});
    if (dest_fd >= 0)
      ::close(dest_fd);
  }
};

using coord_ptr = sync_coordinator_actor::stateful_pointer<coordinator_state>;

void pump(coord_ptr self);

file_outcome make_outcome(const job_spec& spec, const scan_entry& e, file_status status,
                          std::string reason) {
  file_outcome o;
  o.job_id = spec.job_id;
  o.path = e.path;
  o.status = status;
  o.size = e.size;
  o.mtime_ns = e.mtime_ns;
  o.error = std::move(reason);
  return o;
}

void send_to_writer(coord_ptr self, std::vector<file_outcome> outs) {
  if (outs.empty())
    return;
  for (auto& o : outs)
    if (o.node.empty())
      o.node = self->state.node_name;  // made here or by a local worker
  self->state.inflight += outs.size();
  self->send(self->state.writer, outcome_atom::value, std::move(outs));
}

void report(coord_ptr self) {
  auto& st = self->state;
  if (!st.listener)
    return;
  auto p = st.last;
  p.job_id = st.spec.job_id;
  if (st.scan)
    p.total_files = std::max<std::uint64_t>(p.total_files, st.scan->count());
  caf::anon_send(st.listener, progress_atom::value, p);
}

/// True if the library still holds the unchanged file at `library_path` with `size` bytes.
bool library_has(coord_ptr self, const std::string& library_path, std::uint64_t size) {
  struct stat sb;
  if (self->state.dest_fd < 0 || library_path.empty())
    return false;
  int rc = ::fstatat(self->state.dest_fd, library_path.c_str(), &sb, AT_SYMLINK_NOFOLLOW);
  if (rc != 0 && errno == ENAMETOOLONG) {
    // Longer than PATH_MAX (a deep tree): one folder at a time, as the ingest writes it.
    int dir = -1;
    std::size_t begin = 0;
    for (auto slash = library_path.find('/'); slash != std::string::npos;
         slash = library_path.find('/', begin)) {
      auto name = library_path.substr(begin, slash - begin);
      int next = ::openat(dir < 0 ? self->state.dest_fd : dir, name.c_str(),
                          O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (dir >= 0)
        ::close(dir);
      dir = next;
      if (dir < 0)
        return false;
      begin = slash + 1;
    }
    rc = ::fstatat(dir < 0 ? self->state.dest_fd : dir, library_path.c_str() + begin, &sb,
                   AT_SYMLINK_NOFOLLOW);
    if (dir >= 0)
      ::close(dir);
  }
  return rc == 0 && S_ISREG(sb.st_mode) && static_cast<std::uint64_t>(sb.st_size) == size;
}

bool stage_on(const coordinator_state& st, stage s) {
  switch (s) {
    case stage::sync: return true;
    case stage::processing: return st.spec.thumbnails;
    case stage::watermark: return st.spec.thumbnails && st.spec.watermark;
  }
  return false;
}

constexpr std::uint8_t bit(stage s) { return static_cast<std::uint8_t>(1u << static_cast<int>(s)); }

std::size_t idx(stage s) { return static_cast<std::size_t>(s); }

/// Tasks decided or dispatched but not durable. Bounded by the window: the scan and the
/// sync stage wait while it is full; later stages' tasks are already counted when queued.
std::uint64_t outstanding(const coordinator_state& st) {
  return st.inflight + st.pending[idx(stage::processing)].size()
         + st.pending[idx(stage::watermark)].size();
}

file_outcome stage_outcome(const coordinator_state& st, const std::string& path, stage s,
                           file_status status, std::string reason) {
  file_outcome o;
  o.job_id = st.spec.job_id;
  o.path = path;
  o.stg = s;
  o.status = status;
  o.error = std::move(reason);
  return o;
}

file_task stage_task(const coordinator_state& st, const std::string& path, stage s,
                     const std::string& mime, const std::string& library_path) {
  file_task t;
  t.job_id = st.spec.job_id;
  t.stg = s;
  t.source_root = st.spec.source_root;
  t.dest_root = st.spec.dest_root;
  t.path = path;
  t.mime = mime;
  t.library_path = library_path;
  return t;
}

/// Plans the watermark stage of a file whose largest thumbnail is `thumbnail` ("" if none:
/// processing failed or was skipped, so there is nothing to watermark).
void plan_watermark(coord_ptr self, const std::string& path, const std::string& mime,
                    const std::string& library_path, const std::string& thumbnail,
                    std::vector<file_outcome>& direct) {
  auto& st = self->state;
  if (!stage_on(st, stage::watermark))
    return;
  if (thumbnail.empty()) {
    direct.push_back(stage_outcome(st, path, stage::watermark, file_status::skipped,
                                   "no thumbnail to watermark (processing did not succeed)"));
    return;
  }
  auto t = stage_task(st, path, stage::watermark, mime, library_path);
  t.thumbnail = thumbnail;
  st.pending[idx(stage::watermark)].push_back(std::move(t));
}

/// Plans the image stages of a file that is in the library. `k` is what the database
/// knew of it (nullptr after a fresh ingest), `unchanged` whether its sync was skipped
/// as unchanged (then derived files that exist are kept).
void plan_image_stages(coord_ptr self, const std::string& path, const std::string& mime,
                       const std::string& library_path, const known_file* k, bool unchanged,
                       std::vector<file_outcome>& direct) {
  auto& st = self->state;
  if (!stage_on(st, stage::processing))
    return;
  std::uint8_t done = k ? k->stages_done : 0;
  bool want_wm = stage_on(st, stage::watermark) && !(done & bit(stage::watermark));
  if (!is_processable_image(mime)) {
    std::string why = "not an image the processing stage handles ("
                      + (mime.empty() ? std::string{"unknown type"} : mime) + ")";
    if (!(done & bit(stage::processing)))
      direct.push_back(stage_outcome(st, path, stage::processing, file_status::skipped, why));
    if (want_wm)
      direct.push_back(stage_outcome(st, path, stage::watermark, file_status::skipped, why));
    return;
  }
  bool have_thumbs = k && !k->thumbnail_paths.empty();
  if (!(done & bit(stage::processing))) {
    if (unchanged && have_thumbs) {
      auto o = stage_outcome(st, path, stage::processing, file_status::skipped, "unchanged");
      direct.push_back(std::move(o));
    } else {
      st.pending[idx(stage::processing)].push_back(
        stage_task(st, path, stage::processing, mime, library_path));
      return;  // watermark follows the processing outcome
    }
  }
  if (!want_wm)
    return;
  if (unchanged && k && !k->preview_path.empty())
    direct.push_back(stage_outcome(st, path, stage::watermark, file_status::skipped, "unchanged"));
  else
    plan_watermark(self, path, mime, library_path, have_thumbs ? k->thumbnail_paths.front() : "",
                   direct);
}

/// A worker's outcome (or a dead worker's failure): to the writer, and the next stage planned.
void on_outcome(coord_ptr self, file_outcome out) {
  std::vector<file_outcome> outs;
  switch (out.stg) {
    case stage::sync: {
      auto known = self->state.comparing.extract(out.path);
      bool same = out.error == "unchanged (checksum)";
      if (out.status == file_status::ok || same)
        plan_image_stages(self, out.path, out.mime, out.library_path,
                          same && known ? &known.mapped() : nullptr, same && known, outs);
      break;
    }
    case stage::processing:
      plan_watermark(self, out.path, out.mime, out.library_path,
                     out.status == file_status::ok && !out.thumbnail_paths.empty()
                       ? out.thumbnail_paths.front()
                       : std::string{},
                     outs);
      break;
    case stage::watermark:
      break;
  }
  outs.insert(outs.begin(), std::move(out));
  --self->state.inflight;  // send_to_writer counts it again
  send_to_writer(self, std::move(outs));
}

/// Turns a scanned chunk and what the database knows of it into outcomes and tasks.
void decide(coord_ptr self, std::vector<scan_entry>& chunk, std::vector<known_file>& known) {
  auto& st = self->state;
  std::vector<file_outcome> direct;
  for (std::size_t i = 0; i < chunk.size() && i < known.size(); ++i) {
    auto& e = chunk[i];
    auto& k = known[i];
    if (k.has_result) {
      // Ingested by an earlier run of this job: only its uncommitted image stages remain.
      if (e.kind == entry_kind::regular && k.has_media && !k.library_path.empty())
        plan_image_stages(self, e.path, k.mime, k.library_path, &k, false, direct);
      continue;
    }
    switch (e.kind) {
      case entry_kind::special:
      case entry_kind::symlink:
        direct.push_back(make_outcome(st.spec, e, file_status::skipped, e.reason));
        continue;
      case entry_kind::unreadable:
        direct.push_back(make_outcome(st.spec, e, file_status::failed, e.reason));
        continue;
      case entry_kind::regular:
        break;
    }
    bool known_live = k.has_media && !k.missing;
    if (known_live && !st.spec.checksum && k.size == e.size && k.mtime_ns == e.mtime_ns
        && library_has(self, k.library_path, k.size)) {
      auto o = make_outcome(st.spec, e, file_status::skipped, "unchanged");
      o.sha256 = k.sha256;
      o.mime = k.mime;
      o.library_path = k.library_path;
      o.touches_media = true;
      direct.push_back(std::move(o));
      plan_image_stages(self, e.path, k.mime, k.library_path, &k, true, direct);
      continue;
    }
    auto t = stage_task(st, e.path, stage::sync, {}, {});
    t.size = e.size;
    t.mtime_ns = e.mtime_ns;
    if (known_live && st.spec.checksum && library_has(self, k.library_path, k.size)) {
      t.compare_sha256 = k.sha256;
      t.known_library_path = k.library_path;
      st.comparing.insert_or_assign(e.path, std::move(k));
    }
    st.pending[idx(stage::sync)].push_back(std::move(t));
  }
  send_to_writer(self, std::move(direct));
}

void finish(coord_ptr self) {
  auto& st = self->state;
  st.finishing = true;
  job_status status = !st.fatal.empty()
                        ? (st.fatal_resumable ? job_status::interrupted : job_status::failed)
                      : st.stopping ? job_status::interrupted
                                    : job_status::completed;
  // A complete, unfiltered scan is what tells which media vanished.
  bool mark_missing = status == job_status::completed && !st.filtered;
  self->request(st.writer, caf::infinite, finish_atom::value, st.spec.job_id, status, mark_missing)
    .then(
      [=](job_result& res) {
        auto& st = self->state;
        if (res.error.empty())
          res.error = st.fatal;
        self->send(st.supervisor, done_atom::value, std::move(res));
        self->quit();
      },
      [=](caf::error& err) {
        auto& st = self->state;
        job_result res;
        res.job_id = st.spec.job_id;
        res.status = job_status::failed;
        res.counters = st.last;
        res.error = st.fatal.empty() ? "cannot finish job: " + self->system().render(err)
                                     : st.fatal;
        self->send(st.supervisor, done_atom::value, std::move(res));
        self->quit();
      });
}

void maybe_finish(coord_ptr self) {
  auto& st = self->state;
  if (st.finishing || !st.assigned.empty() || st.lookups_pending > 0)
    return;
  bool ending = st.stopping || !st.fatal.empty();
  bool idle = std::all_of(st.pending.begin(), st.pending.end(),
                          [](const std::deque<file_task>& q) { return q.empty(); });
  if (ending || (st.opened && st.scan_done && idle))
    finish(self);
}

void fail(coord_ptr self, std::string reason) {
  auto& st = self->state;
  spdlog::error("job {}: {}", st.spec.job_id, reason);
  if (st.fatal.empty())
    st.fatal = std::move(reason);
  for (auto& q : st.pending)
    q.clear();
  maybe_finish(self);
}

/// True when a worker's failed outcome says the destination itself cannot take files: it
/// is full (ENOSPC, EDQUOT) or read-only (EROFS). The workers' library-side errors end with
/// the strerror text (actors/ingest.cpp, actors/atomic_file.cpp, actors/imaging.cpp); no
/// source-side error can carry these. Every other file would fail the same way.
bool destination_fault(const file_outcome& o) {
  if (o.status != file_status::failed)
    return false;
  for (int e : {ENOSPC, EDQUOT, EROFS}) {
    char buf[128];
    std::string text = std::string{": "} + ::strerror_r(e, buf, sizeof buf);
    if (o.error.size() > text.size()
        && o.error.compare(o.error.size() - text.size(), text.size(), text) == 0)
      return true;
  }
  return false;
}

/// A worker found the destination full or read-only. The file is not recorded (a resume
/// does it again), dispatch stops, the files in flight finish and are committed, and the
/// job ends interrupted: exit 3, resumable once the destination is fixed.
void destination_unusable(coord_ptr self, const file_outcome& out) {
  auto& st = self->state;
  --st.inflight;  // dispatched, but never goes to the writer
  if (!st.fatal.empty()) {
    maybe_finish(self);
    return;
  }
  st.fatal_resumable = true;
  fail(self, "destination '" + st.spec.dest_root + "' cannot take more files: " + out.error
               + " (" + std::string{to_string(out.stg)} + " stage of '" + out.path
               + "', not recorded); stopping: free space on it or make it writable, then "
                 "resume the job");
}

void end_of_scan(coord_ptr self) {
  auto& st = self->state;
  st.scan_done = true;
  self->send(st.writer, total_atom::value, st.spec.job_id, st.scan->count());
  if (st.scan->count() > 0 || st.spec.allow_empty_source || st.listed) {
    maybe_finish(self);
    return;
  }
  // An empty source the database knows files under is likely unmounted: refuse.
  ++st.lookups_pending;
  self->request(st.writer, caf::infinite, known_atom::value, st.spec.source_root)
    .then(
      [=](std::uint64_t n) {
        --self->state.lookups_pending;
        if (n > 0)
          fail(self, "source '" + self->state.spec.source_root + "' is empty, but the database "
                       "knows " + std::to_string(n) + " file(s) under it (not mounted?); "
                       "refusing to mark them missing (use --allow-empty-source if it is "
                       "really empty now)");
        else
          maybe_finish(self);
      },
      [=](caf::error& err) {
        --self->state.lookups_pending;
        fail(self, "database lookup failed: " + error_text(self->system(), err));
      });
}

void scan_more(coord_ptr self) {
  auto& st = self->state;
  std::vector<scan_entry> chunk;
  bool more;
  try {
    more = st.scan->next(chunk, scan_chunk);
  } catch (const std::exception& e) {
    fail(self, e.what());
    return;
  }
  if (!more && chunk.empty()) {
    end_of_scan(self);
    return;
  }
  self->send(st.writer, total_atom::value, st.spec.job_id, st.scan->count());
  std::vector<std::string> paths;
  paths.reserve(chunk.size());
  for (auto& e : chunk)
    paths.push_back(e.path);
  auto n = st.next_lookup++;
  st.looking_up.emplace(n, std::move(chunk));
  ++st.lookups_pending;
  self->request(st.writer, caf::infinite, lookup_atom::value, st.spec.job_id, std::move(paths))
    .then(
      [=](std::vector<known_file>& known) {
        auto& st = self->state;
        --st.lookups_pending;
        auto it = st.looking_up.find(n);
        if (it == st.looking_up.end())
          return;
        auto chunk = std::move(it->second);
        st.looking_up.erase(it);
        if (st.stopping || !st.fatal.empty()) {
          maybe_finish(self);  // the chunk is not recorded: a resume scans it again
          return;
        }
        decide(self, chunk, known);
        pump(self);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        --st.lookups_pending;
        st.looking_up.erase(n);
        fail(self, "database lookup failed: " + error_text(self->system(), err));
      });
}

constexpr int blind_limit = 3;

/// Puts a task that was at a worker back at the front of its stage's queue.
void requeue(coordinator_state& st, file_task t) {
  --st.inflight;
  auto s = t.stg;
  st.pending[idx(s)].push_front(std::move(t));
}

void count_task(coordinator_state& st, const file_outcome& out) {
  if (st.registry)
    st.registry->add("mediasync_cluster_tasks_total",
                     {{"node", out.node.empty() ? st.node_name : out.node},
                      {"stage", std::string{to_string(out.stg)}}},
                     1);
}

void dispatch(coord_ptr self, file_worker_actor worker, file_task task) {
  auto& st = self->state;
  ++st.inflight;
  auto addr = worker.address();
  st.assigned.emplace(addr, task);
  self->request(worker, caf::infinite, ingest_atom::value, std::move(task))
    .then(
      [=](file_outcome& out) {
        auto& st = self->state;
        auto it = st.assigned.find(addr);
        if (it == st.assigned.end())
          return;  // already reported failed by the supervisor's replacement notice
        auto s = it->second.stg;
        auto from = out.node;
        if (out.retry_elsewhere) {
          // This node cannot see the media: another worker does the file.
          spdlog::warn("job {}: node {} cannot do {}: {}", st.spec.job_id, out.node,
                       it->second.path, out.error);
          requeue(st, std::move(it->second));
          st.assigned.erase(it);
          if (++st.blind[from] >= blind_limit && st.excluded.insert(from).second)
            spdlog::error("job {}: node {} could not see the paths of {} tasks in a row: no "
                          "more tasks go to it in this job (check its path-map and mounts)",
                          st.spec.job_id, out.node, blind_limit);
        } else {
          st.assigned.erase(it);
          st.blind.erase(from);
          out.stg = s;
          count_task(st, out);
          if (destination_fault(out))
            destination_unusable(self, out);
          else
            on_outcome(self, std::move(out));
        }
        if (!st.excluded.count(from))
          st.idle[idx(s)].push_back(worker);
        pump(self);
      },
      [=](caf::error& err) {
        // A dead worker is reported by the supervisor (worker_atom, or leave_atom for a
        // remote one) with its reason.
        spdlog::debug("job {}: worker request failed: {}", self->state.spec.job_id,
                      self->system().render(err));
      });
}

/// Publishes the job's queue depths (tasks waiting for a worker, tasks at a worker).
void show_queues(coordinator_state& st) {
  if (!st.registry)
    return;
  std::array<double, stage_count> queued{}, running{};
  for (std::size_t i = 0; i < stage_count; ++i)
    queued[i] = static_cast<double>(st.pending[i].size());
  for (auto& [addr, t] : st.assigned)
    running[idx(t.stg)] += 1;
  st.show_queues(queued, running);
}

void pump(coord_ptr self) {
  auto& st = self->state;
  if (st.finishing || !st.opened) {
    show_queues(st);
    return;
  }
  if (!st.stopping && st.fatal.empty()) {
    // Later stages first: they drain the pipeline and free the window.
    for (auto s : {stage::watermark, stage::processing, stage::sync}) {
      auto& idle = st.idle[idx(s)];
      auto& queue = st.pending[idx(s)];
      while (!idle.empty() && !queue.empty()
             && (s != stage::sync || outstanding(st) < st.spec.window)) {
        auto w = std::move(idle.back());
        idle.pop_back();
        auto t = std::move(queue.front());
        queue.pop_front();
        dispatch(self, std::move(w), std::move(t));
      }
    }
    // Scan ahead while fewer than `lookahead_chunks` lookups are out and less than a chunk
    // waits for a worker: memory holds the window plus three chunks, whatever the tree.
    while (!st.scan_done && st.fatal.empty() && st.looking_up.size() < lookahead_chunks
           && st.pending[idx(stage::sync)].size() < scan_chunk
           && outstanding(st) < st.spec.window)
      scan_more(self);
  }
  maybe_finish(self);
  show_queues(st);
}

sync_coordinator_actor::behavior_type
coordinator(coord_ptr self, job_spec spec, progress_writer_actor writer,
            worker_pools workers, supervisor_actor supervisor, caf::actor listener,
            std::shared_ptr<metrics> registry, std::string node_name) {
  auto& st = self->state;
  st.registry = std::move(registry);
  st.node_name = std::move(node_name);
  st.spec = std::move(spec);
  if (st.spec.window == 0)
    st.spec.window = 1;
  st.writer = std::move(writer);
  for (std::size_t i = 0; i < stage_count && i < workers.size(); ++i)
    st.idle[i] = std::move(workers[i]);
  st.supervisor = std::move(supervisor);
  st.listener = std::move(listener);
  st.listed = !st.spec.paths.empty();
  st.filtered = !st.spec.includes.empty() || !st.spec.excludes.empty() || st.listed;
  durable_listener_actor me = caf::actor_cast<sync_coordinator_actor>(self);
  self->request(st.writer, caf::infinite, open_atom::value, st.spec.job_id, me)
    .then(
      [=](job_row& row) {
        auto& st = self->state;
        if (st.finishing)
          return;  // stopped before the job was open
        st.opened = true;
        st.last.job_id = row.id;
        st.last.total_files = row.total_files;
        st.last.processed_files = row.processed_files;
        st.last.failed_files = row.failed_files;
        st.last.skipped_files = row.skipped_files;
        st.last.processed_bytes = row.processed_bytes;
        st.dest_fd = ::open(st.spec.dest_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        try {
          path_filter filter{st.spec.includes, st.spec.excludes};
          if (st.spec.paths.empty())
            st.scan = std::make_unique<scanner>(st.spec.source_root, std::move(filter),
                                                st.spec.dest_root);
          else
            st.scan = std::make_unique<scanner>(st.spec.source_root, std::move(filter),
                                                st.spec.dest_root, std::move(st.spec.paths));
        } catch (const std::exception& e) {
          fail(self, e.what());
          return;
        }
        report(self);
        pump(self);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        job_result res;
        res.job_id = st.spec.job_id;
        res.status = job_status::failed;
        res.error = "cannot open job: " + error_text(self->system(), err);
        st.finishing = true;
        self->send(st.supervisor, done_atom::value, std::move(res));
        self->quit();
      });
  return {
    [=](durable_atom, const job_progress& p) {
      auto& st = self->state;
      st.inflight -= std::min(st.inflight, p.committed);
      st.last = p;
      report(self);
      pump(self);
    },
    [=](fatal_atom, const std::string& reason, bool resumable) {
      self->state.fatal_resumable = resumable;
      fail(self, reason);
    },
    [=](worker_atom, const caf::actor_addr& dead, const std::string& reason,
        file_worker_actor replacement, stage s) {
      auto& st = self->state;
      auto it = st.assigned.find(dead);
      if (it != st.assigned.end()) {
        auto& t = it->second;
        auto o = stage_outcome(st, t.path, t.stg, file_status::failed,
                               "worker died while working on it: " + reason);
        o.size = t.size;
        o.mtime_ns = t.mtime_ns;
        o.mime = t.mime;
        o.library_path = t.library_path;
        st.assigned.erase(it);
        on_outcome(self, std::move(o));
      }
      auto& idle = st.idle[idx(s)];
      std::erase_if(idle, [&](const file_worker_actor& w) { return w.address() == dead; });
      if (replacement)
        idle.push_back(std::move(replacement));
      pump(self);
    },
    [=](join_atom, file_worker_actor w, stage s) {
      self->state.idle[idx(s)].push_back(std::move(w));
      pump(self);
    },
    [=](leave_atom, const caf::actor_addr& gone, const std::string& reason) {
      auto& st = self->state;
      if (auto it = st.assigned.find(gone); it != st.assigned.end()) {
        spdlog::warn("job {}: a remote worker went away ({}); {} goes to another worker",
                     st.spec.job_id, reason, it->second.path);
        requeue(st, std::move(it->second));
        st.assigned.erase(it);
      }
      for (auto& idle : st.idle)
        std::erase_if(idle, [&](const file_worker_actor& w) { return w.address() == gone; });
      pump(self);
    },
    [=](pump_atom) { pump(self); },
    [=](stop_atom) {
      auto& st = self->state;
      if (!st.stopping)
        spdlog::info("job {}: stopping: draining {} file(s) in progress", st.spec.job_id,
                     st.assigned.size());
      st.stopping = true;
      for (auto& q : st.pending)
        q.clear();  // not recorded: a resume does them
      maybe_finish(self);
    },
  };
}

} // namespace

sync_coordinator_actor spawn_sync_coordinator(caf::actor_system& sys, job_spec spec,
                                              progress_writer_actor writer,
                                              worker_pools workers,
                                              supervisor_actor supervisor, caf::actor listener,
                                              std::shared_ptr<metrics> registry,
                                              std::string node_name) {
  return sys.spawn<caf::detached>(coordinator, std::move(spec), std::move(writer),
                                  std::move(workers), std::move(supervisor), std::move(listener),
                                  std::move(registry), std::move(node_name));
}

void describe_queue_metrics(metrics& registry) {
  registry.describe("mediasync_queued_tasks", metrics::kind::gauge,
                    "Tasks of running jobs waiting for a worker of the stage");
  registry.describe("mediasync_running_tasks", metrics::kind::gauge,
                    "Tasks of running jobs a worker of the stage is working on");
  registry.describe("mediasync_cluster_tasks_total", metrics::kind::counter,
                    "Tasks done, by the node whose worker did them and stage");
  for (std::size_t i = 0; i < stage_count; ++i) {
    metric_labels l{{"stage", std::string{to_string(static_cast<stage>(i))}}};
    registry.add("mediasync_queued_tasks", l, 0);
    registry.add("mediasync_running_tasks", l, 0);
  }
}

} // namespace ms
