// Config files and the command line: one option set, parsed strictly, the command line winning.
#include <catch2/catch.hpp>

#include "app/config.hpp"
#include "app/options.hpp"
#include "test_util.hpp"

using namespace ms::app;

namespace {

command_line cli(std::vector<const char*> args) {
  return parse_command_line(static_cast<int>(args.size()), args.data());
}

/// The usage_error message parse_config gives for `text`, or "" if it parses.
std::string config_error(const std::string& text) {
  try {
    parse_config(text, "t.ini");
  } catch (const usage_error& e) {
    return e.what();
  }
  return {};
}

const char* good = R"(# a comment
; another
[storage]
db = /var/lib/m.db

[writer]
batch-size = 500
flush-interval = 2s

[scan]
include = *.jpg
include = *.png
checksum = yes

[watermark]
watermark-text = "  spaced \"quoted\" text  "

[job photos]
source = /srv/photos
dest = /srv/library/photos
interval = 15m
watch = true
window = 64

[job docs]
source = /srv/docs
dest = /srv/library/docs
include = *.pdf
thumbnails = off
)";

} // namespace

TEST_CASE("a config file sets globals and named jobs, in file order", "[config]") {
  auto cfg = parse_config(good, "good.ini");
  REQUIRE(cfg.jobs.size() == 2);
  CHECK(cfg.jobs[0].name == "photos");
  CHECK(cfg.jobs[1].name == "docs");
  auto g = effective_options(&cfg, {});
  CHECK(g.db == "/var/lib/m.db");
  CHECK(g.batch_size == 500);
  CHECK(g.flush_interval == std::chrono::milliseconds(2000));
  CHECK(g.includes == std::vector<std::string>{"*.jpg", "*.png"});
  CHECK(g.checksum);
  CHECK(g.watermark_text == "  spaced \"quoted\" text  ");
  CHECK(g.workers == 8);  // untouched: the default

  auto photos = effective_options(cfg, cfg.jobs[0], {});
  CHECK(photos.job_name == "photos");
  CHECK(photos.source == "/srv/photos");
  CHECK(photos.interval == std::chrono::minutes(15));
  CHECK(photos.watch_source);
  CHECK(photos.window == 64);
  CHECK(photos.includes == std::vector<std::string>{"*.jpg", "*.png"});  // global list kept
  CHECK(photos.thumbnails);

  auto docs = effective_options(cfg, cfg.jobs[1], {});
  CHECK(docs.includes == std::vector<std::string>{"*.pdf"});  // the job's list replaces it
  CHECK_FALSE(docs.thumbnails);
  CHECK_FALSE(docs.watch_source);
  CHECK(docs.interval == std::chrono::hours(1));  // default
}

TEST_CASE("the command line wins over the job section and the global sections", "[config]") {
  auto cfg = parse_config(good, "good.ini");
  auto c = cli({"run", "good.ini", "--batch-size", "7", "--include=*.gif", "--no-checksum",
                "--thumbnails", "--window", "9"});
  auto docs = effective_options(cfg, cfg.jobs[1], c.settings);
  CHECK(docs.batch_size == 7);
  CHECK(docs.includes == std::vector<std::string>{"*.gif"});
  CHECK_FALSE(docs.checksum);
  CHECK(docs.thumbnails);
  CHECK(docs.window == 9);
  CHECK(docs.source == "/srv/docs");  // the job's own
  CHECK(c.command == "run");
  CHECK(c.positional == std::vector<std::string>{"good.ini"});
}

TEST_CASE("select_jobs picks named jobs or all, and names unknown ones", "[config]") {
  auto cfg = parse_config(good, "good.ini");
  CHECK(select_jobs(cfg, {}).size() == 2);
  auto one = select_jobs(cfg, {"docs"});
  REQUIRE(one.size() == 1);
  CHECK(one[0]->name == "docs");
  CHECK_THROWS_WITH(select_jobs(cfg, {"nope"}),
                    Catch::Contains("no job named 'nope'") && Catch::Contains("photos, docs"));
  auto empty = parse_config("[storage]\ndb = x.db\n", "e.ini");
  CHECK_THROWS_WITH(select_jobs(empty, {}), Catch::Contains("e.ini: defines no [job NAME]"));
}

