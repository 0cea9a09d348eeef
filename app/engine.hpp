// The engine of one process: the database, the actor system, the supervisor (with the
// progress-writer and the stage worker pools). Commands build one and run jobs on it.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "actors/interfaces.hpp"
#include "app/options.hpp"
#include "storage/store.hpp"

namespace ms { class metrics; }

namespace ms::app {

struct fatal_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Opens `url`; a URL that does not parse is a usage_error, anything else a fatal_error.
std::shared_ptr<storage::store> open_db(const std::string& url, storage::open_mode mode);

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread started after
/// (call first thing in main): they are taken with sigwait() by whoever handles them.
void block_signals();

/// Canonical absolute path of an existing directory, or a usage_error naming `what`.
std::string existing_dir(const std::string& path, const char* what);

/// Sets the parts of `spec` that come from a job's settings (name, filters, stages, window).
void apply_job_options(job_spec& spec, const options& opt);

/// Checks a job's settings and paths and builds its spec (a new job). `opt.source` and
/// `opt.dest` name the trees; `create_dest` creates the destination. Throws usage_error
/// (bad paths, bad image settings) or fatal_error (destination not creatable/writable).
job_spec make_job_spec(const options& opt, bool create_dest = true);

/// Process exit code for a finished job.
int exit_code_of(const job_result& r);

/// The worst of two exit codes (interrupted > fatal > failed files > ok).
int worst_exit_code(int a, int b);

class engine {
public:
  /// Opens the database and starts the supervisor with the writer and the worker pools
  /// sized by `opt` (global settings). `m`: metrics to keep (may be null). With
  /// [cluster] listen, it also publishes the registry (TLS) for worker nodes to join.
  explicit engine(const options& opt, std::shared_ptr<metrics> m = nullptr);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  caf::actor_system& system();
  supervisor_actor supervisor() const;
  /// The database, as shown to users (path or URL without password).
  const std::string& db_name() const;

  /// The worker nodes joined now (empty without [cluster] listen).
  std::vector<cluster_node> nodes();

  /// With [cluster] listen: blocks until `n` worker nodes joined or `timeout` passed.
  void wait_for_nodes(std::size_t n, std::chrono::milliseconds timeout);

  /// Starts `spec`: its progress goes to `listener` as (progress, job_progress), its end as
  /// (done, token, job_result).
  void start(job_spec spec, const caf::actor& listener, std::uint64_t token);

  /// Runs `specs` together to their end, showing progress (one display per job). The
  /// first SIGINT/SIGTERM stops them cleanly, a second exits at once. Returns the
  /// results in the order of `specs`.
  std::vector<job_result> run(std::vector<job_spec> specs, progress_mode progress);

  /// The process's exit code, used if the teardown of a cluster's actor system hangs and
  /// the process exits from the destructor.
  void set_exit_code(int code);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
  int exit_code_ = 0;
};

/// Logs how a job ended (completed, interrupted, failed) with the next step to take.
void log_result(const job_result& r, const std::string& db_name);

} // namespace ms::app
