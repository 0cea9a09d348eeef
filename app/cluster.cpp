#include "app/cluster.hpp"

#include <dlfcn.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/file_worker.hpp"
#include "actors/imaging.hpp"
#include "actors/messages.hpp"
#include "app/commands.hpp"
#include "app/engine.hpp"

namespace ms::app {
namespace {

using term_atom = caf::atom_constant<caf::atom("term")>;

/// Does `inner` on this node: the task's roots mapped to this node's paths, checked to be
/// visible (else the task goes back to the coordinator for another node), the outcome
/// stamped with this node's name.
ingest_function remote_work(ingest_function inner, path_mapping map, std::string node) {
  return [inner = std::move(inner), map = std::move(map),
          node = std::move(node)](const file_task& task) {
    file_task t = task;
    t.source_root = map_path(map, task.source_root);
    t.dest_root = map_path(map, task.dest_root);
    for (auto [root, given] : {std::pair{&t.source_root, &task.source_root},
                               std::pair{&t.dest_root, &task.dest_root}}) {
      struct stat sb;
      bool seen = ::stat(root->c_str(), &sb) == 0;
      if (!seen || !S_ISDIR(sb.st_mode)) {
        std::string why = seen ? "not a directory" : std::strerror(errno);
        file_outcome o;
        o.job_id = t.job_id;
        o.path = t.path;
        o.stg = t.stg;
        o.status = file_status::failed;
        o.node = node;
        o.retry_elsewhere = true;
        o.error = "node " + node + " cannot see '" + *root + "'"
                  + (*root != *given ? " (mapped from '" + *given + "')" : "") + ": "
                  + why + " (is the shared storage mounted here? check [cluster] path-map)";
        return o;
      }
    }
    auto o = inner(t);
    o.node = node;
    return o;
  };
}

bool readable(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

} // namespace

std::string node_name_of(const options& opt) {
  if (!opt.node_name.empty())
    return opt.node_name;
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !*buf)
    return "localhost";
  return buf;
}

void check_tls(const options& opt, const char* role) {
  for (auto [key, value] : {std::pair{"ca", &opt.tls_ca}, std::pair{"cert", &opt.tls_cert},
                            std::pair{"key", &opt.tls_key}}) {
    if (value->empty())
      throw usage_error(std::string{"[cluster] "} + role + " needs [cluster] " + key
                        + " (cluster links are TLS only; make a test CA and node certificates "
                          "with scripts/cluster-certs.sh)");
    if (!readable(*value))
      throw usage_error(std::string{"[cluster] "} + key + " '" + *value
                        + "': " + std::strerror(errno));
  }
}

void configure_cluster(caf::actor_system_config& cfg, const options& opt) {
  cfg.load<caf::io::middleman>();
  cfg.load<caf::openssl::manager>();
  cfg.openssl_cafile = opt.tls_ca;
  cfg.openssl_certificate = opt.tls_cert;
  cfg.openssl_key = opt.tls_key;
  // Nodes reconnect on their own (worker: rejoin loop); no automatic extra links.
  cfg.set("middleman.enable-automatic-connections", false);
}

path_mapping parse_path_map(const std::vector<std::string>& entries) {
  path_mapping out;
  auto strip = [](std::string p) {
    while (p.size() > 1 && p.back() == '/')
      p.pop_back();
    return p;
  };
  for (auto& e : entries) {
    auto eq = e.find('=');
    if (eq == std::string::npos)
      throw usage_error("[cluster] path-map: '" + e + "' is not FROM=TO");
    out.emplace_back(strip(e.substr(0, eq)), strip(e.substr(eq + 1)));
  }
  return out;
}

std::string map_path(const path_mapping& map, const std::string& path) {
  const std::pair<std::string, std::string>* best = nullptr;
  for (auto& m : map) {
    auto& from = m.first;
    bool match = path == from
                 || (path.size() > from.size() && path.compare(0, from.size(), from) == 0
                     && (from == "/" || path[from.size()] == '/'));
    if (match && (!best || from.size() > best->first.size()))
      best = &m;
  }
  if (!best)
    return path;
  if (best->first == "/")
    return best->second == "/" ? path : best->second + path;
  return best->second + path.substr(best->first.size());
}

std::pair<std::string, std::uint16_t> split_address(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    throw usage_error("'" + address + "' is not HOST:PORT");
  auto host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535)
    throw usage_error("'" + address + "': bad port");
  return {host, static_cast<std::uint16_t>(port)};
}

