// Streaming scan of a source tree and the include/exclude path filter.
//
// Glob semantics (path_filter):
//  - '*' and '?' never match '/'; bracket expressions ("[a-z]", "[!x]",
//    "[[:digit:]]") are evaluated by fnmatch(3) with FNM_PATHNAME, one byte at a
//    time; '\' escapes the next character. A leading '.' is not special.
//  - '**' matches any sequence of bytes, '/' included. "**/" at the start of a
//    path component also matches zero components ("a/**/b" matches "a/b",
//    "**/x" matches "x").
//  - A glob without '/' is matched against the base name, a glob with '/' against
//    the whole relative path. A leading '/' only anchors ("/raw" = "raw" at the
//    root, matched as a path). A trailing '/' ("cache/") matches directories only.
//  - An exclude prunes a directory when it matches the directory itself, or when it
//    has the form "X/**" and X matches the directory. accepts() also rejects a path
//    below a pruned directory, so it agrees with what the scanner yields.
//
// Scanner: depth-first, one sorted listing per stack level. Within a directory,
// entries are ordered by name bytes with a directory sorting as if its name ended
// in '/', so the whole stream comes out in byte order of the relative paths
// (the path of an unreadable directory is the one exception: it is emitted where
// its contents would have been). A listing is read completely (getdents64, no DIR*)
// and every entry lstat'ed right away; afterwards the level keeps only an fd for
// opening its subdirectories, and at most max_open_levels such fds stay open: deeper
// stacks close the oldest and reopen them (component by component from the root,
// with O_NOFOLLOW, checking device and inode) when the scan comes back up.
#include "actors/scanner.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace ms {

namespace {

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r: returns a pointer to the message (maybe not into buf).
  return std::string{::strerror_r(err, buf, sizeof buf)};
}

// ---------------------------------------------------------------- glob matching

bool bracket_match(const char* open, const char* close, unsigned char c) {
  // [open, close] is the whole bracket expression, both brackets included.
  char small[256];
  std::string big;
  const char* pat;
  auto n = static_cast<std::size_t>(close - open + 1);
  if (n < sizeof small) {
    std::memcpy(small, open, n);
    small[n] = '\0';
    pat = small;
  } else {
    big.assign(open, n);
    pat = big.c_str();
  }
  char text[2] = {static_cast<char>(c), '\0'};
  return ::fnmatch(pat, text, FNM_PATHNAME) == 0;
}

/// End of the bracket expression starting at p ('['), or nullptr if unterminated.
const char* bracket_end(const char* p, const char* pe) {
  const char* j = p + 1;
  if (j < pe && (*j == '!' || *j == '^'))
    ++j;
  if (j < pe && *j == ']')
    ++j;
  while (j < pe && *j != ']') {
    if (*j == '[' && j + 1 < pe && (j[1] == ':' || j[1] == '.' || j[1] == '=')) {
      char kind = j[1];
      const char* k = j + 2;
      while (k + 1 < pe && !(k[0] == kind && k[1] == ']'))
        ++k;
      if (k + 1 >= pe)
        return nullptr;
      j = k + 2;
      continue;
    }
    if (*j == '\\' && j + 1 < pe)
      ++j;
    ++j;
  }
  return j < pe ? j : nullptr;
}

/// One match of a glob against a text. Plain backtracking over '*' and '**' is
/// exponential in the number of stars ("*a*a*a*a*a*a*a*b" on a long name of 'a's), so a
/// match first runs without memory under a step budget linear in the sizes (enough for
/// every ordinary glob), and only a match that runs out of it is redone with `failed`,
/// which remembers the (pattern position, text position) pairs already known not to
/// match: each pair is then visited once, O(|pattern| * |text|) steps.
struct glob_state {
  const char* pbeg;
  const char* pe;
  const char* sbeg;
  const char* se;
  std::vector<bool> failed;  ///< [(p - pbeg) * (se - sbeg + 1) + (s - sbeg)]; empty: no memo
  std::size_t budget = 0;    ///< steps left before a match without memo gives up
  bool out_of_steps = false;
};

bool glob_rec(glob_state& g, const char* p, const char* s);

