#include "store_contract.hpp"

#include <algorithm>
#include <tuple>
#include <cstdio>
#include <string_view>

namespace ms::test::contract {

using storage::errc;
using storage::open_mode;

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

file_outcome outcome(std::uint64_t job, std::string path, file_status st, std::uint64_t size,
                     bool touches_media) {
  file_outcome o;
  o.job_id = job;
  o.path = std::move(path);
  o.status = st;
  o.size = size;
  o.mtime_ns = 1'700'000'000'000'000'000LL + static_cast<std::int64_t>(size);
  o.duration_us = 42;
  if (st == file_status::ok) {
    o.sha256 = std::string(64, 'a');
    o.mime = "image/jpeg";
    o.library_path = "2026/11/28/" + o.path;
  } else {
    o.error = st == file_status::failed ? "open: Permission denied" : "special file";
  }
  o.touches_media = touches_media;
  return o;
}

/// A mixed batch: ok (touching media), failed and skipped, sizes 1000 + i.
std::vector<file_outcome> mixed_batch(std::uint64_t job, int first, int n) {
  std::vector<file_outcome> b;
  for (int i = first; i < first + n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "dir%04d/file%06d.jpg", i / 100, i);
    file_status st = i % 5 == 3 ? file_status::failed
                     : i % 5 == 4 ? file_status::skipped
                                  : file_status::ok;
    b.push_back(
        outcome(job, name, st, 1000 + static_cast<std::uint64_t>(i), st == file_status::ok));
  }
  return b;
}

void require_counters_match_rows(storage::store& st, std::uint64_t job) {
  auto j = st.job(job);
  REQUIRE(j);
  auto c = st.count_rows(job);
  CHECK(j->processed_files == c.ok);
  CHECK(j->failed_files == c.failed);
  CHECK(j->skipped_files == c.skipped);
  CHECK(j->processed_bytes == c.ok_bytes);
}

void count_into(stage_matrix& m, const std::string& stage_name, const std::string& status,
                std::uint64_t n) {
  stage sg;
  INFO("stage '" << stage_name << "', status '" << status << "'");
  REQUIRE(parse_stage(stage_name, sg));
  int st = -1;
  for (auto x : {file_status::ok, file_status::skipped, file_status::failed})
    if (to_string(x) == status) st = static_cast<int>(x);
  REQUIRE(st >= 0);
  m[static_cast<std::size_t>(sg)][static_cast<std::size_t>(st)] += n;
}

stage_matrix counters_matrix(const text_rows& rows) {
  stage_matrix m{};
  for (const auto& r : rows) {
    REQUIRE(r.size() == 4);
    count_into(m, r[0], "ok", std::stoull(r[1]));
    count_into(m, r[0], "failed", std::stoull(r[2]));
    count_into(m, r[0], "skipped", std::stoull(r[3]));
  }
  return m;
}

stage_matrix rows_matrix(const text_rows& rows) {
  stage_matrix m{};
  for (const auto& r : rows) {
    REQUIRE(r.size() == 3);
    count_into(m, r[0], r[1], std::stoull(r[2]));
  }
  return m;
}

image_columns image_columns_of(const std::vector<std::string>& row, const std::string& true_text) {
  REQUIRE(row.size() == 5);
  auto num = [](const std::string& v) -> std::optional<std::int64_t> {
    if (v == "<NULL>") return std::nullopt;
    return std::stoll(v);
  };
  image_columns c;
  c.width = num(row[0]);
  c.height = num(row[1]);
  c.orientation = num(row[2]);
  c.taken_at = row[3] == "<NULL>" ? "" : row[3];
  c.has_thumbnails = row[4] == true_text;
  return c;
}

void require_stage_counters_match_rows(const probe& pr, std::uint64_t job) {
  INFO("job " << job << ": job_stage_counters == file_results per [stage][ok, skipped, failed]");
  stage_matrix counters = pr.stage_counters(job), rows = pr.stage_rows(job);
  CHECK(counters == rows);
}

file_outcome stage_outcome(std::uint64_t job, std::string path, stage stg, file_status st,
                           bool touches_media) {
  file_outcome o = outcome(job, std::move(path), st, stg == stage::sync ? 100 : 0, touches_media);
  o.stg = stg;
  if (stg != stage::sync) {
    o.sha256.clear();
    o.mime.clear();
    o.library_path.clear();
    o.mtime_ns = 0;
  }
  return o;
}

file_outcome processing_ok(std::uint64_t job, std::string path, std::int32_t width,
                           std::int32_t height, std::int32_t orientation, std::string taken_at,
                           std::vector<std::string> thumbnails) {
  file_outcome o = stage_outcome(job, std::move(path), stage::processing, file_status::ok, true);
  o.width = width;
  o.height = height;
  o.orientation = orientation;
  o.taken_at = std::move(taken_at);
  o.thumbnail_paths = std::move(thumbnails);
  return o;
}

file_outcome watermark_ok(std::uint64_t job, std::string path, std::string preview) {
  file_outcome o = stage_outcome(job, std::move(path), stage::watermark, file_status::ok, true);
  o.preview_path = std::move(preview);
  return o;
}

/// True for ISO-8601 UTC with milliseconds: "2026-11-28T12:00:00.123Z".
bool is_iso_ms_utc(const std::string& s) {
  const std::string shape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (s.size() != shape.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    bool ok = shape[i] == 'd' ? s[i] >= '0' && s[i] <= '9' : s[i] == shape[i];
    if (!ok) return false;
  }
  return true;
}

/// Names that are awkward in SQL, in text encodings or in both.
const std::vector<std::string>& odd_names() {
  // Built one by one: GCC 12 warns (-Warray-bounds, a false positive) on a
  // braced list of std::string temporaries this long.
  static const std::vector<std::string> names = [] {
    using namespace std::string_view_literals;
    std::vector<std::string> v;
    for (std::string_view n : {
             "bad\xff\xfe utf8.jpg"sv,
             "lone \xc3 lead byte"sv,
             "overlong \xc0\xaf slash"sv,
             "surrogate \xed\xa0\x80.jpg"sv,
             "nul \0 inside"sv,
             "line\nbreak.jpg"sv,
             "cr\rlf\r\n.jpg"sv,
             "single ' quote.jpg"sv,
             "double \" quote.jpg"sv,
             "'; DROP TABLE sync_jobs; --"sv,
             "back\\slash\ttab.jpg"sv,
             "braces {a,b} \"NULL\" NULL"sv,
             "NULL"sv,
             "\\xff"sv,             // a valid name equal to the display form of "\xff"
             "\xff"sv,               // ... and that one
             "percent %s %n %d.jpg"sv,
             "caf\xc3\xa9.jpg"sv,     // precomposed é
             "cafe\xcc\x81.jpg"sv,    // e + combining acute: different bytes
             "emoji \xf0\x9f\x98\x80.jpg"sv,
             "trailing space "sv,
         })
      v.emplace_back(n);
    std::string long_name(3004, 'L'); // 3000 L + ".jpg"
    long_name.replace(3000, 4, ".jpg");
    v.push_back(std::move(long_name));
    return v;
  }();
  return names;
}

// ---------------------------------------------------------------------------
// Backend-independent behaviours (each takes a factory opening the same database).

void commit_keeps_counters_equal_to_rows(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  auto batch = mixed_batch(job, 0, 50); // 30 ok, 10 failed, 10 skipped
  auto stats = st->commit(job, "/src", batch);
  CHECK(stats.inserted == 50);
  CHECK(stats.duplicates == 0);
  std::uint64_t ok_bytes = 0;
  for (const auto& o : batch)
    if (o.status == file_status::ok) ok_bytes += o.size;
  auto c = st->count_rows(job);
  CHECK(c.ok == 30);
  CHECK(c.failed == 10);
  CHECK(c.skipped == 10);
  CHECK(c.ok_bytes == ok_bytes);
  auto j = st->job(job);
  CHECK(j->processed_files == 30);
  CHECK(j->failed_files == 10);
  CHECK(j->skipped_files == 10);
  CHECK(j->processed_bytes == ok_bytes);
  CHECK(is_iso_ms_utc(j->updated_at));
  CHECK(st->count_known("/src") == 30);
  CHECK(st->count_known("/elsewhere") == 0);
  for (int i = 1; i < 10; ++i) {
    st->commit(job, "/src", mixed_batch(job, i * 50, 50));
    require_counters_match_rows(*st, job);
  }
  c = st->count_rows(job);
  CHECK(c.ok + c.failed + c.skipped == 500);
  CHECK(st->commit(job, "/src", {}).inserted == 0);
}

