#include "app/config.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace ms::app {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_blank(s[b]))
    ++b;
  while (e > b && is_blank(s[e - 1]))
    --e;
  return s.substr(b, e - b);
}

bool valid_key(const std::string& k) {
  if (k.empty())
    return false;
  for (char c : k)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  return true;
}

bool valid_job_name(const std::string& n) {
  if (n.empty() || n.size() > 64)
    return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
          || c == '_' || c == '.'))
      return false;
  return true;
}

/// A value as written: trimmed; "double quoted" keeps blanks, with \" and \\ escapes.
std::string unquote(const std::string& raw, const std::string& where) {
  if (raw.empty() || raw.front() != '"')
    return raw;
  if (raw.size() < 2 || raw.back() != '"')
    throw usage_error(where + ": unterminated quoted value (a value starting with '\"' must end "
                              "with '\"')");
  std::string out;
  for (std::size_t i = 1; i + 1 < raw.size(); ++i) {
    char c = raw[i];
    if (c == '\\') {
      if (i + 2 >= raw.size() || (raw[i + 1] != '"' && raw[i + 1] != '\\'))
        throw usage_error(where + ": in a quoted value only \\\" and \\\\ are escapes");
      out += raw[++i];
    } else if (c == '"') {
      throw usage_error(where + ": a '\"' inside a quoted value must be written \\\"");
    } else {
      out += c;
    }
  }
  return out;
}

} // namespace

config_file parse_config(const std::string& text, const std::string& name) {
  config_file cfg;
  cfg.path = name;
  std::string section;           // "" before the first header; "job" inside [job NAME]
  job_def* job = nullptr;
  // Per section instance: where each single-valued key was first given.
  std::map<std::string, std::size_t> seen;
  std::map<std::string, std::size_t> job_names;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    auto nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() + 1 : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    auto where = name + ":" + std::to_string(line_no);
    if (line.find('\0') != std::string::npos)
      throw usage_error(where + ": the line holds a NUL byte (is this a text file?)");
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';')
      continue;
    if (line[0] == '[') {
      if (line.back() != ']')
        throw usage_error(where + ": a section header must end with ']': " + line);
      auto inner = trim(line.substr(1, line.size() - 2));
      seen.clear();
      job = nullptr;
      if (inner.rfind("job", 0) == 0 && (inner.size() == 3 || is_blank(inner[3]))) {
        auto jname = trim(inner.substr(3));
        if (!valid_job_name(jname))
          throw usage_error(where + ": [job NAME] needs a name of letters, digits, '-', '_' or "
                                    "'.' (at most 64), got '" + jname + "'");
        if (auto dup = job_names.find(jname); dup != job_names.end())
          throw usage_error(where + ": job '" + jname + "' is defined twice (first at line "
                            + std::to_string(dup->second) + ")");
        job_names[jname] = line_no;
        cfg.jobs.push_back({jname, where, {}});
        job = &cfg.jobs.back();
        section = "job";
        continue;
      }
      if (!is_config_section(inner))
        throw usage_error(where + ": unknown section [" + inner + "] (sections: storage, writer, "
                                  "stages, imaging, watermark, scan, log, node, cluster, job NAME; see "
                                  "mediasync help config)");
      section = inner;
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw usage_error(where + ": expected 'key = value', a [section] or a # comment, got '"
                        + line + "'");
    auto key = trim(line.substr(0, eq));
    if (!valid_key(key))
      throw usage_error(where + ": '" + key + "' is not a key (keys are lower-case words joined "
                                "by '-')");
    auto shown_section = section == "job" ? "[job " + job->name + "]" : "[" + section + "]";
    auto origin = where + ": " + shown_section + " " + key;
    if (section.empty())
      throw usage_error(where + ": key '" + key + "' comes before any [section]");
    check_config_key(section, key, origin);
    if (!is_list_key(key)) {
      auto [it, fresh] = seen.emplace(key, line_no);
      if (!fresh)
        throw usage_error(origin + ": given twice in this section (first at line "
                          + std::to_string(it->second) + ")");
    }
    assignment a{key, unquote(trim(line.substr(eq + 1)), origin), origin, true};
    (job ? job->settings : cfg.global).push_back(std::move(a));
  }
  // Every value is checked now, in the order a run applies them, so nothing starts on a
  // config that would fail later.
  effective_options(&cfg, {});
  for (auto& j : cfg.jobs) {
    auto o = effective_options(cfg, j, {});
    for (auto [key, value] : {std::pair{"source", &o.source}, std::pair{"dest", &o.dest}})
      if (value->empty())
        throw usage_error(name + ": [job " + j.name + "] (" + j.origin + ") is missing the "
                          "required key '" + key + "'");
  }
  return cfg;
}

config_file load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw usage_error("cannot read config file '" + path + "': " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad())
    throw usage_error("cannot read config file '" + path + "': " + std::strerror(errno));
  return parse_config(buf.str(), path);
}

options effective_options(const config_file* cfg, const std::vector<assignment>& cli) {
  options o;
  if (cfg) {
    apply_settings(o, cfg->global);
    o.config = cfg->path;
  }
  apply_settings(o, cli);
  return o;
}

options effective_options(const config_file& cfg, const job_def& job,
                          const std::vector<assignment>& cli) {
  options o;
  apply_settings(o, cfg.global);
  apply_settings(o, job.settings);
  apply_settings(o, cli);
  o.config = cfg.path;
  o.job_name = job.name;
  return o;
}

std::vector<const job_def*> select_jobs(const config_file& cfg,
                                        const std::vector<std::string>& names) {
  if (cfg.jobs.empty())
    throw usage_error(cfg.path + ": defines no [job NAME] section: nothing to run");
  std::vector<const job_def*> out;
  if (names.empty()) {
    for (auto& j : cfg.jobs)
      out.push_back(&j);
    return out;
  }
  for (auto& n : names) {
    const job_def* found = nullptr;
    for (auto& j : cfg.jobs)
      if (j.name == n)
        found = &j;
    if (!found) {
      std::string known;
      for (auto& j : cfg.jobs)
        known += (known.empty() ? "" : ", ") + j.name;
      throw usage_error(cfg.path + ": no job named '" + n + "' (jobs: " + known + ")");
    }
    if (std::find(out.begin(), out.end(), found) == out.end())
      out.push_back(found);
  }
  return out;
}

} // namespace ms::app