/// glob_rec, remembering failures (or counting steps, without the table).
bool glob_at(glob_state& g, const char* p, const char* s) {
  if (g.failed.empty()) {
    if (g.budget == 0) {
      g.out_of_steps = true;
      return false;
    }
    --g.budget;
    return glob_rec(g, p, s);
  }
  auto key = static_cast<std::size_t>(p - g.pbeg) * static_cast<std::size_t>(g.se - g.sbeg + 1)
             + static_cast<std::size_t>(s - g.sbeg);
  if (g.failed[key])
    return false;
  if (glob_rec(g, p, s))
    return true;
  g.failed[key] = true;
  return false;
}

bool glob_rec(glob_state& g, const char* p, const char* s) {
  const char* const pe = g.pe;
  const char* const se = g.se;
  while (p < pe) {
    char c = *p;
    if (c == '*') {
      if (p + 1 < pe && p[1] == '*') {
        const char* q = p;
        while (q < pe && *q == '*')
          ++q;
        bool seg_start = (p == g.pbeg || p[-1] == '/');
        if (seg_start && q < pe && *q == '/') {
          // "**/": zero or more whole components: the rest matches here, or "**/"
          // matches again after the next '/'.
          if (glob_at(g, q + 1, s))
            return true;
          auto slash = s == se ? nullptr
                               : static_cast<const char*>(
                                   std::memchr(s, '/', static_cast<std::size_t>(se - s)));
          return slash != nullptr && glob_at(g, p, slash + 1);
        }
        if (q == pe)
          return true;  // trailing "**" takes everything
        // "**": the rest matches here, or "**" takes one more byte ('/' included).
        return glob_at(g, q, s) || (s < se && glob_at(g, p, s + 1));
      }
      // single '*': anything but '/'
      const char* rest = p + 1;
      if (rest == pe)
        return s == se || std::memchr(s, '/', static_cast<std::size_t>(se - s)) == nullptr;
      return glob_at(g, rest, s) || (s < se && *s != '/' && glob_at(g, p, s + 1));
    }
    if (c == '?') {
      if (s == se || *s == '/')
        return false;
      ++p;
      ++s;
      continue;
    }
    if (c == '[') {
      if (const char* close = bracket_end(p, pe)) {
        if (s == se || *s == '/' || !bracket_match(p, close, static_cast<unsigned char>(*s)))
          return false;
        p = close + 1;
        ++s;
        continue;
      }
      // unterminated: a literal '['
    }
    if (c == '\\' && p + 1 < pe)
      c = *++p;
    if (s == se || *s != c)
      return false;
    ++p;
    ++s;
  }
  return s == se;
}

bool glob_match(std::string_view pat, std::string_view text) {
  glob_state g{pat.data(), pat.data() + pat.size(), text.data(), text.data() + text.size(), {}};
  // Only stars backtrack.
  if (pat.find('*') == std::string_view::npos)
    return glob_rec(g, g.pbeg, g.sbeg);
  g.budget = 4 * (pat.size() + text.size()) + 64;
  if (glob_rec(g, g.pbeg, g.sbeg))
    return true;  // a match found is a match, budget or not
  if (!g.out_of_steps)
    return false;
  // A glob so long that the table would pass 64 Mbit is matched without it.
  std::size_t cells = (pat.size() + 1) * (text.size() + 1);
  g.out_of_steps = false;
  if (cells <= (std::size_t{1} << 26))
    g.failed.assign(cells, false);
  else
    g.budget = std::numeric_limits<std::size_t>::max();
  return glob_rec(g, g.pbeg, g.sbeg);
}

std::string_view base_name(std::string_view path) {
  auto pos = path.rfind('/');
  return pos == std::string_view::npos ? path : path.substr(pos + 1);
}

/// Does `glob` (as written by the user) match `path` (a file or, with is_dir, a directory)?
bool glob_applies(std::string_view glob, std::string_view path, bool is_dir) {
  if (glob.empty())
    return false;
  if (glob.size() > 1 && glob.back() == '/') {  // directories only
    if (!is_dir)
      return false;
    glob.remove_suffix(1);
  }
  if (glob.front() == '/') {  // anchored: whole path
    glob.remove_prefix(1);
    return glob_match(glob, path);
  }
  if (glob.find('/') == std::string_view::npos)
    return glob_match(glob, base_name(path));
  return glob_match(glob, path);
}