void reapplying_a_batch_is_a_noop(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  auto batch = mixed_batch(job, 0, 40);
  REQUIRE(st->commit(job, "/src", batch).inserted == 40);
  auto before = *st->job(job);
  std::vector<std::string> paths;
  for (const auto& o : batch) paths.push_back(o.path);
  std::vector<known_file> known_before, known_after;
  st->lookup(job, "/src", paths, known_before);

  auto stats = st->commit(job, "/src", batch);
  CHECK(stats.inserted == 0);
  CHECK(stats.duplicates == 40);
  // The same keys with different content change nothing either.
  for (auto& o : batch) {
    o.size += 1;
    o.sha256 = std::string(64, 'b');
    o.status = file_status::ok;
    o.touches_media = true;
  }
  stats = st->commit(job, "/src", batch);
  CHECK(stats.inserted == 0);
  CHECK(stats.duplicates == 40);

  auto after = *st->job(job);
  CHECK(after.processed_files == before.processed_files);
  CHECK(after.failed_files == before.failed_files);
  CHECK(after.skipped_files == before.skipped_files);
  CHECK(after.processed_bytes == before.processed_bytes);
  st->lookup(job, "/src", paths, known_after);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    INFO("path " << paths[i]);
    CHECK(known_after[i].has_media == known_before[i].has_media);
    CHECK(known_after[i].missing == known_before[i].missing);
    CHECK(known_after[i].size == known_before[i].size);
    CHECK(known_after[i].mtime_ns == known_before[i].mtime_ns);
    CHECK(known_after[i].sha256 == known_before[i].sha256);
    CHECK(known_after[i].mime == known_before[i].mime);
    CHECK(known_after[i].library_path == known_before[i].library_path);
    CHECK(known_after[i].has_result == known_before[i].has_result);
  }
  require_counters_match_rows(*st, job);

  // A batch overlapping a committed one counts only the new rows; a path twice
  // in one batch counts once.
  auto overlap = mixed_batch(job, 20, 30); // 20 old, 10 new
  overlap.push_back(overlap.back());
  stats = st->commit(job, "/src", overlap);
  CHECK(stats.inserted == 10);
  CHECK(stats.duplicates == 21);
  auto c = st->count_rows(job);
  CHECK(c.ok + c.failed + c.skipped == 50);
  require_counters_match_rows(*st, job);
}

void failing_commits_write_nothing(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  {
    auto ghost = job + 7;
    auto e = expect_error([&] { st->commit(ghost, "/src", mixed_batch(ghost, 0, 20)); });
    CHECK(e.code == errc::not_found);
    CHECK(contains(e.what, "'" + st->describe() + "'"));
    CHECK(st->count_rows(ghost).ok == 0);
  }
  {
    auto batch = mixed_batch(job, 0, 20);
    batch.back().status = static_cast<file_status>(7); // violates the status CHECK
    auto e = expect_error([&] { st->commit(job, "/src", batch, 99); });
    CHECK(e.code == errc::io);
    CHECK(st->job(job)->total_files == 0);  // the total rode in the failed transaction
  }
  {
    auto batch = mixed_batch(job, 0, 20);
    batch[5].job_id = job + 1;
    auto e = expect_error([&] { st->commit(job, "/src", batch); });
    CHECK(contains(e.what, "belongs to job " + std::to_string(job + 1)));
  }
  CHECK(st->count_known("/src") == 0);
  CHECK(st->job(job)->processed_files == 0);
  auto c = st->count_rows(job);
  CHECK(c.ok + c.failed + c.skipped == 0);
  // Still usable afterwards.
  CHECK(st->commit(job, "/src", mixed_batch(job, 0, 20)).inserted == 20);
  require_counters_match_rows(*st, job);
}

void jobs_are_created_finished_totalled_and_listed(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto a = st->create_job("/src/a", "/lib", R"({"dry_run":false})");
  auto b = st->create_job("/src/b", "/lib", "");
  auto c = st->create_job("/src/c", "/lib", "{}");
  CHECK(a < b);
  CHECK(b < c);
  auto ja = st->job(a);
  REQUIRE(ja);
  CHECK(ja->source_root == "/src/a");
  CHECK(ja->dest_root == "/lib");
  CHECK(ja->status == job_status::running);
  CHECK(ja->settings == R"({"dry_run":false})");
  CHECK(is_iso_ms_utc(ja->created_at));
  CHECK(ja->updated_at == ja->created_at);
  CHECK(ja->finished_at.empty());
  CHECK(st->job(b)->settings == "{}");
  CHECK_FALSE(st->job(c + 100));

  auto list = st->jobs(2);
  REQUIRE(list.size() == 2);
  CHECK(list[0].id == c);
  CHECK(list[1].id == b);
  CHECK(st->jobs(10).size() == 3);

  st->set_job_status(a, job_status::completed, true);
  auto j = st->job(a);
  CHECK(j->status == job_status::completed);
  CHECK(is_iso_ms_utc(j->finished_at));
  st->set_job_status(a, job_status::interrupted, false);
  j = st->job(a);
  CHECK(j->status == job_status::interrupted);
  CHECK(j->finished_at.empty());
  st->set_job_status(a, job_status::failed, true);
  CHECK(st->job(a)->status == job_status::failed);
  CHECK(expect_error([&] { st->set_job_status(c + 100, job_status::failed, true); }).code ==
        errc::not_found);

  struct step {
    std::uint64_t raise_to, expect;
  };
  for (auto s : std::vector<step>{{10, 10}, {5, 10}, {10, 10}, {0, 10}, {25, 25}, {24, 25}}) {
    st->raise_total(a, s.raise_to);
    CHECK(st->job(a)->total_files == s.expect);
  }
  CHECK(st->job(b)->total_files == 0);
  CHECK(expect_error([&] { st->raise_total(c + 100, 1); }).code == errc::not_found);
  // commit() raises the total in the batch's transaction, never lowers it, and with no
  // outcomes still raises it.
  CHECK(st->commit(b, "/src", mixed_batch(b, 0, 4), 40).inserted == 4);
  CHECK(st->job(b)->total_files == 40);
  CHECK(st->commit(b, "/src", mixed_batch(b, 4, 4), 30).inserted == 4);
  CHECK(st->job(b)->total_files == 40);
  CHECK(st->commit(b, "/src", mixed_batch(b, 0, 4), 45).inserted == 0);  // redone batch
  CHECK(st->job(b)->total_files == 45);
  st->commit(b, "/src", {}, 50);
  CHECK(st->job(b)->total_files == 50);
  require_counters_match_rows(*st, b);

  for (std::string bad : {"{", "[1,2]", "42", "not json"}) {
    INFO("settings " << bad);
    expect_error([&] { st->create_job("/x", "/y", bad); });
  }
  CHECK(st->jobs(10).size() == 3);
}

