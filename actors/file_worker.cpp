#include "actors/file_worker.hpp"

#include <caf/all.hpp>

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

file_worker_actor spawn_file_worker(caf::actor_system& sys, ingest_function fn) {
  if (!fn)
    fn = make_library_ingest();
  return sys.spawn<caf::detached>(file_worker, std::move(fn));
}

} // namespace ms
