// Helpers shared by the tests: temp dirs, files, running the real binary.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace ms::test {

/// A temporary directory, removed with everything under it on destruction.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

private:
  std::string path_;
};

/// Removes `path` and everything under it, giving directories back their permissions
/// first, without following symlinks and relative to directory fds (so trees deeper
/// than PATH_MAX go too). Missing paths are fine.
void remove_tree(const std::string& path);

/// Opens directory `rel` ("" = `root` itself) under `root` one component at a time with
/// O_NOFOLLOW (so paths longer than PATH_MAX work too), creating missing components (and
/// `root`) when `create`. Returns an fd, or -1.
int open_dir(const std::string& root, const std::string& rel, bool create);
/// "a/b/c" -> {"a/b", "c"}; "c" -> {"", "c"}.
std::pair<std::string, std::string> split_path(const std::string& rel);

/// Writes `bytes` to `path`, creating parent directories.
void write_file(const std::string& path, const std::string& bytes);
/// Reads a whole file; throws if it cannot.
std::string read_file(const std::string& path);
/// Deterministic pseudo-random content of `n` bytes for file number `seed`.
std::string content(std::size_t n, std::uint64_t seed);
/// Creates `n` files of `size` bytes in `dirs` folders under `root`; returns their relative paths.
std::vector<std::string> make_tree(const std::string& root, std::size_t n, std::size_t size,
                                   std::size_t dirs = 10);

/// Result of running a command.
struct run_result {
  int exit_code = -1;  ///< exit status, or 128+signal
  std::string out;
  std::string err;
};

/// Runs the mediasync binary with `args` (in directory `cwd` if given), waits, captures
/// stdout and stderr.
run_result run_mediasync(const std::vector<std::string>& args, const std::string& cwd = {});
/// Starts the mediasync binary with `args` in the background (output to files
/// log_prefix.out and .err; in directory `cwd` if given); returns its pid.
int start_mediasync(const std::vector<std::string>& args, const std::string& log_prefix,
                    const std::string& cwd = {});
/// Waits for `pid`; returns its exit status or 128+signal.
int wait_pid(int pid);

/// How many times slower the suite runs in this build: the tests multiply the time limits
/// of their waits by it. Under ThreadSanitizer the binary, CAF's message passing and
/// libvips run 5-15 times slower; other builds (ASan included) keep the plain limits.
#if defined(__SANITIZE_THREAD__)
inline constexpr int time_scale = 10;
#else
inline constexpr int time_scale = 1;
#endif

/// Polls `pred` every 50 ms until it holds or `timeout` (times time_scale) passes;
/// returns whether it held.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout * time_scale;
  for (;;) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() > end)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
}

/// Runs `promtool check metrics` (Debian package prometheus, installed by
/// scripts/setup.sh) on `exposition` (Prometheus text format, on its stdin).
/// Returns promtool's complaints (its output and exit status), empty when the
/// text is clean. Throws std::runtime_error, saying to run scripts/setup.sh,
/// when promtool is not installed.
std::string promtool_check(const std::string& exposition);

} // namespace ms::test