void odd_names_round_trip(const open_fn& open) {
  auto st = open(open_mode::read_write);
  const std::string root = std::string("/src\n'root' \xfe");
  const std::string dest = std::string("/lib \xff\"");
  auto job = st->create_job(root, dest, "{}");
  auto j = st->job(job);
  REQUIRE(j);
  CHECK(j->source_root == root);
  CHECK(j->dest_root == dest);

  const auto& names = odd_names();
  std::vector<file_outcome> batch;
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto o = outcome(job, names[i], file_status::ok, 100 + i, true);
    o.library_path = "lib/" + names[i];
    batch.push_back(o);
  }
  // A failed one whose error message carries a bad name.
  auto f = outcome(job, std::string("failed \xff.jpg"), file_status::failed, 0, false);
  f.error = std::string("cannot open 'failed \xff.jpg': Permission denied");
  batch.push_back(f);
  REQUIRE(st->commit(job, root, batch).inserted == names.size() + 1);
  CHECK(st->commit(job, root, batch).inserted == 0); // redo: exact keys match
  require_counters_match_rows(*st, job);

  std::vector<known_file> known;
  st->lookup(job, root, names, known);
  REQUIRE(known.size() == names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    INFO("name #" << i);
    CHECK(known[i].has_media);
    CHECK(known[i].has_result);
    CHECK(known[i].size == 100 + i);
    CHECK(known[i].library_path == "lib/" + names[i]);
  }
  // Near misses are distinct keys.
  st->lookup(job, root,
             {std::string("bad\xff\xfd utf8.jpg"), "line\r\nbreak.jpg", "cafe.jpg",
              "trailing space", "/src\n'root'", std::string("\xfe"), "\\xfe",
              std::string("nul ", 4)},
             known);
  for (const auto& k : known) {
    CHECK_FALSE(k.has_media);
    CHECK_FALSE(k.has_result);
  }
  CHECK(st->count_known(root) == names.size());
  CHECK(st->count_known("/src\n'root' \\xfe") == 0); // the display form of the root is another root

  // mark_missing matches the exact bytes too: a later job that sees every
  // name but two marks exactly those two.
  auto j2 = st->create_job(root, dest, "{}");
  std::vector<file_outcome> seen;
  for (std::size_t i = 2; i < names.size(); ++i)
    seen.push_back(outcome(j2, names[i], file_status::skipped, 100 + i, false));
  st->commit(j2, root, seen);
  CHECK(st->mark_missing(j2, root) == 2);
  st->lookup(j2, root, names, known);
  for (std::size_t i = 0; i < names.size(); ++i) {
    INFO("name #" << i);
    CHECK(known[i].missing == (i < 2));
  }
  CHECK(st->count_known(root) == names.size() - 2);
}

void media_upsert_keeps_first_job_id(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto j1 = st->create_job("/src", "/lib", "{}");
  st->commit(j1, "/src", {outcome(j1, "a.jpg", file_status::ok, 10, true)});
  std::vector<known_file> k;
  st->lookup(j1, "/src", {"a.jpg"}, k);
  REQUIRE(k.size() == 1);
  CHECK(k[0].has_media);
  CHECK_FALSE(k[0].missing);
  CHECK(k[0].size == 10);
  CHECK(k[0].mtime_ns == 1'700'000'000'000'000'010LL);
  CHECK(k[0].sha256 == std::string(64, 'a'));
  CHECK(k[0].mime == "image/jpeg");
  CHECK(k[0].library_path == "2026/11/28/a.jpg");
  auto j2 = st->create_job("/src", "/lib", "{}");
  // An unchanged skip without a hash refreshes the row (last_job_id: mark_missing
  // of that job finds it seen) and keeps the content fields.
  auto o = outcome(j2, "a.jpg", file_status::skipped, 10, true);
  o.error.clear();
  st->commit(j2, "/src", {o});
  CHECK(st->mark_missing(j2, "/src") == 0);
  st->lookup(j2, "/src", {"a.jpg"}, k);
  CHECK_FALSE(k[0].missing);
  CHECK(k[0].size == 10);
  CHECK(k[0].mtime_ns == o.mtime_ns);
  CHECK(k[0].sha256 == std::string(64, 'a'));
  CHECK(k[0].mime == "image/jpeg");
  CHECK(k[0].library_path == "2026/11/28/a.jpg");
  // A changed file: everything but first_job_id is replaced.
  auto j3 = st->create_job("/src", "/lib", "{}");
  o = outcome(j3, "a.jpg", file_status::ok, 20, true);
  o.sha256 = std::string(64, 'c');
  o.mime = "image/png";
  o.library_path = "2026/11/29/a.png";
  st->commit(j3, "/src", {o});
  st->lookup(j3, "/src", {"a.jpg"}, k);
  CHECK_FALSE(k[0].missing);
  CHECK(k[0].size == 20);
  CHECK(k[0].mtime_ns == o.mtime_ns);
  CHECK(k[0].sha256 == std::string(64, 'c'));
  CHECK(k[0].mime == "image/png");
  CHECK(k[0].library_path == "2026/11/29/a.png");
  // An outcome without touches_media leaves the row alone.
  auto j4 = st->create_job("/src", "/lib", "{}");
  st->commit(j4, "/src", {outcome(j4, "a.jpg", file_status::failed, 99, false)});
  st->lookup(j4, "/src", {"a.jpg"}, k);
  CHECK(k[0].size == 20);
  CHECK(k[0].sha256 == std::string(64, 'c'));
  CHECK(st->count_known("/src") == 1);
}

void lookup_reports_media_and_results(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto j1 = st->create_job("/src", "/lib", "{}");
  st->commit(j1, "/src",
             {outcome(j1, "a.jpg", file_status::ok, 10, true),
              outcome(j1, "b.jpg", file_status::failed, 0, false)});
  auto j2 = st->create_job("/src", "/lib", "{}");
  std::vector<known_file> out(7);
  for (auto& k : out) {
    k.has_media = k.has_result = k.missing = true;
    k.sha256 = "stale";
  }
  const std::vector<std::string> paths = {"a.jpg", "b.jpg", "c.jpg"};
  st->lookup(j1, "/src", paths, out);
  REQUIRE(out.size() == 3);
  CHECK(out[0].has_media);
  CHECK(out[0].has_result);
  CHECK_FALSE(out[0].missing);
  CHECK(out[0].size == 10);
  CHECK(out[0].mtime_ns == 1'700'000'000'000'000'010LL);
  CHECK(out[0].sha256 == std::string(64, 'a'));
  CHECK(out[0].mime == "image/jpeg");
  CHECK(out[0].library_path == "2026/11/28/a.jpg");
  CHECK_FALSE(out[1].has_media);
  CHECK(out[1].has_result);
  CHECK(out[1].sha256.empty());
  CHECK_FALSE(out[2].has_media);
  CHECK_FALSE(out[2].has_result);
  CHECK_FALSE(out[2].missing);
  st->lookup(j2, "/src", paths, out); // another job: media known, no results yet
  CHECK(out[0].has_media);
  CHECK_FALSE(out[0].has_result);
  CHECK_FALSE(out[1].has_result);
  st->lookup(j1, "/other", paths, out);
  CHECK_FALSE(out[0].has_media);
  CHECK(out[0].has_result); // results are keyed by job, not root
  st->lookup(j1, "/src", {}, out);
  CHECK(out.empty());
}

void mark_missing_marks_only_unseen(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto j1 = st->create_job("/src", "/lib", "{}");
  st->commit(j1, "/src",
             {outcome(j1, "a.jpg", file_status::ok, 1, true),
              outcome(j1, "b.jpg", file_status::ok, 2, true),
              outcome(j1, "c.jpg", file_status::ok, 3, true),
              outcome(j1, "d.jpg", file_status::ok, 4, true)});
  auto other = st->create_job("/other", "/lib", "{}");
  st->commit(other, "/other", {outcome(other, "z.jpg", file_status::ok, 9, true)});
  auto j2 = st->create_job("/src", "/lib", "{}");
  st->commit(j2, "/src",
             {outcome(j2, "a.jpg", file_status::ok, 1, true),
              outcome(j2, "b.jpg", file_status::failed, 0, false)});
  CHECK(st->mark_missing(j2, "/src") == 2);
  CHECK(st->mark_missing(j2, "/src") == 0);
  CHECK(st->count_known("/src") == 2);
  CHECK(st->count_known("/other") == 1);
  std::vector<known_file> k;
  st->lookup(j2, "/src", {"a.jpg", "b.jpg", "c.jpg", "d.jpg"}, k);
  CHECK_FALSE(k[0].missing);
  CHECK_FALSE(k[1].missing);
  CHECK(k[2].missing);
  CHECK(k[3].missing);
  CHECK(k[2].has_media);
  auto j3 = st->create_job("/src", "/lib", "{}");
  st->commit(j3, "/src", {outcome(j3, "c.jpg", file_status::ok, 3, true)});
  st->lookup(j3, "/src", {"c.jpg"}, k);
  CHECK_FALSE(k[0].missing);
  CHECK(st->count_known("/src") == 3);
  CHECK(expect_error([&] { st->mark_missing(j3 + 50, "/src"); }).code == errc::not_found);
}