/// Does exclude `glob` prune directory `dir` itself (not looking at its ancestors)?
bool prunes_self(std::string_view glob, std::string_view dir) {
  if (glob_applies(glob, dir, true))
    return true;
  // "X/**": everything below X is excluded.
  if (glob.size() > 3 && glob.substr(glob.size() - 3) == "/**") {
    auto prefix = glob.substr(0, glob.size() - 3);
    if (prefix.front() == '/')
      prefix.remove_prefix(1);
    if (!prefix.empty() && glob_match(prefix, dir))
      return true;
  }
  return false;
}

} // namespace

// ------------------------------------------------------------------ path_filter

path_filter::path_filter(std::vector<std::string> includes, std::vector<std::string> excludes)
  : includes_(std::move(includes)), excludes_(std::move(excludes)) {
  auto drop_empty = [](std::vector<std::string>& v) {
    std::erase_if(v, [](const std::string& s) { return s.empty(); });
  };
  drop_empty(includes_);
  drop_empty(excludes_);
}

bool path_filter::accepts(const std::string& rel_path) const {
  if (empty())
    return true;
  std::string_view p{rel_path};
  if (!includes_.empty()) {
    bool any = false;
    for (auto& g : includes_)
      if (glob_applies(g, p, false)) {
        any = true;
        break;
      }
    if (!any)
      return false;
  }
  for (auto& g : excludes_)
    if (glob_applies(g, p, false))
      return false;
  // Below an excluded directory?
  if (!excludes_.empty()) {
    for (auto pos = p.find('/'); pos != std::string_view::npos; pos = p.find('/', pos + 1)) {
      auto dir = p.substr(0, pos);
      for (auto& g : excludes_)
        if (prunes_self(g, dir))
          return false;
    }
  }
  return true;
}

bool path_filter::prunes_dir(const std::string& rel_dir) const {
  if (excludes_.empty())
    return false;
  std::string_view d{rel_dir};
  for (std::size_t pos = 0;;) {
    auto slash = d.find('/', pos);
    auto dir = slash == std::string_view::npos ? d : d.substr(0, slash);
    for (auto& g : excludes_)
      if (prunes_self(g, dir))
        return true;
    if (slash == std::string_view::npos)
      return false;
    pos = slash + 1;
  }
}

// ---------------------------------------------------------------------- scanner

namespace {

constexpr std::size_t max_open_levels = 48;
constexpr int dir_open_flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

enum class item_type : std::uint8_t { regular, directory, special, symlink, unreadable };

struct item {
  std::string name;
  item_type type = item_type::regular;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t mode = 0;
  int err = 0;  ///< for unreadable: the lstat errno
};

/// Byte order of the names, a directory's name taken as if it ended in '/'.
bool item_less(const item& a, const item& b) {
  auto n = std::min(a.name.size(), b.name.size());
  if (int c = std::memcmp(a.name.data(), b.name.data(), n); c != 0)
    return c < 0;
  auto at = [n](const item& x) -> int {
    if (x.name.size() > n)
      return static_cast<unsigned char>(x.name[n]);
    return x.type == item_type::directory ? '/' : -1;
  };
  return at(a) < at(b);
}

struct level {
  int fd = -1;        ///< -1 while closed (reopened on demand)
  std::string rel;    ///< relative path of this directory, "" for the root
  dev_t dev = 0;
  ino_t ino = 0;
  std::vector<item> items;
  std::size_t pos = 0;
  bool broken = false;  ///< could not be reopened: its subdirectories are lost
};

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty())
    return name;
  std::string r;
  r.reserve(dir.size() + 1 + name.size());
  r.append(dir).push_back('/');
  r.append(name);
  return r;
}

const char* special_reason(mode_t m) {
  if (S_ISFIFO(m))
    return "skipped special file (FIFO)";
  if (S_ISSOCK(m))
    return "skipped special file (socket)";
  if (S_ISCHR(m))
    return "skipped special file (character device)";
  if (S_ISBLK(m))
    return "skipped special file (block device)";
  return "skipped special file (unknown type)";
}

} // namespace

