// mediasync: command-line entry point.
#include <iostream>
#include <optional>

#include "app/cluster.hpp"
#include "app/commands.hpp"
#include "app/config.hpp"
#include "app/engine.hpp"
#include "app/node.hpp"
#include "app/options.hpp"

int main(int argc, char** argv) {
  using namespace ms::app;
  block_signals();  // before any thread starts: signals are taken with sigwait()
  command_line cl;
  std::optional<config_file> cfg;
  options opt;
  std::vector<std::string> args;
  try {
    cl = parse_command_line(argc - 1, argv + 1);
    if (cl.help || cl.command == "help") {
      if (!cl.positional.empty() && cl.positional.front() == "config")
        std::cout << config_help_text();
      else
        std::cout << help_text();
      return exit_code::ok;
    }
    if (cl.command == "version") {
      std::cout << "mediasync 0.1.0\n";
      return exit_code::ok;
    }
    args = cl.positional;
    auto scratch = effective_options(nullptr, cl.settings);
    std::string config_path = scratch.config;
    if (cl.command == "run" || cl.command == "node") {
      if (config_path.empty()) {
        if (args.empty())
          throw usage_error(cl.command + " needs a CONFIG file (see mediasync help config)");
        config_path = args.front();
        args.erase(args.begin());
      }
      if (cl.command == "node" && !args.empty())
        throw usage_error("node takes one CONFIG file, no job names (it runs them all)");
    }
    if (!config_path.empty())
      cfg = load_config(config_path);
    opt = effective_options(cfg ? &*cfg : nullptr, cl.settings);
  } catch (const usage_error& e) {
    std::cerr << "mediasync: " << e.what() << "\n";
    return exit_code::usage;
  }
  setup_logging(opt.log_level);
  if (cl.command == "sync")
    return cmd_sync(opt, args);
  if (cl.command == "run")
    return cmd_run(*cfg, args, cl.settings);
  if (cl.command == "node")
    return cmd_node(*cfg, cl.settings);
  if (cl.command == "worker")
    return cmd_worker(opt, cl.settings);
  if (cl.command == "resume")
    return cmd_resume(opt, args);
  if (cl.command == "status")
    return cmd_status(opt, args);
  if (cl.command == "jobs")
    return cmd_jobs(opt, args);
  if (cl.command == "migrate")
    return cmd_migrate(opt, args);
  std::cerr << "mediasync: unknown command '" << cl.command << "' (see mediasync --help)\n";
  return exit_code::usage;
}
