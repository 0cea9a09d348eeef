// Replay and random-mutation driver for the fuzz targets, for builds without libFuzzer
// (gcc, the normal test suite). Linked with one target's LLVMFuzzerTestOneInput.
//
//   fuzz_X_replay [--runs N] [--seed S] [--max-len L] [--max-seconds T] [--dict FILE]
//                 PATH...
//
// Runs every file of each PATH (a file, or a folder: its files, sorted by name), then N
// inputs made by mutating those seeds (bit flips, byte changes, interesting bytes,
// insertions, deletions, duplications, splices with another seed, dictionary tokens)
// with a deterministic pseudo-random generator seeded by S: the same arguments run the
// same inputs. --max-seconds stops the mutations early (the count done is printed).
// A property failure, crash or sanitizer report writes the input that caused it to
// ./fuzz-crash-<target>-<n> (or $MS_FUZZ_CRASH_DIR) and exits non-zero; replay it
// with `fuzz_X_replay that-file` (or the libFuzzer build's binary).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace {

// The input being run, for the crash handlers (plain globals: async-signal-safe to read).
const std::uint8_t* current_data = nullptr;
std::size_t current_size = 0;
char crash_path[4096];
const char* current_origin = "";

void write_all(int fd, const void* p, std::size_t n) {
  auto c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w <= 0)
      return;
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}

void save_current_input() {
  static volatile sig_atomic_t saved = 0;
  if (saved || current_data == nullptr)
    return;
  saved = 1;
  int fd = ::open(crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const char* msg1 = "\nfuzz replay: the failing input (";
  const char* msg2 = ") is saved as ";
  write_all(2, msg1, std::strlen(msg1));
  write_all(2, current_origin, std::strlen(current_origin));
  write_all(2, msg2, std::strlen(msg2));
  write_all(2, crash_path, std::strlen(crash_path));
  write_all(2, "\n", 1);
  if (fd >= 0) {
    write_all(fd, current_data, current_size);
    ::close(fd);
  }
}

void on_signal(int sig) {
  save_current_input();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "fuzz replay: %s\nusage: fuzz_X_replay [--runs N] [--seed S] [--max-len L] "
               "[--max-seconds T] [--dict FILE] PATH...\n",
               msg);
  std::exit(2);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void collect(const std::string& path, std::vector<std::pair<std::string, std::string>>& out) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0)
    usage(("cannot stat " + path + ": " + std::strerror(errno)).c_str());
  if (!S_ISDIR(sb.st_mode)) {
    out.emplace_back(path, read_file(path));
    return;
  }
  std::vector<std::string> names;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.')
        names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    std::string p = path + "/" + n;
    if (::stat(p.c_str(), &sb) == 0 && S_ISREG(sb.st_mode))
      out.emplace_back(p, read_file(p));
  }
}

/// libFuzzer dictionary lines: name="token" with \\, \" and \xHH escapes; # comments.
std::vector<std::string> load_dict(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    auto q = line.find('"');
    auto e = line.rfind('"');
    if (line.empty() || line[0] == '#' || q == std::string::npos || e <= q)
      continue;
    std::string tok;
    for (std::size_t i = q + 1; i < e; ++i) {
      if (line[i] == '\\' && i + 1 < e) {
        char n = line[++i];
        if (n == 'x' && i + 2 < e) {
          tok += static_cast<char>(std::stoi(line.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          tok += n;
        }
      } else {
        tok += line[i];
      }
    }
    if (!tok.empty())
      out.push_back(tok);
  }
  return out;
}

struct mutator {
  std::mt19937_64 rng;
  const std::vector<std::pair<std::string, std::string>>& seeds;
  const std::vector<std::string>& dict;
  std::size_t max_len;

  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); }

  std::string random_bytes(std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s)
      c = static_cast<char>(rng());
    return s;
  }

  void mutate_once(std::string& s) {
    static const unsigned char interesting[] = {0, 1, 0x7f, 0x80, 0xff, '\n', ' ', '/', '=', '*',
                                                '%', '@', ':', '[', ']', '"', '\'', '\\', '.', '?'};
    switch (below(10)) {
      case 0:  // flip a bit
        if (!s.empty())
          s[below(s.size())] ^= static_cast<char>(1u << below(8));
        break;
      case 1:  // random byte
        if (!s.empty())
          s[below(s.size())] = static_cast<char>(rng());
        break;
      case 2:  // interesting byte
        if (!s.empty())
          s[below(s.size())] = static_cast<char>(interesting[below(sizeof interesting)]);
        break;
      case 3:  // insert random bytes
        s.insert(below(s.size() + 1), random_bytes(1 + below(8)));
        break;
      case 4: {  // delete a range
        if (s.empty())
          break;
        std::size_t at = below(s.size());
        s.erase(at, 1 + below(std::min<std::size_t>(16, s.size() - at)));
        break;
      }
      case 5: {  // duplicate a range
        if (s.empty())
          break;
        std::size_t at = below(s.size());
        std::size_t n = 1 + below(std::min<std::size_t>(64, s.size() - at));
        s.insert(below(s.size() + 1), s.substr(at, n));
        break;
      }
      case 6: {  // splice with another seed
        const std::string& o = seeds[below(seeds.size())].second;
        if (o.empty())
          break;
        std::size_t at = below(o.size());
        std::size_t n = 1 + below(o.size() - at);
        std::size_t cut = below(s.size() + 1);
        s = s.substr(0, cut) + o.substr(at, n);
        break;
      }
      case 7:  // truncate
        if (!s.empty())
          s.resize(below(s.size()));
        break;
      default:  // dictionary token (or an interesting byte without a dictionary)
        if (!dict.empty()) {
          const std::string& t = dict[below(dict.size())];
          if (!s.empty() && below(2) == 0) {
            std::size_t at = below(s.size());
            s.replace(at, std::min(t.size(), s.size() - at), t);
          } else {
            s.insert(below(s.size() + 1), t);
          }
        } else {
          s.insert(below(s.size() + 1), 1, static_cast<char>(interesting[below(sizeof interesting)]));
        }
        break;
    }
    if (s.size() > max_len)
      s.resize(max_len);
  }

  std::string next(std::size_t& seed_index) {
    seed_index = below(seeds.size());
    std::string s = seeds[seed_index].second;
    std::size_t n = 1 + below(4);
    if (below(8) == 0)
      n += below(16);  // now and then, a heavier mutation
    for (std::size_t i = 0; i < n; ++i)
      mutate_once(s);
    return s;
  }
};