int cmd_worker(const options& given, const std::vector<assignment>& cli) {
  return guarded([&] {
    options opt = given;
    if (opt.join.empty())
      throw usage_error("worker needs --join HOST:PORT (or [cluster] join), the coordinator");
    check_tls(opt, "join");
    // `--workers N` on a worker node: N per stage.
    for (auto& a : cli)
      if (a.key == "workers")
        opt.processing_workers = opt.watermark_workers = opt.workers;
    auto [host, port] = split_address(opt.join);
    auto map = parse_path_map(opt.path_map);
    auto node = node_name_of(opt);

    caf::actor_system_config cfg;
    add_message_types(cfg);
    configure_cluster(cfg, opt);
    cfg.set("logger.verbosity", caf::atom("quiet"));
    cfg.set("scheduler.policy", caf::atom("sharing"));
    caf::actor_system sys{cfg};
    caf::scoped_actor self{sys};
    {
      caf::actor me = self;
      std::thread([me] {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        for (bool armed = false;;) {
          int sig = 0;
          if (sigwait(&set, &sig) != 0)
            continue;
          caf::anon_send(me, term_atom::value);
          if (armed)
            continue;
          armed = true;
          // A worker node holds nothing durable (the coordinator requeues what it had), so
          // its stop is bounded: CAF 0.17 has been seen to hang at a clustered teardown
          // (app/engine.cpp), and once a worker node did not get past its stop at all.
          std::thread([] {
            std::this_thread::sleep_for(std::chrono::seconds(10));
            spdlog::warn("worker node: did not stop within 10 s of the signal; exiting");
            spdlog::default_logger()->flush();
            std::_Exit(exit_code::ok);
          }).detach();
        }
      }).detach();
    }
    auto cores = std::max(1u, std::thread::hardware_concurrency());
    int vips_threads = static_cast<int>(std::max<std::size_t>(1, cores / opt.processing_workers));
    std::array<std::size_t, stage_count> counts{opt.workers, opt.processing_workers,
                                                opt.watermark_workers};
    bool stopping = false;
    auto backoff = std::chrono::milliseconds(500);
    // Waits `d` unless a stop signal comes first.
    auto pause = [&](std::chrono::milliseconds d) {
      self->receive([&](term_atom) { stopping = true; }, caf::after(d) >> [] {});
    };
    while (!stopping) {
      auto reg = caf::openssl::remote_actor<registry_actor>(sys, host, port);
      if (!reg) {
        spdlog::error("cannot join the coordinator at {}: {} (is it listening there, and is "
                      "this node's certificate signed by the cluster CA?); retrying in {} ms",
                      opt.join, sys.render(reg.error()), backoff.count());
        pause(backoff);
        backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
        continue;
      }
      imaging_settings im;
      bool joined = false;
      self->request(*reg, std::chrono::seconds(30), join_atom::value, node)
        .receive([&](imaging_settings& s) { im = std::move(s), joined = true; },
                 [&](caf::error& e) {
                   spdlog::error("coordinator at {} did not take the join: {}", opt.join,
                                 sys.render(e));
                 });
      if (!joined) {
        pause(backoff);
        continue;
      }
      backoff = std::chrono::milliseconds(500);
      std::array<std::vector<file_worker_actor>, stage_count> pools;
      for (std::size_t i = 0; i < stage_count; ++i)
        for (std::size_t n = 0; n < counts[i]; ++n) {
          auto s = static_cast<stage>(i);
          ingest_function fn = s == stage::sync         ? make_library_ingest()
                               : s == stage::processing ? make_processing_work(im, vips_threads)
                                                        : make_watermark_work(im, vips_threads);
          pools[i].push_back(spawn_file_worker(sys, remote_work(std::move(fn), map, node)));
        }
      self->monitor(*reg);
      self->send(*reg, offer_atom::value, node, pools[0], pools[1], pools[2]);
      spdlog::info("worker node {}: joined the coordinator at {} with {} sync, {} processing, "
                   "{} watermark workers",
                   node, opt.join, counts[0], counts[1], counts[2]);
      bool linked = true;
      while (linked && !stopping)
        self->receive(
          [&](caf::down_msg& dm) {
            spdlog::warn("worker node {}: lost the coordinator ({}); joining again", node,
                         sys.render(dm.reason));
            linked = false;
          },
          [&](term_atom) { stopping = true; });
      for (auto& pool : pools)
        for (auto& w : pool)
          self->send_exit(w, caf::exit_reason::user_shutdown);
      if (!stopping)
        pause(backoff);
    }
    spdlog::info("worker node {}: stopped", node);
    return exit_code::ok;
  });
}