TEST_CASE("durations take units, a bare number the key's own unit", "[config]") {
  CHECK(parse_duration("250ms", 1) == std::chrono::milliseconds(250));
  CHECK(parse_duration("3s", 1) == std::chrono::milliseconds(3000));
  CHECK(parse_duration("2m", 1) == std::chrono::minutes(2));
  CHECK(parse_duration("1h", 1) == std::chrono::hours(1));
  CHECK(parse_duration("40", 1000) == std::chrono::seconds(40));
  CHECK_THROWS_WITH(parse_duration("5 parsecs", 1), Catch::Contains("unknown unit ' parsecs'"));
  CHECK_THROWS_WITH(parse_duration("s", 1), Catch::Contains("is not a duration"));
  CHECK_THROWS_WITH(parse_duration("99999999999999999999h", 1), Catch::Contains("too long"));
}

TEST_CASE("bad configs: the error names the file, the line, the key and what is expected",
          "[config]") {
  struct bad_case {
    std::string text;
    std::vector<const char*> expected;
  };
  const bad_case cases[] = {
    {"[writer]\nbatchsize = 3\n", {"t.ini:2:", "unknown key 'batchsize'", "did you mean 'batch-size'"}},
    {"[writer]\nbatch-size = many\n", {"t.ini:2: [writer] batch-size: 'many' is not a whole number"}},
    {"[stages]\n\nsync-workers = 0\n", {"t.ini:3: [stages] sync-workers: '0' is out of range (1 to 1024)"}},
    {"[stages]\nprocessing-workers = 99999999999999999999999\n", {"t.ini:2:", "out of range"}},
    {"[scan]\nchecksum = maybe\n", {"t.ini:2: [scan] checksum: 'maybe' is not a boolean"}},
    {"[writer]\nflush-interval = 5 parsecs\n", {"t.ini:2: [writer] flush-interval:", "unknown unit"}},
    {"[writer]\nflush-interval = 2h\n", {"t.ini:2:", "out of range"}},
    {"[imaging]\nthumbnail-sizes = 256,,1024\n", {"t.ini:2: [imaging] thumbnail-sizes: '' is not a whole number"}},
    {"[imaging]\nthumbnail-format = gif\n", {"t.ini:2:", "'gif' is not one of jpeg, webp"}},
    {"[watermark]\nwatermark-opacity = 2\n", {"t.ini:2:", "not a number from 0 to 1"}},
    {"[job a]\nsource = /tmp\n", {"[job a] (t.ini:1) is missing the required key 'dest'"}},
    {"[job a]\ndest = /tmp\n", {"missing the required key 'source'"}},
    {"[scan]\nbatch-size = 3\n", {"t.ini:2:", "'batch-size' belongs in [writer], not [scan]"}},
    {"[scan]\nsource = /x\n", {"t.ini:2:", "'source' belongs in a [job NAME] section"}},
    {"[job a]\nsource = /a\ndest = /b\nbatch-size = 3\n", {"t.ini:4:", "cannot be set per job", "[writer]"}},
    {"[storge]\ndb = x\n", {"t.ini:1: unknown section [storge]"}},
    {"db = x\n", {"t.ini:1: key 'db' comes before any [section]"}},
    {"[storage]\ndb\n", {"t.ini:2: expected 'key = value'"}},
    {"[storage]\ndb = a.db\ndb = b.db\n", {"t.ini:3:", "given twice in this section (first at line 2)"}},
    {"[job a]\nsource=/a\ndest=/b\n[job a]\n", {"t.ini:4: job 'a' is defined twice (first at line 1)"}},
    {"[job a b]\n", {"t.ini:1:", "needs a name"}},
    {"[storage\n", {"t.ini:1: a section header must end with ']'"}},
    {"[watermark]\nwatermark-text = \"open\n", {"t.ini:2:", "unterminated quoted value"}},
    {"[log]\ndry-run = true\n", {"t.ini:2:", "'dry-run' is a command-line option"}},
    {"[log]\nlog-level = loud\n", {"t.ini:2:", "'loud' is not one of trace, debug"}},
    {"[node]\nhttp = localhost\n", {"t.ini:2: [node] http: 'localhost' is not HOST:PORT"}},
    {"[node]\nhttp = 127.0.0.1:70000\n", {"t.ini:2:", "out of range (0 to 65535)"}},
    {"[job a]\nsource=/a\ndest=/b\ninterval = 500ms\n", {"t.ini:4:", "shorter than 1 s"}},
    {"[storage]\nDB = x\n", {"t.ini:2:", "'DB' is not a key"}},
    {std::string{"[storage]\ndb = x\0y\n", 19}, {"t.ini:2:", "NUL byte"}},
  };
  for (auto& c : cases) {
    INFO("config:\n" << c.text);
    auto msg = config_error(c.text);
    REQUIRE_FALSE(msg.empty());
    for (auto e : c.expected)
      CHECK_THAT(msg, Catch::Contains(e));
  }
}