void read_only_reads_and_refuses_writes(const open_fn& open) {
  std::uint64_t job = 0;
  {
    auto st = open(open_mode::read_write);
    job = st->create_job("/src", "/dst", "{}");
    st->commit(job, "/src", mixed_batch(job, 0, 10));
  }
  auto ro = open(open_mode::read_only);
  REQUIRE(ro->job(job));
  CHECK(ro->jobs(10).size() == 1);
  CHECK(ro->count_rows(job).ok == 6);
  CHECK(ro->count_known("/src") == 6);
  std::vector<known_file> k;
  ro->lookup(job, "/src", {"dir0000/file000000.jpg"}, k);
  CHECK(k[0].has_media);
  auto e = expect_error([&] { ro->create_job("/a", "/b", "{}"); });
  CHECK(contains(e.what, "read-only"));
  expect_error([&] { ro->commit(job, "/src", mixed_batch(job, 10, 5)); });
  expect_error([&] { ro->raise_total(job, 99); });
  expect_error([&] { ro->set_job_status(job, job_status::failed, true); });
  expect_error([&] { ro->mark_missing(job, "/src"); });
  CHECK(ro->count_rows(job).ok == 6);
}

void lookup_reports_the_stages_done(const open_fn& open) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  auto sync_ok = outcome(job, "a.jpg", file_status::ok, 10, true);
  // Image-stage outcomes: touches_media asks for the image columns; the media
  // row's size, mtime, hash and library path stay those of the sync outcome.
  auto processing = outcome(job, "a.jpg", file_status::ok, 0, true);
  processing.stg = stage::processing;
  processing.sha256.clear();
  processing.mime.clear();
  processing.library_path.clear();
  processing.mtime_ns = 0;
  auto watermark = outcome(job, "b.jpg", file_status::skipped, 0, false);
  watermark.stg = stage::watermark;
  auto stats = st->commit(job, "/src", {sync_ok, processing, watermark});
  CHECK(stats.inserted == 3);
  std::vector<known_file> k;
  st->lookup(job, "/src", {"a.jpg", "b.jpg", "c.jpg"}, k);
  REQUIRE(k.size() == 3);
  CHECK(k[0].stages_done == ((1u << 0) | (1u << 1)));
  CHECK(k[0].has_result);
  CHECK(k[0].has_media);
  CHECK(k[0].size == 10);
  CHECK(k[0].mtime_ns == sync_ok.mtime_ns);
  CHECK(k[0].sha256 == sync_ok.sha256);
  CHECK(k[0].library_path == sync_ok.library_path);
  CHECK(k[1].stages_done == (1u << 2));
  CHECK_FALSE(k[1].has_result); // has_result is about stage sync
  CHECK_FALSE(k[1].has_media);
  CHECK(k[2].stages_done == 0);
  // Only stage sync counts in the job's counters.
  auto j = st->job(job);
  CHECK(j->processed_files == 1);
  CHECK(j->skipped_files == 0);
  require_counters_match_rows(*st, job);
  // The same batch again: nothing new.
  CHECK(st->commit(job, "/src", {sync_ok, processing, watermark}).inserted == 0);
  // All three bits; a failed or skipped row counts as done too.
  st->commit(job, "/src",
             {stage_outcome(job, "a.jpg", stage::watermark, file_status::failed),
              stage_outcome(job, "b.jpg", stage::sync, file_status::skipped),
              stage_outcome(job, "c.jpg", stage::processing, file_status::skipped)});
  st->lookup(job, "/src", {"a.jpg", "b.jpg", "c.jpg"}, k);
  CHECK(k[0].stages_done == 7u);
  CHECK(k[1].stages_done == ((1u << 0) | (1u << 2)));
  CHECK(k[1].has_result);
  CHECK(k[2].stages_done == (1u << 1));
  CHECK_FALSE(k[2].has_result);
  // Stages are the job's own: another job starts with none, the media row is shared.
  auto j2 = st->create_job("/src", "/lib", "{}");
  st->lookup(j2, "/src", {"a.jpg", "b.jpg", "c.jpg"}, k);
  for (const auto& x : k) CHECK(x.stages_done == 0);
  CHECK(k[0].has_media);
}

// ---------------------------------------------------------------------------
// Schema version 2: the image stages.

void stage_counters_equal_the_rows_of_each_stage(const open_fn& open, const probe& pr) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  auto other = st->create_job("/src", "/lib", "{}");
  CHECK(pr.stage_counters(job) == stage_matrix{});
  require_stage_counters_match_rows(pr, job);

  // Stage sync only.
  auto sync1 = mixed_batch(job, 0, 30); // 18 ok, 6 failed, 6 skipped
  REQUIRE(st->commit(job, "/src", sync1).inserted == 30);
  require_stage_counters_match_rows(pr, job);
  auto m = pr.stage_counters(job);
  const auto ok = static_cast<std::size_t>(file_status::ok);
  const auto skipped = static_cast<std::size_t>(file_status::skipped);
  const auto failed = static_cast<std::size_t>(file_status::failed);
  const auto sync = static_cast<std::size_t>(stage::sync);
  const auto proc = static_cast<std::size_t>(stage::processing);
  const auto wm = static_cast<std::size_t>(stage::watermark);
  CHECK(m[sync][ok] == 18);
  CHECK(m[sync][failed] == 6);
  CHECK(m[sync][skipped] == 6);
  CHECK(m[proc] == std::array<std::uint64_t, 3>{});
  CHECK(m[wm] == std::array<std::uint64_t, 3>{});

  // All three stages in one batch, with new sync rows among them.
  std::vector<file_outcome> mixed;
  for (std::size_t i = 0; i < sync1.size(); ++i) {
    const auto& s = sync1[i];
    if (s.status != file_status::ok) {
      mixed.push_back(stage_outcome(job, s.path, stage::processing, file_status::skipped));
      continue;
    }
    switch (i % 3) {
      case 0:
        mixed.push_back(processing_ok(job, s.path, 640, 480, 1, "", {"t/" + s.path}));
        mixed.push_back(watermark_ok(job, s.path, "p/" + s.path));
        break;
      case 1:
        mixed.push_back(stage_outcome(job, s.path, stage::processing, file_status::failed));
        mixed.push_back(stage_outcome(job, s.path, stage::watermark, file_status::skipped));
        break;
      default:
        mixed.push_back(processing_ok(job, s.path, 640, 480, 1, "", {"t/" + s.path}));
        mixed.push_back(stage_outcome(job, s.path, stage::watermark, file_status::failed));
    }
  }
  for (auto& o : mixed_batch(job, 30, 10)) mixed.push_back(o);
  const auto n_mixed = mixed.size();
  REQUIRE(st->commit(job, "/src", mixed).inserted == n_mixed);
  require_stage_counters_match_rows(pr, job);
  require_counters_match_rows(*st, job); // sync_jobs counts stage sync only
  m = pr.stage_counters(job);
  CHECK(m[sync][ok] + m[sync][failed] + m[sync][skipped] == 40);
  CHECK(m[proc][ok] + m[proc][failed] + m[proc][skipped] == 30);
  CHECK(m[proc][skipped] == 12);
  CHECK(m[wm][ok] + m[wm][failed] + m[wm][skipped] == 18);
  CHECK(st->job(job)->processed_files + st->job(job)->failed_files +
            st->job(job)->skipped_files == 40);

  // A redone batch changes nothing, with the same or with different content.
  const auto before = pr.stage_counters(job);
  auto stats = st->commit(job, "/src", mixed);
  CHECK(stats.inserted == 0);
  CHECK(stats.duplicates == n_mixed);
  for (auto& o : mixed) o.status = file_status::failed;
  CHECK(st->commit(job, "/src", mixed).inserted == 0);
  CHECK(pr.stage_counters(job) == before);
  require_stage_counters_match_rows(pr, job);

  // Overlapping: old rows, new rows of every stage, and a (path, stage) twice.
  std::vector<file_outcome> overlap(mixed.begin(), mixed.begin() + 5);
  overlap.push_back(stage_outcome(job, "new/a.jpg", stage::sync, file_status::ok, true));
  overlap.push_back(stage_outcome(job, "new/a.jpg", stage::processing, file_status::failed));
  overlap.push_back(stage_outcome(job, "new/a.jpg", stage::processing, file_status::ok, true));
  overlap.push_back(stage_outcome(job, "new/a.jpg", stage::watermark, file_status::skipped));
  overlap.push_back(stage_outcome(job, sync1[1].path, stage::watermark, file_status::ok));
  stats = st->commit(job, "/src", overlap);
  CHECK(stats.inserted == 3);
  CHECK(stats.duplicates == overlap.size() - 3);
  require_stage_counters_match_rows(pr, job);
  m = pr.stage_counters(job);
  CHECK(m[proc][failed] == before[proc][failed] + 1); // the first of the two counts
  CHECK(m[proc][ok] == before[proc][ok]);

  // Failing commits change no counter.
  const auto kept = pr.stage_counters(job);
  {
    auto bad = std::vector<file_outcome>{
        stage_outcome(job, "bad/a.jpg", stage::processing, file_status::ok),
        stage_outcome(job, "bad/b.jpg", stage::watermark, file_status::ok)};
    bad.back().status = static_cast<file_status>(7); // violates the status CHECK
    expect_error([&] { st->commit(job, "/src", bad); });
    auto ghost = other + 50;
    CHECK(expect_error([&] {
            st->commit(ghost, "/src",
                       {stage_outcome(ghost, "a.jpg", stage::processing, file_status::ok)});
          }).code == errc::not_found);
    CHECK(pr.stage_counters(ghost) == stage_matrix{});
  }
  CHECK(pr.stage_counters(job) == kept);

  // Another job's rows count for that job only.
  st->commit(other, "/src",
             {stage_outcome(other, sync1[0].path, stage::processing, file_status::skipped),
              stage_outcome(other, sync1[0].path, stage::watermark, file_status::skipped)});
  CHECK(pr.stage_counters(job) == kept);
  m = pr.stage_counters(other);
  CHECK(m[proc][skipped] == 1);
  CHECK(m[wm][skipped] == 1);
  CHECK(m[sync] == std::array<std::uint64_t, 3>{});
  require_stage_counters_match_rows(pr, other);
  require_counters_match_rows(*st, other);
}