struct scanner::impl {
  std::string root;
  path_filter filter;
  bool has_skip = false;
  dev_t skip_dev = 0;
  ino_t skip_ino = 0;
  std::vector<level> stack;
  std::size_t open_levels = 0;  ///< levels with fd >= 0
  std::vector<char> dents;      ///< getdents64 buffer, reused
  bool list_mode = false;       ///< scan `list`, not the tree
  std::vector<std::string> list;
  std::size_t list_pos = 0;

  ~impl() {
    for (auto& l : stack)
      if (l.fd >= 0)
        ::close(l.fd);
  }

  /// Reads and lstat's the whole listing of `fd` (the directory `rel`).
  /// Returns 0 or the errno of the failed read.
  int read_listing(int fd, const std::string& rel, std::vector<item>& out) {
    out.clear();
    if (dents.empty())
      dents.resize(64 * 1024);
    std::string path;
    for (;;) {
      ssize_t n = ::getdents64(fd, dents.data(), dents.size());
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return errno;
      }
      if (n == 0)
        break;
      for (ssize_t off = 0; off < n;) {
        auto* d = reinterpret_cast<struct dirent64*>(dents.data() + off);
        off += d->d_reclen;
        const char* nm = d->d_name;
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
          continue;
        item it;
        it.name = nm;
        struct stat sb;
        if (::fstatat(fd, nm, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
          if (errno == ENOENT)
            continue;  // vanished between readdir and stat
          it.type = item_type::unreadable;
          it.err = errno;
        } else {
          it.mtime_ns = static_cast<std::int64_t>(sb.st_mtim.tv_sec) * 1'000'000'000
                        + sb.st_mtim.tv_nsec;
          it.dev = sb.st_dev;
          it.ino = sb.st_ino;
          it.mode = sb.st_mode;
          if (S_ISREG(sb.st_mode)) {
            it.type = item_type::regular;
            it.size = static_cast<std::uint64_t>(sb.st_size);
          } else if (S_ISDIR(sb.st_mode)) {
            it.type = item_type::directory;
          } else if (S_ISLNK(sb.st_mode)) {
            it.type = item_type::symlink;
          } else {
            it.type = item_type::special;
          }
        }
        if (it.type == item_type::directory) {
          if (has_skip && it.dev == skip_dev && it.ino == skip_ino)
            continue;
          if (!filter.empty()) {
            path = join(rel, it.name);
            if (filter.prunes_dir(path))
              continue;
          }
        } else if (!filter.empty()) {
          path = join(rel, it.name);
          if (!filter.accepts(path))
            continue;
        }
        out.push_back(std::move(it));
      }
    }
    std::sort(out.begin(), out.end(), item_less);
    return 0;
  }

  void close_level(level& l) {
    if (l.fd >= 0) {
      ::close(l.fd);
      l.fd = -1;
      --open_levels;
    }
  }

  /// Keeps at most max_open_levels fds: closes the shallowest ones (never the root).
  void trim_open_levels() {
    for (std::size_t i = 1; open_levels > max_open_levels && i + 1 < stack.size(); ++i)
      close_level(stack[i]);
  }

  /// Reopens stack[t] (and the closed levels just below it, up to the fd budget)
  /// by walking from the nearest open ancestor. False if the tree changed under us.
  bool reopen(std::size_t t) {
    std::size_t j = t;
    while (j > 0 && stack[j].fd < 0)
      --j;
    if (stack[j].fd < 0)
      return false;  // the root level was popped: cannot happen while t is on the stack
    const std::string& target = stack[t].rel;
    std::size_t keep_from = t + 1 > max_open_levels / 2 ? t + 1 - max_open_levels / 2 : 1;
    int cur = stack[j].fd;
    bool cur_owned = false;
    std::size_t pos = stack[j].rel.empty() ? 0 : stack[j].rel.size() + 1;
    std::size_t m = j + 1;
    std::string comp;
    bool ok = true;
    while (pos <= target.size()) {
      auto slash = target.find('/', pos);
      if (slash == std::string::npos)
        slash = target.size();
      comp.assign(target, pos, slash - pos);
      int fd = ::openat(cur, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cur_owned)
        ::close(cur);
      if (fd < 0) {
        ok = false;
        break;
      }
      cur = fd;
      cur_owned = true;
      while (m <= t && stack[m].rel.size() < slash)
        ++m;
      if (m <= t && stack[m].rel.size() == slash) {
        struct stat sb;
        if (::fstat(fd, &sb) != 0 || sb.st_dev != stack[m].dev || sb.st_ino != stack[m].ino) {
          ok = false;
          ::close(fd);
          cur_owned = false;
          break;
        }
        if (m >= keep_from || m == t) {
          int keep = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
          if (keep >= 0) {
            stack[m].fd = keep;
            ++open_levels;
          } else if (m == t) {
            ok = false;
          }
        }
        ++m;
      }
      pos = slash + 1;
    }
    if (cur_owned)
      ::close(cur);
    return ok && stack[t].fd >= 0;
  }

