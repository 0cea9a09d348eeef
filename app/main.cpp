// mediasync: command-line entry point.
#include <iostream>

#include "app/commands.hpp"
#include "app/options.hpp"

int main(int argc, char** argv) {
  using namespace ms::app;
  options opt;
  try {
    opt = parse_command_line(argc - 1, argv + 1);
  } catch (const usage_error& e) {
    std::cerr << "mediasync: " << e.what() << "\n";
    return exit_code::usage;
  }
  if (opt.help || opt.command == "help") {
    std::cout << help_text();
    return exit_code::ok;
  }
  if (opt.command == "version" ) {
    std::cout << "mediasync 0.1.0\n";
    return exit_code::ok;
  }
  setup_logging(opt.log_level);
  if (opt.command == "sync")
    return cmd_sync(opt);
  if (opt.command == "resume")
    return cmd_resume(opt);
  if (opt.command == "status")
    return cmd_status(opt);
  if (opt.command == "jobs")
    return cmd_jobs(opt);
  if (opt.command == "migrate")
    return cmd_migrate(opt);
  std::cerr << "mediasync: unknown command '" << opt.command << "' (see mediasync --help)\n";
  return exit_code::usage;
}
