#include "manager/query.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "common/seal.h"
#include "common/sqlite.h"
#include "common/tool.h"
#include "manager/fault_codes.h"
#include "manager/rendered_rows.h"
#include "manager/spec.h"
#include "manager/xmlrpc_values.h"

namespace flexmon::manager {

namespace {

using V = xmlrpc_c::value;

const std::set<std::string, std::less<>> kStatuses = {
    "ok", "timeout", "unreachable", "resolve-failure", "refused", "error"};
const std::set<std::string, std::less<>> kToolNames = [] {
  std::set<std::string, std::less<>> names;
  for (Tool tool : kAllTools) names.emplace(tool_name(tool));
  return names;
}();

std::string one_of(const V& v, const std::string& name,
                   const std::set<std::string, std::less<>>& allowed) {
  std::string text = get_string(v, name);
  if (!allowed.contains(text)) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    bad_argument(fmt::format("{}: '{}' is not one of {}", name, text, list));
  }
  return text;
}

// Cursors are sealed: the reader's position text (storage/reader.h) followed
// by an HMAC-SHA256 of the tool and that text, in hex, under a key made at
// random once per process. A cursor that no page of this manager returned
// (forged, altered, another tool's) is refused, and nothing of it reaches
// the databases. Cursors do not survive a restart of the manager: a client
// asks again without one (schemas/xmlrpc-api.md, "Paging").
const Sealer& cursor_key() {
  static const Sealer key = [] {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
      throw std::runtime_error("OpenSSL: no random bytes for the cursor key");
    return Sealer(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
  }();
  return key;
}

std::string cursor_mac_input(std::string_view tool, std::string_view position) {
  return fmt::format("flexmon cursor 1\n{}\n{}", tool, position);
}

std::string sealed_cursor(std::string_view tool, const std::string& position) {
  if (position.empty()) return position;
  std::string out = position;
  for (std::uint8_t byte : cursor_key().mac(cursor_mac_input(tool, position)))
    fmt::format_to(std::back_inserter(out), "{:02x}", byte);
  return out;
}

// The position that `cursor` seals for `tool`, or nullopt when it is not a
// cursor of this manager's.
std::optional<std::string> opened_cursor(std::string_view tool, std::string_view cursor) {
  constexpr std::size_t kHexMac = 2 * kMacBytes;
  if (cursor.size() <= kHexMac) return std::nullopt;
  const std::string_view position = cursor.substr(0, cursor.size() - kHexMac);
  std::string mac;
  for (std::size_t at = cursor.size() - kHexMac; at < cursor.size(); at += 2) {
    unsigned byte = 0;
    auto [end, ec] = std::from_chars(cursor.data() + at, cursor.data() + at + 2, byte, 16);
    if (ec != std::errc() || end != cursor.data() + at + 2) return std::nullopt;
    mac.push_back(static_cast<char>(byte));
  }
  if (!cursor_key().verify(cursor_mac_input(tool, position), mac)) return std::nullopt;
  return std::string(position);
}

bool pages(QueryKind kind) {
  return kind == QueryKind::latency || kind == QueryKind::abw || kind == QueryKind::throughput;
}

// The per-packet RTTs as ms, -1 for a lost packet.
void write_rtts(XmlValueWriter& w, const PacketRtts& rtts) {
  w.begin_array();
  rtts.for_each([&](std::optional<std::int64_t> rtt_ns) {
    if (rtt_ns)
      w.scaled(*rtt_ns, 1'000'000);
    else
      w.real(-1);
  });
  w.end_array();
}

// A member in ms from a value in ns; none when the value is absent.
void member_ms(XmlValueWriter& w, const char* name, const std::optional<std::int64_t>& ns) {
  if (!ns) return;
  w.member(name);
  w.scaled(*ns, 1'000'000);
}

void write_row(XmlValueWriter& w, const ResultRow& r) {
  w.begin_struct();
  w.member("node");
  w.string(r.node);
  w.member("boot_epoch");
  w.int64(r.boot_epoch);
  w.member("seq");
  w.int64(r.seq);
  w.member("stream");
  w.string(r.stream);
  w.member("tool");
  w.string(r.tool);
  w.member("src");
  w.string(r.src);
  w.member("dst");
  w.string(r.dst);
  w.member("time");
  w.scaled(r.start_ns, 1'000'000'000);
  w.member("start_ns");
  w.int64(r.start_ns);
  w.member("status");
  w.string(r.status);
  if (r.error) {
    w.member("error");
    w.string(*r.error);
  }
  auto count = [&](const char* name, const std::optional<std::int64_t>& v) {
    if (!v) return;
    w.member(name);
    w.int32(*v);
  };
  auto bps = [&](const char* name, const std::optional<double>& v) {
    if (!v) return;
    w.member(name);
    w.real(*v);
  };
  count("sent", r.sent);
  count("received", r.received);
  count("duplicates", r.duplicates);
  member_ms(w, "rtt_min_ms", r.rtt_min_ns);
  member_ms(w, "rtt_avg_ms", r.rtt_avg_ns);
  member_ms(w, "rtt_median_ms", r.rtt_median_ns);
  member_ms(w, "rtt_max_ms", r.rtt_max_ns);
  member_ms(w, "rtt_stddev_ms", r.rtt_stddev_ns);
  if (r.rtts) {
    w.member("rtts_ms");
    write_rtts(w, *r.rtts);
  }
  bps("estimate_bps", r.estimate_bps);
  bps("lower_bps", r.lower_bps);
  bps("upper_bps", r.upper_bps);
  if (r.bytes_sent) {
    w.member("bytes_sent");
    w.int64(*r.bytes_sent);
  }
  member_ms(w, "duration_ms", r.duration_ns);
  bps("throughput_bps", r.throughput_bps);
  w.end_struct();
}

void write_path_key(XmlValueWriter& w, const std::string& tool, const std::string& src,
                    const std::string& dst) {
  w.member("tool");
  w.string(tool);
  w.member("src");
  w.string(src);
  w.member("dst");
  w.string(dst);
}

void write_summary(XmlValueWriter& w, const PathSummary& s) {
  w.begin_struct();
  write_path_key(w, s.tool, s.src, s.dst);
  w.member("count");
  w.int32(s.count);
  w.member("ok");
  w.int32(s.ok);
  w.member("sent");
  w.int64(s.sent);
  w.member("received");
  w.int64(s.received);
  if (s.loss) {
    w.member("loss");
    w.real(*s.loss);
  }
  member_ms(w, "rtt_min_ms", s.rtt_min_ns);
  member_ms(w, "rtt_p50_ms", s.rtt_p50_ns);
  member_ms(w, "rtt_p90_ms", s.rtt_p90_ns);
  member_ms(w, "rtt_p99_ms", s.rtt_p99_ns);
  if (s.bandwidth_median_bps) {
    w.member("bandwidth_median_bps");
    w.real(*s.bandwidth_median_bps);
  }
  w.member("first");
  w.scaled(s.first_ns, 1'000'000'000);
  w.member("last");
  w.scaled(s.last_ns, 1'000'000'000);
  w.end_struct();
}

void write_path(XmlValueWriter& w, const PathInfo& p) {
  w.begin_struct();
  write_path_key(w, p.tool, p.src, p.dst);
  w.member("count");
  w.int32(p.count);
  w.member("first");
  w.scaled(p.first_ns, 1'000'000'000);
  w.member("last");
  w.scaled(p.last_ns, 1'000'000'000);
  w.end_struct();
}

[[noreturn]] void unavailable(const Error& error) {
  throw ApiFault(kStorageUnavailable, "results cannot be read now: " + error.message);
}

}  // namespace

std::string_view query_method_name(QueryKind kind) {
  switch (kind) {
    case QueryKind::latency:
      return "query.latency";
    case QueryKind::abw:
      return "query.abw";
    case QueryKind::throughput:
      return "query.throughput";
    case QueryKind::summary:
      return "query.summary";
    case QueryKind::paths:
      return "query.paths";
  }
  return "query";
}

QueryArgs parse_query_args(QueryKind kind, const xmlrpc_c::paramList& params,
                           const Config& config) {
  const std::string method(query_method_name(kind));
  if (params.size() > 1)
    bad_argument(
        fmt::format("{}: expected 0 to 1 arguments (filter), got {}", method, params.size()));
  QueryArgs args;
  ResultFilter& f = args.page.filter;
  if (kind == QueryKind::latency) f.tool = Tool::kLatency;
  if (kind == QueryKind::abw) f.tool = Tool::kAbw;
  if (kind == QueryKind::throughput) f.tool = Tool::kThroughput;
  if (params.size() == 0) return args;
  const auto filter = get_struct(params[0], "filter");
  for (const auto& [key, value] : filter) {
    if (key == "src") {
      f.src = node_arg(value, "src", config);
    } else if (key == "dst") {
      f.dst = node_arg(value, "dst", config);
    } else if (key == "site") {
      f.site = get_string(value, "site");
      bool known = std::any_of(config.nodes.begin(), config.nodes.end(),
                               [&](const NodeConfig& n) { return n.site == *f.site; });
      if (!known) bad_argument(fmt::format("site: no configured node has site '{}'", *f.site));
    } else if (key == "from") {
      f.from = parse_time(value, "from");
    } else if (key == "to") {
      f.to = parse_time(value, "to");
    } else if (key == "status") {
      f.status = one_of(value, "status", kStatuses);
    } else if (key == "tool" && !pages(kind)) {
      f.tool = parse_tool(one_of(value, "tool", kToolNames));
    } else if (key == "limit" && pages(kind)) {
      args.page.limit = bounded_uint(value, "limit", 1, 10000);
    } else if (key == "cursor" && pages(kind)) {
      const std::string cursor = get_string(value, "cursor");
      if (!cursor.empty()) {
        auto position = opened_cursor(tool_name(*f.tool), cursor);
        if (!position || !is_valid_cursor(*position))
          bad_argument(
              fmt::format("cursor: {} is not one that a previous page's next_cursor returned "
                          "(cursors end when the manager restarts)",
                          "'" + escaped(cursor, 48) + "'"));
        args.page.cursor = std::move(*position);
      }
    } else if (key == "latest" && pages(kind)) {
      args.latest = get_boolean(value, "latest");
    } else {
      bad_argument(
          fmt::format("filter.{}: unknown key for {} (known: src, dst, site, from, to, status, {})",
                      key, method, pages(kind) ? "limit, cursor, latest" : "tool"));
    }
  }
  if (f.from && f.to && *f.from >= *f.to) bad_argument("from: must be before to");
  if (args.latest && !args.page.cursor.empty())
    bad_argument("cursor: latest answers in one page; it takes no cursor");
  args.page.latest_per_path = args.latest;
  return args;
}

void XmlValueWriter::end_struct() {
  if (!out_.ends_with("<struct>")) out_ += "</member>";
  out_ += "</struct></value>";
}

void XmlValueWriter::member(std::string_view name) {
  if (!out_.ends_with("<struct>")) out_ += "</member>";
  out_ += "<member><name>";
  out_ += name;
  out_ += "</name>";
}

void XmlValueWriter::string(std::string_view text) {
  out_ += "<value><string>";
  for (char ch : text) {
    switch (ch) {
      case '&':
        out_ += "&amp;";
        break;
      case '<':
        out_ += "&lt;";
        break;
      case '>':
        out_ += "&gt;";
        break;
      case '\r':
        out_ += "&#13;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 at all.
        if (static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n')
          out_ += '?';
        else
          out_ += ch;
    }
  }
  out_ += "</string></value>";
}

namespace {
// Decimal text of an integer, without allocating.
class DecimalText {
 public:
  explicit DecimalText(std::integral auto value) : text_(value) {}
  operator std::string_view() const { return {text_.data(), text_.size()}; }

 private:
  fmt::format_int text_;
};
}  // namespace

void XmlValueWriter::int32(std::int64_t value) {
  value = std::clamp<std::int64_t>(value, INT32_MIN, INT32_MAX);
  out_ += "<value><i4>";
  out_ += DecimalText(value);
  out_ += "</i4></value>";
}

void XmlValueWriter::int64(std::int64_t value) {
  out_ += "<value><i8>";
  out_ += DecimalText(value);
  out_ += "</i8></value>";
}

void XmlValueWriter::real(double value) {
  if (!std::isfinite(value)) value = 0;
  // Shortest text that reads back as the same double; XML-RPC has no
  // exponent notation, so such values are written out in fixed notation
  // with 17 significant digits instead.
  char text[32];
  auto shortest = std::to_chars(std::begin(text), std::end(text), value);
  std::string_view written(text, static_cast<std::size_t>(shortest.ptr - text));
  std::string fixed;
  if (written.find_first_of("eE") != std::string_view::npos) {
    const int exponent = static_cast<int>(std::floor(std::log10(std::fabs(value))));
    fixed = fmt::format("{:.{}f}", value, std::max(0, 16 - exponent));
    if (fixed.find('.') != std::string::npos) {
      while (fixed.back() == '0') fixed.pop_back();
      if (fixed.back() == '.') fixed.pop_back();
    }
    written = fixed;
  }
  out_ += "<value><double>";
  out_ += written;
  out_ += "</double></value>";
}

void XmlValueWriter::scaled(std::int64_t ns, std::int64_t unit_ns) {
  out_ += "<value><double>";
  // |INT64_MIN| does not fit: such a time is not a result's anyway.
  std::uint64_t magnitude =
      ns < 0 ? static_cast<std::uint64_t>(-(ns + 1)) + 1 : static_cast<std::uint64_t>(ns);
  if (ns < 0) out_ += '-';
  const auto unit = static_cast<std::uint64_t>(unit_ns);
  out_ += DecimalText(magnitude / unit);
  if (std::uint64_t fraction = magnitude % unit; fraction != 0) {
    // The fraction's digits with leading zeros kept and trailing ones dropped.
    char digits[20];
    int count = 0;
    for (std::uint64_t u = unit; u > 1; u /= 10) ++count;
    for (int i = count - 1; i >= 0; --i, fraction /= 10)
      digits[i] = static_cast<char>('0' + fraction % 10);
    while (count > 0 && digits[count - 1] == '0') --count;
    out_ += '.';
    out_.append(digits, static_cast<std::size_t>(count));
  }
  out_ += "</double></value>";
}

std::size_t XmlAnswer::size() const {
  std::size_t total = text.size();
  for (const auto& s : splices) total += s.piece->size();
  return total;
}

std::string XmlAnswer::flattened() const {
  std::string out;
  out.reserve(size());
  std::size_t from = 0;
  for (const auto& s : splices) {
    out.append(text, from, s.at - from);
    out += *s.piece;
    from = s.at;
  }
  out.append(text, from);
  return out;
}

QueryService::QueryService(const Config& config) : config_(config) {
  if (config.manager.rendered_rows_mb > 0)
    rendered_ = std::make_unique<RenderedRows>(std::size_t{config.manager.rendered_rows_mb} << 20);
}

QueryService::~QueryService() = default;

std::unique_ptr<ResultReader> QueryService::borrow() {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      auto reader = std::move(idle_.back());
      idle_.pop_back();
      return reader;
    }
  }
  try {
    return std::make_unique<ResultReader>(config_);
  } catch (const sqlite::UnwritableError& e) {
    // Reading could write the cache's -shm (sqlite::Database::unwritable).
    throw ApiFault(kStorageUnavailable, fmt::format("results cannot be read now: {}", e.what()));
  }
}

void QueryService::give_back(std::unique_ptr<ResultReader> reader) {
  std::lock_guard lock(mu_);
  idle_.push_back(std::move(reader));
}

void QueryService::write_page(const PageQuery& query, std::unique_ptr<ResultReader> reader,
                              XmlAnswer& out) {
  // Latest-per-path pages read each path apart and never by keys first.
  const bool rendered = rendered_ && !query.latest_per_path;
  std::vector<std::shared_ptr<const std::string>> held;
  HeldRow holds;
  if (rendered) {
    held.reserve(query.limit);
    holds = [&](const ResultRow& key_and_time) {
      auto xml = rendered_->find(key_and_time);
      if (!xml) {
        held.clear();
        return false;
      }
      held.push_back(std::move(xml));
      return true;
    };
  }
  auto page = reader->results(query, holds);
  give_back(std::move(reader));
  if (!page) unavailable(page.error());
  XmlValueWriter w(out.text);
  w.begin_struct();
  w.member("rows");
  w.begin_array();
  if (page->keys_only) {
    for (auto& xml : held) out.splice(std::move(xml));
  } else if (rendered) {
    std::string xml;
    for (const auto& row : page->rows) {
      xml.clear();
      XmlValueWriter row_writer(xml);
      write_row(row_writer, row);
      out.text += xml;
      rendered_->keep(row, xml);
    }
  } else {
    for (const auto& row : page->rows) write_row(w, row);
  }
  w.end_array();
  w.member("next_cursor");
  w.string(sealed_cursor(tool_name(*query.filter.tool), page->next_cursor));
  w.end_struct();
}

void QueryService::run(QueryKind kind, const QueryArgs& args, std::string& out) {
  XmlAnswer answer;
  run(kind, args, answer);
  out += answer.flattened();
}

void QueryService::run(QueryKind kind, const QueryArgs& args, XmlAnswer& out) {
  auto reader = borrow();
  XmlValueWriter w(out.text);
  if (pages(kind)) {
    write_page(args.page, std::move(reader), out);
  } else if (kind == QueryKind::summary) {
    auto summaries = reader->summary(args.page.filter);
    give_back(std::move(reader));
    if (!summaries) unavailable(summaries.error());
    w.begin_array();
    for (const auto& s : *summaries) write_summary(w, s);
    w.end_array();
  } else {
    auto paths = reader->paths(args.page.filter);
    give_back(std::move(reader));
    if (!paths) unavailable(paths.error());
    w.begin_array();
    for (const auto& p : *paths) write_path(w, p);
    w.end_array();
  }
}

}  // namespace flexmon::manager
