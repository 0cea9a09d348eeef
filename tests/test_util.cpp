#include "test_util.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace ms::test {

namespace fs = std::filesystem;

namespace {

void remove_at(int dirfd, const char* name) {
  struct stat sb;
  if (::fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
    return;
  if (S_ISDIR(sb.st_mode)) {
    ::fchmodat(dirfd, name, 0700, 0);
    int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      DIR* d = ::fdopendir(fd);
      std::vector<std::string> names;
      while (struct dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          names.emplace_back(e->d_name);
      for (auto& n : names)
        remove_at(fd, n.c_str());
      ::closedir(d);
    }
    ::unlinkat(dirfd, name, AT_REMOVEDIR);
  } else {
    ::unlinkat(dirfd, name, 0);
  }
}

} // namespace

void remove_tree(const std::string& path) { remove_at(AT_FDCWD, path.c_str()); }

temp_dir::temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "mediasync-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data()))
    throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

temp_dir::~temp_dir() { remove_tree(path_); }

int open_dir(const std::string& root, const std::string& rel, bool create) {
  if (create)
    ::mkdir(root.c_str(), 0755);
  int cur = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (std::size_t pos = 0; cur >= 0 && pos < rel.size();) {
    auto slash = rel.find('/', pos);
    if (slash == std::string::npos)
      slash = rel.size();
    std::string comp = rel.substr(pos, slash - pos);
    if (create)
      ::mkdirat(cur, comp.c_str(), 0755);
    int fd = ::openat(cur, comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    ::close(cur);
    cur = fd;
    pos = slash + 1;
  }
  return cur;
}

std::pair<std::string, std::string> split_path(const std::string& rel) {
  auto slash = rel.rfind('/');
  if (slash == std::string::npos)
    return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f)
    throw std::runtime_error("cannot write " + path);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string content(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed * 7919 + 17);
  std::string s(n, '\0');
  for (auto& c : s)
    c = static_cast<char>(rng() & 0xff);
  return s;
}

std::vector<std::string> make_tree(const std::string& root, std::size_t n, std::size_t size,
                                   std::size_t dirs) {
  std::vector<std::string> paths;
  for (std::size_t i = 0; i < n; ++i) {
    auto rel = "d" + std::to_string(i % dirs) + "/f" + std::to_string(i) + ".bin";
    write_file(root + "/" + rel, content(size, i));
    paths.push_back(rel);
  }
  return paths;
}

namespace {

std::vector<char*> argv_of(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args)
    v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

const std::string& binary() {
  static const std::string bin{MEDIASYNC_BIN};
  return bin;
}

int spawn(const std::vector<std::string>& operands, const std::string& out,
          const std::string& err, const std::string& cwd) {
  std::vector<std::string> args;
  args.reserve(operands.size() + 1);
  args.push_back(binary());
  args.insert(args.end(), operands.begin(), operands.end());
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!cwd.empty())
    posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  auto argv = argv_of(args);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, MEDIASYNC_BIN, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    throw std::runtime_error("cannot start " MEDIASYNC_BIN);
  return pid;
}

} // namespace

int wait_pid(int pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

int start_mediasync(const std::vector<std::string>& args, const std::string& log_prefix,
                    const std::string& cwd) {
  return spawn(args, log_prefix + ".out", log_prefix + ".err", cwd);
}

namespace {

/// The full path of `name` found on $PATH (or in /usr/bin), empty if none.
std::string find_program(const std::string& name) {
  const char* env = std::getenv("PATH");
  std::string path = env && *env ? env : "/usr/bin:/bin";
  path += ":/usr/bin";
  for (std::size_t b = 0; b <= path.size();) {
    std::size_t e = path.find(':', b);
    if (e == std::string::npos)
      e = path.size();
    std::string dir = path.substr(b, e - b);
    b = e + 1;
    if (dir.empty())
      continue;
    std::string cand = dir + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0)
      return cand;
  }
  return {};
}

} // namespace

std::string promtool_check(const std::string& exposition) {
  const std::string promtool = find_program("promtool");
  if (promtool.empty())
    throw std::runtime_error(
        "promtool is not installed (not on PATH nor in /usr/bin): run scripts/setup.sh, which "
        "installs Debian's prometheus package (it ships /usr/bin/promtool; the daemon is not "
        "started)");
  temp_dir tmp;
  write_file(tmp / "metrics.txt", exposition);
  std::vector<std::string> args{promtool, "check", "metrics"};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, (tmp / "metrics.txt").c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, (tmp / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&fa, 2, (tmp / "err").c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  auto argv = argv_of(args);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, promtool.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    throw std::runtime_error("cannot start " + promtool + ": " + std::strerror(rc));
  int status = wait_pid(pid);
  std::string said = read_file(tmp / "out") + read_file(tmp / "err");
  if (status == 0 && said.empty())
    return {};
  return "promtool check metrics exited " + std::to_string(status) + ":\n" + said;
}

run_result run_mediasync(const std::vector<std::string>& args, const std::string& cwd) {
  temp_dir logs;
  auto pid = spawn(args, logs / "out", logs / "err", cwd);
  run_result r;
  r.exit_code = wait_pid(pid);
  r.out = read_file(logs / "out");
  r.err = read_file(logs / "err");
  return r;
}

} // namespace ms::test