  /// Opens the root (and lists it when `list_root`). Throws std::runtime_error naming it.
  void open_root(std::string root_path, path_filter f, const std::string& skip_dir,
                 bool list_root) {
    root = std::move(root_path);
    filter = std::move(f);
    auto fail = [&](const std::string& what) {
      throw std::runtime_error("source '" + root + "' " + what);
    };
    if (root.empty())
      throw std::runtime_error("source path is empty");
    struct stat sb;
    if (::stat(root.c_str(), &sb) != 0) {
      int e = errno;
      if (e == ENOENT)
        fail("does not exist");
      if (e == ENOTDIR)
        fail("is not a directory (a path component is not a directory)");
      fail("cannot be read: " + errno_text(e));
    }
    if (!S_ISDIR(sb.st_mode))
      fail("is not a directory");
    int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      fail("cannot be read: " + errno_text(errno));
    level root_level;
    root_level.fd = fd;
    open_levels = 1;
    if (::fstat(fd, &sb) == 0) {
      root_level.dev = sb.st_dev;
      root_level.ino = sb.st_ino;
    }
    stack.push_back(std::move(root_level));  // owned (and closed) by impl from here
    if (!skip_dir.empty() && ::stat(skip_dir.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode)) {
      has_skip = true;
      skip_dev = sb.st_dev;
      skip_ino = sb.st_ino;
    }
    if (!list_root)
      return;
    if (int e = read_listing(fd, std::string{}, stack.back().items); e != 0)
      fail("cannot be read: " + errno_text(e));
  }