void image_stages_write_the_media_columns(const open_fn& open, const probe& pr) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  st->commit(job, "/src",
             {outcome(job, "a.jpg", file_status::ok, 10, true),
              outcome(job, "b.jpg", file_status::ok, 20, true),
              outcome(job, "c.jpg", file_status::failed, 0, false)});
  std::vector<known_file> k;
  st->lookup(job, "/src", {"a.jpg"}, k);
  CHECK(k[0].has_media);
  CHECK(k[0].thumbnail_paths.empty());
  CHECK(k[0].preview_path.empty());
  auto img = pr.image("/src", "a.jpg");
  REQUIRE(img);
  CHECK_FALSE(img->width);
  CHECK_FALSE(img->height);
  CHECK_FALSE(img->orientation);
  CHECK(img->taken_at.empty());
  CHECK_FALSE(img->has_thumbnails);

  // Processing: the metadata and the thumbnails, largest first.
  const std::vector<std::string> thumbs = {".thumbnails/1024/a.jpg.jpg",
                                           ".thumbnails/256/a.jpg.jpg"};
  auto failed_b = stage_outcome(job, "b.jpg", stage::processing, file_status::failed);
  failed_b.width = 1; // no touches_media: ignored
  st->commit(job, "/src",
             {processing_ok(job, "a.jpg", 4000, 3000, 6, "2021-07-04T12:30:00", thumbs),
              failed_b,
              processing_ok(job, "c.jpg", 1, 1, 1, "", {"t/c.jpg"})}); // no media row
  st->lookup(job, "/src", {"a.jpg", "b.jpg", "c.jpg"}, k);
  CHECK(k[0].thumbnail_paths == thumbs);
  CHECK(k[0].preview_path.empty());
  CHECK(k[0].sha256 == std::string(64, 'a')); // the sync columns stay
  CHECK(k[0].size == 10);
  CHECK(k[0].library_path == "2026/11/28/a.jpg");
  CHECK(k[1].thumbnail_paths.empty());
  CHECK_FALSE(k[2].has_media); // a processing outcome creates no media row
  CHECK(st->count_known("/src") == 2);
  img = pr.image("/src", "a.jpg");
  REQUIRE(img);
  CHECK(img->width == 4000);
  CHECK(img->height == 3000);
  CHECK(img->orientation == 6);
  CHECK(img->taken_at == "2021-07-04T12:30:00");
  CHECK(img->has_thumbnails);
  img = pr.image("/src", "b.jpg");
  REQUIRE(img);
  CHECK_FALSE(img->width);
  CHECK_FALSE(pr.image("/src", "c.jpg"));

  // Watermark: the preview; the thumbnails stay.
  st->commit(job, "/src", {watermark_ok(job, "a.jpg", ".previews/a.jpg.jpg")});
  st->lookup(job, "/src", {"a.jpg"}, k);
  CHECK(k[0].preview_path == ".previews/a.jpg.jpg");
  CHECK(k[0].thumbnail_paths == thumbs);
  CHECK(pr.image("/src", "a.jpg")->width == 4000);

  // A new item through all three stages in one batch, in the pipeline's order.
  st->commit(job, "/src",
             {outcome(job, "d.jpg", file_status::ok, 40, true),
              processing_ok(job, "d.jpg", 800, 600, 0, "", {"t/800/d.jpg", "t/200/d.jpg"}),
              watermark_ok(job, "d.jpg", "p/d.jpg")});
  st->lookup(job, "/src", {"d.jpg"}, k);
  CHECK(k[0].has_media);
  CHECK(k[0].stages_done == 7u);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/800/d.jpg", "t/200/d.jpg"});
  CHECK(k[0].preview_path == "p/d.jpg");
  img = pr.image("/src", "d.jpg");
  REQUIRE(img);
  CHECK(img->width == 800);
  CHECK(img->orientation == 0);
  CHECK(img->taken_at.empty()); // unknown: NULL

  // A redone batch with other data changes nothing.
  CHECK(st->commit(job, "/src",
                   {processing_ok(job, "a.jpg", 1, 1, 1, "2000-01-01T00:00:00", {"x.jpg"}),
                    watermark_ok(job, "a.jpg", "y.jpg")})
            .inserted == 0);
  st->lookup(job, "/src", {"a.jpg"}, k);
  CHECK(k[0].thumbnail_paths == thumbs);
  CHECK(k[0].preview_path == ".previews/a.jpg.jpg");
  CHECK(pr.image("/src", "a.jpg")->width == 4000);
  // A partly redone batch: only its new rows write (here a new item through all
  // three stages, and a preview for b.jpg).
  auto stats = st->commit(job, "/src",
                          {processing_ok(job, "a.jpg", 1, 1, 1, "", {"x.jpg"}),
                           outcome(job, "g.jpg", file_status::ok, 70, true),
                           processing_ok(job, "g.jpg", 70, 70, 3, "", {"t/g.jpg"}),
                           watermark_ok(job, "g.jpg", "p/g.jpg"),
                           watermark_ok(job, "a.jpg", "y.jpg"),
                           watermark_ok(job, "b.jpg", "p/b.jpg")});
  CHECK(stats.inserted == 4);
  CHECK(stats.duplicates == 2);
  st->lookup(job, "/src", {"a.jpg", "b.jpg", "g.jpg"}, k);
  CHECK(k[0].thumbnail_paths == thumbs);
  CHECK(k[0].preview_path == ".previews/a.jpg.jpg");
  CHECK(k[1].preview_path == "p/b.jpg");
  CHECK(k[1].thumbnail_paths.empty());
  CHECK(k[2].thumbnail_paths == std::vector<std::string>{"t/g.jpg"});
  CHECK(k[2].preview_path == "p/g.jpg");
  CHECK(pr.image("/src", "g.jpg")->orientation == 3);
  CHECK(pr.image("/src", "a.jpg")->width == 4000);
  require_stage_counters_match_rows(pr, job);

  // A later job's rows are new: they replace the image columns.
  auto j2 = st->create_job("/src", "/lib", "{}");
  st->commit(j2, "/src",
             {processing_ok(j2, "a.jpg", 2000, 1500, 8, "2022-02-03T04:05:06",
                            {".thumbnails/512/a.jpg.jpg"}),
              watermark_ok(j2, "a.jpg", ".previews/v2/a.jpg.jpg")});
  st->lookup(j2, "/src", {"a.jpg"}, k);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{".thumbnails/512/a.jpg.jpg"});
  CHECK(k[0].preview_path == ".previews/v2/a.jpg.jpg");
  img = pr.image("/src", "a.jpg");
  CHECK(img->width == 2000);
  CHECK(img->height == 1500);
  CHECK(img->orientation == 8);
  CHECK(img->taken_at == "2022-02-03T04:05:06");

  // Names: a preview path round-trips exactly; JSON cannot hold a thumbnail path
  // that is not UTF-8, so each invalid byte reads back as U+FFFD.
  const std::string odd_preview = std::string("p/bad \xff\xfe name\n'\".jpg");
  st->commit(j2, "/src",
             {outcome(j2, "e.jpg", file_status::ok, 50, true),
              processing_ok(j2, "e.jpg", 10, 10, 1, "",
                            {std::string("t/bad \xff.jpg"), "t/caf\xc3\xa9 \"q\" \\.jpg"}),
              watermark_ok(j2, "e.jpg", odd_preview)});
  st->lookup(j2, "/src", {"e.jpg"}, k);
  CHECK(k[0].preview_path == odd_preview);
  CHECK(k[0].thumbnail_paths ==
        std::vector<std::string>{"t/bad \xef\xbf\xbd.jpg", "t/caf\xc3\xa9 \"q\" \\.jpg"});
  // But the thumbnails the engine made of a name that is not UTF-8 ("DIR/SIZE/" + the
  // library path + ".EXT") read back exact, so a later stage opens what was written.
  // Only what is exactly the stored form of this item's own path is restored.
  const std::string latin1 = "caf\xe9 \xff.jpg";
  file_outcome lat = outcome(j2, latin1, file_status::ok, 60, true);
  const std::string big = ".thumbnails/512/" + lat.library_path + ".jpg";
  const std::string small = ".thumbnails/128/" + lat.library_path + ".webp";
  const std::string other = ".thumbnails/64/2026/11/28/cafe \xff.jpg.jpg";
  st->commit(j2, "/src", {lat, processing_ok(j2, latin1, 10, 10, 1, "", {big, small, other})});
  st->lookup(j2, "/src", {latin1}, k);
  CHECK(k[0].library_path == lat.library_path);
  CHECK(k[0].thumbnail_paths
        == std::vector<std::string>{big, small, ".thumbnails/64/2026/11/28/cafe \xef\xbf\xbd.jpg.jpg"});
  // An empty thumbnail list is an empty array, not NULL.
  st->commit(j2, "/src", {processing_ok(j2, "b.jpg", 5, 5, 1, "", {})});
  img = pr.image("/src", "b.jpg");
  CHECK(img->has_thumbnails);
  CHECK(img->width == 5);
  st->lookup(j2, "/src", {"b.jpg"}, k);
  CHECK(k[0].thumbnail_paths.empty());
}