void run_one(const std::string& input, const std::string& origin) {
  // An exact-size heap copy, as libFuzzer gives it: ASan sees any read past the end.
  std::vector<std::uint8_t> buf(input.begin(), input.end());
  const std::uint8_t* p = buf.empty() ? reinterpret_cast<const std::uint8_t*>("") : buf.data();
  current_data = p;
  current_size = buf.size();
  current_origin = origin.c_str();
  LLVMFuzzerTestOneInput(p, buf.size());
  current_data = nullptr;
}

} // namespace

int main(int argc, char** argv) {
  std::uint64_t runs = 0, seed = 1;
  std::size_t max_len = 4096;
  double max_seconds = 0;
  std::string dict_path;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--runs")
      runs = std::stoull(value());
    else if (a == "--seed")
      seed = std::stoull(value());
    else if (a == "--max-len")
      max_len = std::stoull(value());
    else if (a == "--max-seconds")
      max_seconds = std::stod(value());
    else if (a == "--dict")
      dict_path = value();
    else if (!a.empty() && a[0] == '-')
      usage(("unknown option " + a).c_str());
    else
      paths.push_back(a);
  }
  if (paths.empty())
    usage("no corpus given");

  std::string target = argv[0];
  target = target.substr(target.rfind('/') + 1);
  const char* dir = std::getenv("MS_FUZZ_CRASH_DIR");
  std::snprintf(crash_path, sizeof crash_path, "%s/fuzz-crash-%s-%ld", dir && *dir ? dir : ".",
                target.c_str(), static_cast<long>(::getpid()));
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL})
    ::signal(sig, on_signal);
  if (__sanitizer_set_death_callback)
    __sanitizer_set_death_callback(save_current_input);
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);

  std::vector<std::pair<std::string, std::string>> seeds;
  for (auto& p : paths)
    collect(p, seeds);
  if (seeds.empty())
    seeds.emplace_back("(empty input)", std::string{});
  std::vector<std::string> dict;
  if (!dict_path.empty())
    dict = load_dict(dict_path);

  auto start = std::chrono::steady_clock::now();
  for (auto& [path, data] : seeds)
    run_one(data, "seed " + path);
  mutator m{std::mt19937_64{seed}, seeds, dict, max_len};
  std::uint64_t done = 0;
  std::string origin;
  for (; done < runs; ++done) {
    if (max_seconds > 0 && (done & 63) == 0
        && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
             > max_seconds)
      break;
    std::size_t from = 0;
    std::string input = m.next(from);
    origin = "mutation " + std::to_string(done) + " of seed " + seeds[from].first + ", --seed "
             + std::to_string(seed);
    run_one(input, origin);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz replay %s: %zu seeds + %llu mutations (of %llu asked, --seed %llu) in %.2f s, "
              "no failure\n",
              target.c_str(), seeds.size(), static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(seed), secs);
  return 0;
}
