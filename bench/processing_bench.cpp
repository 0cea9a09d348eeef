// Driver for bench/processing_bench.sh: the imaging core (actors/imaging.hpp) alone.
//
//   processing_bench generate DIR N [THREADS]
//       writes N photo-sized JPEGs (4000x3000 = 12 MP, gradient + noise, Q 90, an
//       EXIF date; every 10th with orientation 6) as DIR/img-NNNN.jpg, skipping
//       those that exist.
//   processing_bench run LIBRARY_ROOT [THREADS] [SIZES] [FORMAT]
//       make_thumbnails() for every *.jpg at the top of LIBRARY_ROOT with THREADS
//       worker threads (default 2), each vips pipeline on 1 thread; SIZES is a
//       comma list (default 256,1024), FORMAT jpeg|webp (default jpeg). Per file,
//       the bookkeeping a processing worker does: is_processable_image on the
//       sniffed type, make_thumbnails, a result record (paths, metadata, duration).
//       Prints "seconds images ok failed" on stdout.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <vips/vips8>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/imaging.hpp"

namespace {

using vips::VImage;

int usage() {
  std::fprintf(stderr, "usage: processing_bench generate DIR N [THREADS]\n"
                       "       processing_bench run LIBRARY_ROOT [THREADS] [SIZES] [FORMAT]\n");
  return 2;
}

/// Smooth colour waves (vips trigonometry is in degrees) plus grain.
VImage photo(int w, int h, int seed) {
  VImage xy = VImage::xyz(w, h);
  double phase = seed * 37.0;
  VImage r = ((xy[0] * (360.0 / w) + phase).sin() + 1) * 110 + 10;
  VImage g = ((xy[1] * (540.0 / h) + phase * 2).sin() + 1) * 100 + 20;
  VImage b = ((xy[0] + xy[1]) * (720.0 / (w + h)) + phase * 3).cos() * 90 + 120;
  VImage noise = VImage::gaussnoise(
    w, h, VImage::option()->set("mean", 0.0)->set("sigma", 9.0)->set("seed", seed));
  VImage rgb = r.bandjoin(g).bandjoin(b) + noise;
  return rgb.cast(VIPS_FORMAT_UCHAR).copy(
    VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

int generate(const std::string& dir, int n, int threads) {
  ms::imaging_init(1);
  std::atomic<int> next{0};
  auto work = [&] {
    for (int i; (i = next.fetch_add(1)) < n;) {
      char name[64];
      std::snprintf(name, sizeof name, "/img-%04d.jpg", i);
      std::string path = dir + name;
      if (::access(path.c_str(), F_OK) == 0)
        continue;
      VImage img = photo(4000, 3000, i + 1).copy();
      img.set("exif-ifd2-DateTimeOriginal", "2021:07:04 12:30:00");
      if (i % 10 == 0)
        img.set("orientation", 6);
      std::string tmp = path + ".tmp.jpg";
      img.write_to_file(tmp.c_str(), VImage::option()->set("Q", 90));
      std::rename(tmp.c_str(), path.c_str());
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back(work);
  for (auto& t : pool)
    t.join();
  return 0;
}

struct record {
  std::string path, mime, error;
  std::vector<std::pair<int, std::string>> thumbnails;
  ms::image_info info;
  std::int64_t duration_us = 0;
};

int run(const std::string& root, int threads, std::vector<int> sizes, const std::string& format) {
  ms::imaging_init(1);
  std::vector<std::string> files;
  if (DIR* d = ::opendir(root.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".jpg") == 0)
        files.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(files.begin(), files.end());
  int root_fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) {
    std::perror(root.c_str());
    return 1;
  }
  ms::imaging_settings s;
  s.thumbnail_sizes = std::move(sizes);
  s.thumbnail_format = format;
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::vector<record> records;
  records.reserve(files.size());
  auto t0 = std::chrono::steady_clock::now();
  auto work = [&] {
    for (std::size_t i; (i = next.fetch_add(1)) < files.size();) {
      auto start = std::chrono::steady_clock::now();
      record r;
      r.path = files[i];
      unsigned char head[16] = {};
      int fd = ::openat(root_fd, r.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        ssize_t n = ::read(fd, head, sizeof head);
        ::close(fd);
        r.mime = n >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF ? "image/jpeg" : "";
      }
      if (ms::is_processable_image(r.mime)) {
        try {
          auto res = ms::make_thumbnails(root_fd, r.path, s);
          r.thumbnails = std::move(res.thumbnails);
          r.info = std::move(res.info);
        } catch (const std::exception& e) {
          r.error = e.what();
        }
      } else {
        r.error = "not an image";
      }
      r.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
      std::lock_guard lock{mu};
      records.push_back(std::move(r));
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back(work);
  for (auto& t : pool)
    t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::size_t failed = 0;
  for (auto& r : records)
    if (!r.error.empty()) {
      if (failed++ < 3)
        std::fprintf(stderr, "failed: %s: %s\n", r.path.c_str(), r.error.c_str());
    }
  std::printf("%.3f %zu %zu %zu\n", secs, records.size(), records.size() - failed, failed);
  ::close(root_fd);
  ms::imaging_shutdown();
  return failed == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return usage();
  std::string cmd = argv[1];
  if (cmd == "generate" && argc >= 4)
    return generate(argv[2], std::atoi(argv[3]), argc > 4 ? std::max(1, std::atoi(argv[4])) : 2);
  if (cmd == "run") {
    int threads = argc > 3 ? std::max(1, std::atoi(argv[3])) : 2;
    std::vector<int> sizes;
    std::string list = argc > 4 ? argv[4] : "256,1024";
    for (std::size_t pos = 0; pos <= list.size();) {
      auto comma = list.find(',', pos);
      sizes.push_back(std::atoi(list.substr(pos, comma - pos).c_str()));
      if (comma == std::string::npos)
        break;
      pos = comma + 1;
    }
    return run(argv[2], threads, std::move(sizes), argc > 5 ? argv[5] : "jpeg");
  }
  return usage();
}