void new_content_clears_the_derived_files(const open_fn& open, const probe& pr) {
  auto st = open(open_mode::read_write);
  auto j1 = st->create_job("/src", "/lib", "{}");
  std::vector<file_outcome> b;
  for (std::string p : {"same.jpg", "new.jpg", "nohash.jpg", "gone.jpg"}) {
    b.push_back(outcome(j1, p, file_status::ok, 10, true));
    b.push_back(processing_ok(j1, p, 100, 100, 1, "2020-01-01T00:00:00", {"t/" + p}));
    b.push_back(watermark_ok(j1, p, "p/" + p));
  }
  st->commit(j1, "/src", b);
  const std::vector<std::string> paths = {"same.jpg", "new.jpg", "nohash.jpg", "gone.jpg"};
  std::vector<known_file> k;
  st->lookup(j1, "/src", paths, k);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    INFO(paths[i]);
    CHECK(k[i].thumbnail_paths == std::vector<std::string>{"t/" + paths[i]});
    CHECK(k[i].preview_path == "p/" + paths[i]);
  }

  auto j2 = st->create_job("/src", "/lib", "{}");
  auto same = outcome(j2, "same.jpg", file_status::ok, 11, true); // same hash, re-read
  auto changed = outcome(j2, "new.jpg", file_status::ok, 12, true);
  changed.sha256 = std::string(64, 'b');
  auto nohash = outcome(j2, "nohash.jpg", file_status::skipped, 10, true); // unchanged skip
  nohash.sha256.clear();
  nohash.error = "unchanged";
  auto untouched = outcome(j2, "gone.jpg", file_status::failed, 0, false);
  const std::vector<file_outcome> sync2 = {same, changed, nohash, untouched};
  st->commit(j2, "/src", sync2);
  st->lookup(j2, "/src", paths, k);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/same.jpg"});
  CHECK(k[0].preview_path == "p/same.jpg");
  CHECK(k[1].sha256 == std::string(64, 'b'));
  CHECK(k[1].thumbnail_paths.empty());
  CHECK(k[1].preview_path.empty());
  CHECK(k[2].sha256 == std::string(64, 'a'));
  CHECK(k[2].thumbnail_paths == std::vector<std::string>{"t/nohash.jpg"});
  CHECK(k[2].preview_path == "p/nohash.jpg");
  CHECK(k[3].thumbnail_paths == std::vector<std::string>{"t/gone.jpg"});
  CHECK(k[3].preview_path == "p/gone.jpg");
  CHECK_FALSE(pr.image("/src", "new.jpg")->has_thumbnails);

  // The image stages of the new content fill them again ...
  st->commit(j2, "/src",
             {processing_ok(j2, "new.jpg", 300, 200, 1, "", {"t2/new.jpg"}),
              watermark_ok(j2, "new.jpg", "p2/new.jpg")});
  // ... and a redone sync batch does not clear them again (its rows are not new).
  CHECK(st->commit(j2, "/src", sync2).inserted == 0);
  st->lookup(j2, "/src", {"new.jpg"}, k);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t2/new.jpg"});
  CHECK(k[0].preview_path == "p2/new.jpg");
  CHECK(pr.image("/src", "new.jpg")->width == 300);

  // A file first hashed now (stored without hash) counts as new content.
  auto j3 = st->create_job("/src", "/lib", "{}");
  auto first = outcome(j3, "late.jpg", file_status::skipped, 5, true);
  first.sha256.clear();
  st->commit(j3, "/src",
             {first, processing_ok(j3, "late.jpg", 1, 1, 1, "", {"t/late.jpg"})});
  st->lookup(j3, "/src", {"late.jpg"}, k);
  CHECK(k[0].thumbnail_paths == std::vector<std::string>{"t/late.jpg"});
  auto j4 = st->create_job("/src", "/lib", "{}");
  st->commit(j4, "/src", {outcome(j4, "late.jpg", file_status::ok, 5, true)});
  st->lookup(j4, "/src", {"late.jpg"}, k);
  CHECK(k[0].thumbnail_paths.empty());
  for (auto job : {j1, j2, j3, j4}) require_stage_counters_match_rows(pr, job);
}

namespace {

/// What committing `batch` to an empty job would add: rows by stage and status
/// (the first of a repeated (path, stage) only) and the bytes of the sync ok rows.
struct expected_stats {
  stage_matrix per_stage{};
  std::uint64_t ok_bytes = 0;
  std::uint64_t rows = 0;
};

expected_stats expect_new(const std::vector<file_outcome>& batch) {
  expected_stats e;
  std::vector<std::pair<std::string, stage>> seen;
  for (const auto& o : batch) {
    bool repeated = false;
    for (const auto& s : seen)
      repeated = repeated || (s.first == o.path && s.second == o.stg);
    if (repeated) continue;
    seen.emplace_back(o.path, o.stg);
    ++e.per_stage[static_cast<std::size_t>(o.stg)][static_cast<std::size_t>(o.status)];
    ++e.rows;
    if (o.stg == stage::sync && o.status == file_status::ok) e.ok_bytes += o.size;
  }
  return e;
}

void add_into(stage_matrix& sum, const stage_matrix& m) {
  for (std::size_t sg = 0; sg < stage_count; ++sg)
    for (std::size_t st = 0; st < 3; ++st) sum[sg][st] += m[sg][st];
}

std::uint64_t total(const stage_matrix& m) {
  std::uint64_t n = 0;
  for (const auto& r : m)
    for (auto x : r) n += x;
  return n;
}

/// A batch of every stage and status: `n` files from number `first`, sizes 500 + i
/// (sync), each with a sync row and, depending on i, processing / watermark rows.
std::vector<file_outcome> all_stages_batch(std::uint64_t job, int first, int n) {
  std::vector<file_outcome> b;
  const file_status statuses[] = {file_status::ok, file_status::failed, file_status::skipped};
  for (int i = first; i < first + n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "stats/%04d.jpg", i);
    file_outcome s = stage_outcome(job, name, stage::sync, statuses[i % 3], i % 3 == 0);
    s.size = 500 + static_cast<std::uint64_t>(i);
    b.push_back(s);
    if (i % 3 != 0) continue; // only ok syncs go on
    switch (i / 3 % 4) {
      case 0:
        b.push_back(processing_ok(job, name, 64, 48, 1, "", {"t/" + std::string(name)}));
        b.push_back(watermark_ok(job, name, "p/" + std::string(name)));
        break;
      case 1:
        b.push_back(stage_outcome(job, name, stage::processing, file_status::failed));
        b.push_back(stage_outcome(job, name, stage::watermark, file_status::skipped));
        break;
      case 2:
        b.push_back(stage_outcome(job, name, stage::processing, file_status::skipped));
        b.push_back(stage_outcome(job, name, stage::watermark, file_status::skipped));
        break;
      default:
        b.push_back(processing_ok(job, name, 64, 48, 6, "", {"t/" + std::string(name)}));
        b.push_back(stage_outcome(job, name, stage::watermark, file_status::failed));
    }
  }
  return b;
}

} // namespace