  /// One path of list mode: false when it is not to be reported (see the constructor).
  bool stat_listed(const std::string& rel, scan_entry& e) {
    if (rel.empty() || rel.front() == '/' || !filter.accepts(rel))
      return false;
    // Walk the parents without following symlinks: a listed path never leads outside.
    int cur = stack.front().fd;
    bool owned = false;
    std::size_t pos = 0;
    bool ok = true;
    for (;;) {
      auto slash = rel.find('/', pos);
      if (slash == std::string::npos)
        break;
      auto comp = rel.substr(pos, slash - pos);
      if (comp.empty() || comp == "." || comp == ".." || filter.prunes_dir(rel.substr(0, slash))) {
        ok = false;
        break;
      }
      int fd = ::openat(cur, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (owned)
        ::close(cur);
      owned = fd >= 0;
      cur = fd;
      struct stat sb;
      if (fd < 0 || (has_skip && ::fstat(fd, &sb) == 0 && sb.st_dev == skip_dev
                     && sb.st_ino == skip_ino)) {
        ok = false;
        break;
      }
      pos = slash + 1;
    }
    auto name = rel.substr(pos);
    struct stat sb;
    bool found = ok && name != "." && name != ".."
                 && ::fstatat(cur, name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0;
    int err = errno;
    if (owned)
      ::close(cur);
    if (!found) {
      if (!ok || err == ENOENT || err == ENOTDIR)
        return false;
      e.path = rel;
      e.kind = entry_kind::unreadable;
      e.reason = "cannot read: " + errno_text(err);
      return true;
    }
    if (S_ISDIR(sb.st_mode))
      return false;
    e.path = rel;
    e.mtime_ns = static_cast<std::int64_t>(sb.st_mtim.tv_sec) * 1'000'000'000 + sb.st_mtim.tv_nsec;
    if (S_ISREG(sb.st_mode)) {
      e.kind = entry_kind::regular;
      e.size = static_cast<std::uint64_t>(sb.st_size);
    } else if (S_ISLNK(sb.st_mode)) {
      e.kind = entry_kind::symlink;
      e.reason = "symlink not followed";
    } else {
      e.kind = entry_kind::special;
      e.reason = special_reason(sb.st_mode);
    }
    return true;
  }

  void emit_unreadable(std::vector<scan_entry>& out, std::string path, std::string reason) {
    scan_entry e;
    e.path = std::move(path);
    e.kind = entry_kind::unreadable;
    e.reason = std::move(reason);
    out.push_back(std::move(e));
  }
};

scanner::scanner(std::string root, path_filter filter, std::string skip_dir)
  : impl_(std::make_unique<impl>()) {
  impl_->open_root(std::move(root), std::move(filter), skip_dir, /*list=*/true);
}

scanner::scanner(std::string root, path_filter filter, std::string skip_dir,
                 std::vector<std::string> paths)
  : impl_(std::make_unique<impl>()) {
  impl_->open_root(std::move(root), std::move(filter), skip_dir, /*list=*/false);
  impl_->list_mode = true;
  impl_->list = std::move(paths);
}

scanner::~scanner() = default;

bool scanner::next(std::vector<scan_entry>& out, std::size_t max) {
  auto& s = *impl_;
  std::size_t appended = 0;
  if (s.list_mode) {
    while (appended < max && s.list_pos < s.list.size()) {
      scan_entry e;
      if (s.stat_listed(s.list[s.list_pos++], e)) {
        out.push_back(std::move(e));
        ++appended;
        ++count_;
      }
    }
    return appended > 0;
  }
  while (appended < max && !s.stack.empty()) {
    auto& top = s.stack.back();
    if (top.pos == top.items.size()) {
      s.close_level(top);
      s.stack.pop_back();
      continue;
    }
    item& it = top.items[top.pos++];
    if (it.type != item_type::directory) {
      scan_entry e;
      e.path = join(top.rel, it.name);
      e.mtime_ns = it.mtime_ns;
      switch (it.type) {
        case item_type::regular:
          e.kind = entry_kind::regular;
          e.size = it.size;
          break;
        case item_type::symlink:
          e.kind = entry_kind::symlink;
          e.reason = "symlink not followed";
          break;
        case item_type::special:
          e.kind = entry_kind::special;
          e.reason = special_reason(it.mode);
          break;
        default:
          e.kind = entry_kind::unreadable;
          e.reason = "cannot read: " + errno_text(it.err);
          break;
      }
      out.push_back(std::move(e));
      ++appended;
      ++count_;
      continue;
    }
    // A subdirectory: list it and push it.
    if (top.broken)
      continue;
    std::string path = join(top.rel, it.name);
    if (top.fd < 0 && !s.reopen(s.stack.size() - 1)) {
      top.broken = true;
      s.emit_unreadable(out, top.rel, "cannot read directory: it was moved or replaced during the scan");
      ++appended;
      ++count_;
      continue;
    }
    int fd = ::openat(top.fd, it.name.c_str(), dir_open_flags);
    if (fd < 0) {
      int e = errno;
      if (e == ENOENT)
        continue;  // vanished
      s.emit_unreadable(out, std::move(path), "cannot read directory: " + errno_text(e));
      ++appended;
      ++count_;
      continue;
    }
    level l;
    l.fd = fd;
    l.rel = std::move(path);
    struct stat sb;
    if (::fstat(fd, &sb) == 0) {
      l.dev = sb.st_dev;
      l.ino = sb.st_ino;
    }
    if (int e = s.read_listing(fd, l.rel, l.items); e != 0) {
      ::close(fd);
      s.emit_unreadable(out, std::move(l.rel), "cannot read directory: " + errno_text(e));
      ++appended;
      ++count_;
      continue;
    }
    if (top.pos == top.items.size()) {  // nothing left here: drop the level now
      s.close_level(top);
      s.stack.pop_back();
    }
    s.stack.push_back(std::move(l));
    ++s.open_levels;
    s.trim_open_levels();
  }
  if (appended == 0 && max > 0)
    return false;
  return appended > 0 || !s.stack.empty();
}

} // namespace ms