// -- Logging refused cluster connections --------------------------------------------------
//
// CAF's OpenSSL module closes a connection whose TLS handshake fails (no certificate, one
// the cluster CA did not sign, not TLS at all) without telling anyone. To log who was
// refused and why, this executable provides SSL_accept, SSL_connect and SSL_read, which
// libcaf_openssl calls through the dynamic linker: each calls OpenSSL's own (the next
// definition, dlsym RTLD_NEXT) and logs a handshake that failed.
//
// They (and SSL_write) also empty the thread's OpenSSL error queue before the call, as
// OpenSSL requires for SSL_get_error to be reliable. libcaf_openssl never does: all links
// share the middleman's thread, so the error a refused or broken connection left there
// made the next SSL_read or SSL_write that would merely block on a healthy link look
// fatal, and CAF dropped that link (every joined node left when one was refused or died).

namespace {

std::string peer_of(SSL* ssl) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
  if (::getpeername(SSL_get_fd(ssl), reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV);
  return std::string{host} + ":" + port;
}

/// Logs a handshake that `ret` (of an SSL call) failed for good.
void log_failed_handshake(SSL* ssl, int ret, bool accepting) {
  if (ret > 0 || SSL_is_init_finished(ssl))
    return;
  int e = SSL_get_error(ssl, ret);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return;
  std::string why;
  if (auto v = SSL_get_verify_result(ssl); v != X509_V_OK) {
    why = std::string{"certificate refused: "} + X509_verify_cert_error_string(v);
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      char subject[256] = "";
      X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
      why += std::string{" (peer "} + subject + ")";
      X509_free(peer);
    }
  } else if (auto err = ERR_peek_last_error(); err != 0) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof buf);
    why = buf;
  } else {
    why = e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN
            ? "the peer closed the connection during the TLS handshake"
            : "TLS handshake failed";
  }
  if (accepting)
    spdlog::warn("cluster: refused a connection from {}: {}", peer_of(ssl), why);
  else
    spdlog::warn("cluster: TLS handshake with {} failed: {}", peer_of(ssl), why);
}

template <class Fn>
Fn next_symbol(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

} // namespace
} // namespace ms::app

extern "C" int SSL_accept(SSL* ssl) {
  static auto real = ms::app::next_symbol<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  int r = real(ssl);
  ms::app::log_failed_handshake(ssl, r, true);
  return r;
}

extern "C" int SSL_connect(SSL* ssl) {
  static auto real = ms::app::next_symbol<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  int r = real(ssl);
  ms::app::log_failed_handshake(ssl, r, false);
  return r;
}

extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static auto real = ms::app::next_symbol<int (*)(SSL*, void*, int)>("SSL_read");
  bool handshaking = !SSL_is_init_finished(ssl);
  ERR_clear_error();
  int r = real(ssl, buf, num);
  if (handshaking)
    ms::app::log_failed_handshake(ssl, r, SSL_is_server(ssl) == 1);
  return r;
}

extern "C" int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto real = ms::app::next_symbol<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}