void commit_stats_count_exactly_the_new_rows(const open_fn& open, const probe& pr) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  const auto ok = static_cast<std::size_t>(file_status::ok);
  const auto skipped = static_cast<std::size_t>(file_status::skipped);
  const auto failed = static_cast<std::size_t>(file_status::failed);
  const auto sync = static_cast<std::size_t>(stage::sync);
  const auto proc = static_cast<std::size_t>(stage::processing);
  const auto wm = static_cast<std::size_t>(stage::watermark);
  stage_matrix sum{};       // of every commit's per_stage
  std::uint64_t sum_bytes = 0; // of every commit's ok_bytes

  // A first commit of mixed stages and statuses: every row new.
  auto first = all_stages_batch(job, 0, 24);
  auto e = expect_new(first);
  REQUIRE(e.rows == first.size());
  auto stats = st->commit(job, "/src", first);
  CHECK(stats.per_stage == e.per_stage);
  CHECK(stats.ok_bytes == e.ok_bytes);
  CHECK(stats.inserted == first.size());
  CHECK(stats.duplicates == 0);
  // The expectation itself, by hand: 24 syncs (8 of each status), then per ok sync
  // (i = 0, 3, ..., 21: i / 3 % 4 = 0 1 2 3 0 1 2 3) two image-stage rows.
  CHECK(stats.per_stage[sync] == std::array<std::uint64_t, 3>{8, 8, 8});
  CHECK(stats.per_stage[proc][ok] == 4);
  CHECK(stats.per_stage[proc][failed] == 2);
  CHECK(stats.per_stage[proc][skipped] == 2);
  CHECK(stats.per_stage[wm][ok] == 2);
  CHECK(stats.per_stage[wm][failed] == 2);
  CHECK(stats.per_stage[wm][skipped] == 4);
  CHECK(stats.ok_bytes == 500 * 8 + (0 + 3 + 6 + 9 + 12 + 15 + 18 + 21));
  add_into(sum, stats.per_stage);
  sum_bytes += stats.ok_bytes;

  // The same batch again, plus new rows of every stage and a (path, stage) twice:
  // only the new rows count.
  auto again = first;
  auto fresh = all_stages_batch(job, 24, 12);
  for (const auto& o : fresh) again.push_back(o);
  again.push_back(fresh.front());             // a repeat within the batch: a duplicate
  again.push_back(first.back());              // ... and one of the first commit again
  again.back().status = file_status::failed;  // with other content: still not new
  auto ef = expect_new(fresh);
  stats = st->commit(job, "/src", again);
  CHECK(stats.per_stage == ef.per_stage);
  CHECK(stats.ok_bytes == ef.ok_bytes);
  CHECK(stats.inserted == fresh.size());
  CHECK(stats.duplicates == again.size() - fresh.size());
  CHECK(total(stats.per_stage) == stats.inserted);
  add_into(sum, stats.per_stage);
  sum_bytes += stats.ok_bytes;

  // Entirely old: nothing counts.
  stats = st->commit(job, "/src", fresh);
  CHECK(stats.per_stage == stage_matrix{});
  CHECK(stats.ok_bytes == 0);
  CHECK(stats.inserted == 0);
  CHECK(stats.duplicates == fresh.size());

  // More commits: image stages of old files only, then sync rows only (mixed_batch,
  // whose ok rows have sizes 1000 + i), then both in one, some overlapping.
  std::vector<std::vector<file_outcome>> more;
  more.push_back({stage_outcome(job, "stats/0001.jpg", stage::processing, file_status::skipped),
                  stage_outcome(job, "stats/0001.jpg", stage::watermark, file_status::skipped),
                  stage_outcome(job, "stats/0002.jpg", stage::processing, file_status::skipped)});
  more.push_back(mixed_batch(job, 0, 40));
  {
    auto mixed = mixed_batch(job, 30, 30); // 10 old, 20 new
    auto images = all_stages_batch(job, 30, 9);
    mixed.insert(mixed.end(), images.begin(), images.end());
    more.push_back(std::move(mixed));
  }
  for (const auto& b : more) {
    stats = st->commit(job, "/src", b);
    CHECK(total(stats.per_stage) == stats.inserted);
    add_into(sum, stats.per_stage);
    sum_bytes += stats.ok_bytes;
  }

  // The sums over every commit equal the database's counters.
  CHECK(sum == pr.stage_counters(job));
  CHECK(sum == pr.stage_rows(job));
  auto rows = st->count_rows(job);
  CHECK(sum[sync][ok] == rows.ok);
  CHECK(sum[sync][failed] == rows.failed);
  CHECK(sum[sync][skipped] == rows.skipped);
  CHECK(sum_bytes == rows.ok_bytes);
  CHECK(sum_bytes == st->job(job)->processed_bytes);
  require_stage_counters_match_rows(pr, job);
  require_counters_match_rows(*st, job);

  // A failing commit returns nothing, and a later good one counts its rows once.
  auto bad = all_stages_batch(job, 100, 6);
  bad.back().status = static_cast<file_status>(7); // violates the status CHECK
  expect_error([&] { st->commit(job, "/src", bad); });
  bad.back().status = file_status::ok;
  stats = st->commit(job, "/src", bad);
  CHECK(stats.per_stage == expect_new(bad).per_stage);
  CHECK(stats.ok_bytes == expect_new(bad).ok_bytes);
  add_into(sum, stats.per_stage);
  CHECK(sum == pr.stage_counters(job));
}

// ---------------------------------------------------------------------------
// Schema version 3: file_results.node.