TEST_CASE("a config parses with CRLF line ends, blanks and quoted values", "[config]") {
  auto cfg = parse_config("[storage]\r\n  db   =   ./a b.db  \r\n[job x]\r\nsource = \"/s \"\r\n"
                          "dest=/d\r\n",
                          "crlf.ini");
  CHECK(effective_options(&cfg, {}).db == "./a b.db");
  CHECK(effective_options(cfg, cfg.jobs[0], {}).source == "/s ");
}

TEST_CASE("command line: typos, misplaced keys and flag syntax give clear errors", "[config]") {
  CHECK_THROWS_WITH(cli({"sync", "--batchsize", "3"}),
                    Catch::Contains("unknown option '--batchsize'")
                      && Catch::Contains("did you mean 'batch-size'"));
  CHECK_THROWS_WITH(cli({"sync", "--source", "/x"}),
                    Catch::Contains("--source can only be given in a [job NAME] section"));
  CHECK_THROWS_WITH(cli({"sync", "--no-checksum=true"}), Catch::Contains("--no-checksum takes no value"));
  CHECK_THROWS_WITH(cli({"sync", "--no-batch-size"}), Catch::Contains("unknown option '--no-batch-size'"));
  CHECK_THROWS_WITH(cli({"sync", "--batch-size"}), Catch::Contains("--batch-size needs a value"));
  CHECK_THROWS_WITH(cli({"sync", "--window", "0"}),
                    Catch::Contains("--window: '0' is out of range (1 to 1000000)"));
  CHECK_THROWS_WITH(cli({"sync", "--flush-interval=1h"}), Catch::Contains("--flush-interval:"));
  CHECK_THROWS_WITH(cli({}), Catch::Contains("no command given"));
  auto c = cli({"sync", "--checksum=false", "--no-thumbnails", "a", "b"});
  auto o = effective_options(nullptr, c.settings);
  CHECK_FALSE(o.checksum);
  CHECK_FALSE(o.thumbnails);
  CHECK(c.positional == std::vector<std::string>{"a", "b"});
}

TEST_CASE("help and help config list every key with its type and default", "[config]") {
  auto help = help_text();
  auto chelp = config_help_text();
  for (auto key : {"db", "db-reconnect-limit", "batch-size", "flush-interval", "sync-workers",
                   "processing-workers", "watermark-workers", "thumbnails", "watermark",
                   "thumbnail-sizes", "thumbnail-format", "quality", "max-pixels",
                   "watermark-text", "watermark-image", "watermark-position", "watermark-margin",
                   "watermark-opacity", "window", "include", "exclude", "checksum",
                   "allow-empty-source", "progress", "log-level", "http", "debounce", "settle"}) {
    INFO(key);
    CHECK_THAT(help, Catch::Contains(std::string{"--"} + key));
    CHECK_THAT(chelp, Catch::Contains(std::string{"  "} + key + " = <"));
  }
  for (auto key : {"source", "dest", "interval", "watch"})
    CHECK_THAT(chelp, Catch::Contains(std::string{"  "} + key + " = <"));
  CHECK_THAT(chelp, Catch::Contains("[job NAME]"));
  CHECK_THAT(chelp, Catch::Contains("batch-size = <int 1..100000>") && Catch::Contains("[default: 200]"));
  CHECK_THAT(help, Catch::Contains("--config <file>"));
}
