#include "actors/file_worker.hpp"

#include <caf/all.hpp>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "actors/imaging.hpp"
#include "actors/ingest.hpp"

namespace ms {
namespace {

struct worker_state {
  static inline const char* name = "file_worker";
  ingest_function fn;
};

file_worker_actor::behavior_type
file_worker(file_worker_actor::stateful_pointer<worker_state> self, ingest_function fn) {
  self->state.fn = std::move(fn);
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& eptr) -> caf::error {
    try {
      std::rethrow_exception(eptr);
    } catch (const std::exception& e) {
      return caf::make_error(caf::sec::runtime_error, e.what());
    } catch (...) {
    }
    return caf::make_error(caf::sec::runtime_error, "unknown exception");
  });
  return {
    [=](ingest_atom, const file_task& task) -> file_outcome {
      auto out = self->state.fn(task);
      out.job_id = task.job_id;
      return out;
    },
  };
}

} // namespace

ingest_function make_library_ingest() {
  // Each worker runs on its own thread (detached), so the ingestor is per worker.
  // Keyed by job: a finished job removes its temp folder, so the next one starts afresh.
  struct cache {
    std::uint64_t job_id = 0;
    std::string source_root;
    std::string dest_root;
    std::unique_ptr<ingestor> ing;
  };
  auto c = std::make_shared<cache>();
  return [c](const file_task& task) -> file_outcome {
    if (!c->ing || c->job_id != task.job_id || c->source_root != task.source_root
        || c->dest_root != task.dest_root) {
      c->ing.reset();
      try {
        c->ing = std::make_unique<ingestor>(task.source_root, task.dest_root);
      } catch (const std::exception& e) {
        file_outcome out;
        out.path = task.path;
        out.size = task.size;
        out.mtime_ns = task.mtime_ns;
        out.status = file_status::failed;
        out.error = e.what();
        return out;
      }
      c->job_id = task.job_id;
      c->source_root = task.source_root;
      c->dest_root = task.dest_root;
    }
    ingest_request req;
    req.path = task.path;
    req.size = task.size;
    req.mtime_ns = task.mtime_ns;
    req.compare_sha256 = task.compare_sha256;
    req.known_library_path = task.known_library_path;
    return c->ing->ingest(req);
  };
}

namespace {

/// Runs one imaging step on the task's library, turning imaging errors into failed outcomes.
template <class F>
file_outcome imaging_step(const file_task& task, int vips_threads, F&& step) {
  imaging_init(vips_threads);  // once per process; later calls only set the thread count
  file_outcome out;
  out.path = task.path;
  out.mime = task.mime;
  out.library_path = task.library_path;
  auto t0 = std::chrono::steady_clock::now();
  int fd = ::open(task.dest_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    out.status = file_status::failed;
    out.error = "library '" + task.dest_root + "' cannot be opened: " + std::strerror(errno);
    return out;
  }
  try {
    step(fd, out);
    out.status = file_status::ok;
    out.touches_media = true;
  } catch (const imaging_error& e) {
    out.status = file_status::failed;
    out.error = e.what();
  }
  ::close(fd);
  out.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  return out;
}

} // namespace

ingest_function make_processing_work(const imaging_settings& settings, int vips_threads) {
  return [settings, vips_threads](const file_task& task) {
    return imaging_step(task, vips_threads, [&](int fd, file_outcome& out) {
      auto r = make_thumbnails(fd, task.library_path, settings);
      out.width = r.info.width;
      out.height = r.info.height;
      out.orientation = r.info.orientation;
      out.taken_at = r.info.taken_at;
      for (auto& [size, path] : r.thumbnails)
        out.thumbnail_paths.push_back(path);
    });
  };
}

ingest_function make_watermark_work(const imaging_settings& settings, int vips_threads) {
  return [settings, vips_threads](const file_task& task) {
    return imaging_step(task, vips_threads, [&](int fd, file_outcome& out) {
      out.preview_path = make_preview(fd, task.thumbnail, task.library_path, settings);
    });
  };
}

file_worker_actor spawn_file_worker(caf::actor_system& sys, ingest_function fn) {
  if (!fn)
    fn = make_library_ingest();
  return sys.spawn<caf::detached>(file_worker, std::move(fn));
}

} // namespace ms