void results_record_the_node(const open_fn& open, const probe& pr) {
  auto st = open(open_mode::read_write);
  auto job = st->create_job("/src", "/lib", "{}");
  auto on = [](file_outcome o, std::string node) {
    o.node = std::move(node);
    return o;
  };
  auto sync_row = [&](const std::string& path, file_status s, const std::string& node) {
    return on(stage_outcome(job, "node/" + path, stage::sync, s, s == file_status::ok), node);
  };
  auto stage_row = [&](const std::string& path, stage sg, const std::string& node) {
    return on(stage_outcome(job, "node/" + path, sg, file_status::skipped), node);
  };
  // Node names are plain text, but the stores must still escape them: these hold
  // what COPY text format (tab, backslash, "\N") and array literals (quotes,
  // braces, NULL) treat specially.
  const std::string odd = "tab\there \\N 'q' \"dq\" {a,b}";
  const std::string copy_null = "\\N";
  auto sorted = [](text_rows r) {
    std::sort(r.begin(), r.end());
    return r;
  };

  // Outcomes from two nodes (PostgreSQL: the first try, COPY).
  const std::vector<file_outcome> first = {
      sync_row("a.jpg", file_status::ok, "worker-1"),
      stage_row("a.jpg", stage::processing, "worker-2"),
      sync_row("b.jpg", file_status::failed, "worker-2"),
      sync_row("odd.jpg", file_status::skipped, odd),
      sync_row("null.jpg", file_status::skipped, copy_null),
  };
  auto stats = st->commit(job, "/src", first);
  CHECK(stats.inserted == first.size());
  CHECK(sorted(pr.nodes(job)) == text_rows{{"node/a.jpg", "processing", "worker-2"},
                                           {"node/a.jpg", "sync", "worker-1"},
                                           {"node/b.jpg", "sync", "worker-2"},
                                           {"node/null.jpg", "sync", copy_null},
                                           {"node/odd.jpg", "sync", odd}});

  // Outcomes without a node: NULL.
  const std::vector<file_outcome> unnamed = {sync_row("c.jpg", file_status::ok, ""),
                                             stage_row("c.jpg", stage::processing, "")};
  stats = st->commit(job, "/src", unnamed);
  CHECK(stats.inserted == unnamed.size());

  // The first batch again (one row re-sent by another node) plus new rows, with
  // and without a node (PostgreSQL: the redo path, ms_commit_redo): the new rows
  // get theirs, the rows already there keep theirs.
  auto again = first;
  again[2].node = "worker-9";
  const std::vector<file_outcome> fresh = {
      sync_row("d.jpg", file_status::ok, "worker-3"),
      sync_row("e.jpg", file_status::skipped, ""),
      stage_row("a.jpg", stage::watermark, "worker-1"),
      sync_row("odd2.jpg", file_status::skipped, "NULL"),
      sync_row("odd3.jpg", file_status::skipped, odd),
      sync_row("null2.jpg", file_status::skipped, copy_null),
  };
  again.insert(again.end(), fresh.begin(), fresh.end());
  stats = st->commit(job, "/src", again);
  CHECK(stats.inserted == fresh.size());
  CHECK(stats.duplicates == first.size());
  // Entirely old, without a node: nothing changes.
  stats = st->commit(job, "/src", unnamed);
  CHECK(stats.inserted == 0);
  CHECK(stats.duplicates == unnamed.size());

  CHECK(sorted(pr.nodes(job)) == text_rows{{"node/a.jpg", "processing", "worker-2"},
                                           {"node/a.jpg", "sync", "worker-1"},
                                           {"node/a.jpg", "watermark", "worker-1"},
                                           {"node/b.jpg", "sync", "worker-2"},
                                           {"node/c.jpg", "processing", "<NULL>"},
                                           {"node/c.jpg", "sync", "<NULL>"},
                                           {"node/d.jpg", "sync", "worker-3"},
                                           {"node/e.jpg", "sync", "<NULL>"},
                                           {"node/null.jpg", "sync", copy_null},
                                           {"node/null2.jpg", "sync", copy_null},
                                           {"node/odd.jpg", "sync", odd},
                                           {"node/odd2.jpg", "sync", "NULL"},
                                           {"node/odd3.jpg", "sync", odd}});
  require_counters_match_rows(*st, job);
  require_stage_counters_match_rows(pr, job);

  // Rows per node (what `status` shows), by node name; NULL as "".
  auto per_node = st->node_counts(job);
  std::vector<std::tuple<std::string, std::uint64_t, std::uint64_t, std::uint64_t>> got;
  for (auto& n : per_node) {
    got.emplace_back(n.node, n.rows[0], n.rows[1], n.rows[2]);
    CHECK(n.seconds >= 0);
  }
  std::sort(got.begin(), got.end());
  decltype(got) want = {{"", 2, 1, 0},        {"NULL", 1, 0, 0},     {copy_null, 2, 0, 0},
                        {odd, 2, 0, 0},       {"worker-1", 1, 0, 1}, {"worker-2", 1, 1, 0},
                        {"worker-3", 1, 0, 0}};
  std::sort(want.begin(), want.end());
  CHECK(got == want);
  CHECK(st->node_counts(job + 1000).empty());
}

} // namespace ms::test::contract

// The contract on SQLite (the PostgreSQL runs are in tests/postgres_store.cpp).

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>

namespace {

/// Rows of `sql` on a raw read-only connection to `path`, with text
/// parameters; NULL reads as "<NULL>".
std::vector<std::vector<std::string>> sqlite_rows(const std::string& path, const std::string& sql,
                                                  const std::vector<std::string>& params) {
  sqlite3* db = nullptr;
  std::vector<std::vector<std::string>> out;
  std::string err;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK) {
      for (std::size_t i = 0; i < params.size(); ++i)
        sqlite3_bind_text(s, static_cast<int>(i + 1), params[i].data(),
                          static_cast<int>(params[i].size()), SQLITE_TRANSIENT);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        std::vector<std::string> row;
        for (int c = 0; c < sqlite3_column_count(s); ++c) {
          auto p = reinterpret_cast<const char*>(sqlite3_column_text(s, c));
          row.emplace_back(p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s, c)))
                             : std::string("<NULL>"));
        }
        out.push_back(std::move(row));
      }
      if (rc != SQLITE_DONE) err = sqlite3_errmsg(db);
    } else {
      err = sqlite3_errmsg(db);
    }
    sqlite3_finalize(s);
  } else {
    err = db ? sqlite3_errmsg(db) : "out of memory";
  }
  sqlite3_close_v2(db);
  if (!err.empty()) throw std::runtime_error("raw query '" + sql + "' on " + path + ": " + err);
  return out;
}

/// A fresh SQLite database file in a directory of its own, removed afterwards.
struct sqlite_db {
  std::string dir;
  sqlite_db() {
    char tmpl[] = "/tmp/ms_contract_test.XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
  }
  ~sqlite_db() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string path() const { return dir + "/ms.db"; }
  ms::test::contract::open_fn opener() const {
    std::string p = path();
    return [p](ms::storage::open_mode mode) { return ms::storage::open_store(p, mode); };
  }
  ms::test::contract::probe prober() const {
    using namespace ms::test::contract;
    std::string p = path();
    probe pr;
    pr.stage_counters = [p](std::uint64_t job) {
      return counters_matrix(sqlite_rows(p,
                                         "SELECT stage, ok_files, failed_files, skipped_files"
                                         " FROM job_stage_counters WHERE job_id = ?1",
                                         {std::to_string(job)}));
    };
    pr.stage_rows = [p](std::uint64_t job) {
      return rows_matrix(sqlite_rows(p,
                                     "SELECT stage, status, COUNT(*) FROM file_results"
                                     " WHERE job_id = ?1 GROUP BY stage, status",
                                     {std::to_string(job)}));
    };
    pr.image = [p](const std::string& root,
                   const std::string& path) -> std::optional<image_columns> {
      auto r = sqlite_rows(p,
                           "SELECT width, height, orientation, taken_at, thumbnail_paths IS NOT NULL"
                           " FROM media_items WHERE source_root = ?1 AND path = ?2",
                           {root, path});
      if (r.empty()) return std::nullopt;
      return image_columns_of(r[0], "1");
    };
    pr.nodes = [p](std::uint64_t job) {
      return sqlite_rows(p,
                         "SELECT path, stage, node FROM file_results WHERE job_id = ?1"
                         " ORDER BY path, stage",
                         {std::to_string(job)});
    };
    return pr;
  }
};

} // namespace

TEST_CASE("store contract on SQLite", "[store_contract][sqlite]") {
  using namespace ms::test::contract;
  sqlite_db db;
  SECTION("commit keeps counters") { commit_keeps_counters_equal_to_rows(db.opener()); }
  SECTION("redo is a no-op") { reapplying_a_batch_is_a_noop(db.opener()); }
  SECTION("failing commits") { failing_commits_write_nothing(db.opener()); }
  SECTION("jobs") { jobs_are_created_finished_totalled_and_listed(db.opener()); }
  SECTION("odd names") { odd_names_round_trip(db.opener()); }
  SECTION("media upsert") { media_upsert_keeps_first_job_id(db.opener()); }
  SECTION("lookup") { lookup_reports_media_and_results(db.opener()); }
  SECTION("mark_missing") { mark_missing_marks_only_unseen(db.opener()); }
  SECTION("read_only") { read_only_reads_and_refuses_writes(db.opener()); }
  SECTION("stages") { lookup_reports_the_stages_done(db.opener()); }
  SECTION("stage counters") {
    stage_counters_equal_the_rows_of_each_stage(db.opener(), db.prober());
  }
  SECTION("image columns") { image_stages_write_the_media_columns(db.opener(), db.prober()); }
  SECTION("new content") { new_content_clears_the_derived_files(db.opener(), db.prober()); }
  SECTION("commit stats") { commit_stats_count_exactly_the_new_rows(db.opener(), db.prober()); }
  SECTION("node") { results_record_the_node(db.opener(), db.prober()); }
}
