// The query.* methods against a real cache and a real SQLite archive: filter
// checks and their faults, the XML they write (read back by xmlrpc-c),
// cursor paging across both databases while a flush runs, summary, paths,
// latest, and the server's direct path against the registry's.

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <xmlrpc-c/xml.hpp>

#include "common/log.h"
#include "manager/call_handler.h"
#include "manager/fault_codes.h"
#include "manager/manager.h"
#include "manager/query.h"
#include "manager/rendered_rows.h"
#include "manager/xmlrpc_values.h"
#include "storage/cache.h"
#include "storage/flusher.h"
#include "tests/manager/http_post.h"
#include "tests/manager/test_config.h"
#include "tests/storage/cache_rows.h"
#include "wire.pb.h"

namespace flexmon::manager {
namespace {

using S = std::map<std::string, xmlrpc_c::value>;
xmlrpc_c::value str(const std::string& s) { return xmlrpc_c::value_string(s); }
xmlrpc_c::value num(int n) { return xmlrpc_c::value_int(n); }

constexpr UtcNs kT0 = 1'700'000'000'000'000'000;

// A whole methodResponse around one <value>, as the manager writes it.
std::string method_response(std::string_view value_xml) {
  std::string out;
  write_method_response(out, [&] { out += value_xml; });
  return out;
}

xmlrpc_c::paramList filter(const S& f) {
  xmlrpc_c::paramList p;
  p.add(xmlrpc_c::value_struct(f));
  return p;
}

// Latency results on `src`>`dst`, one per second from `first` (seconds after
// kT0); every fourth one lost two of its five packets.
void store_latency(Cache& cache, std::uint64_t epoch, const std::string& src,
                   const std::string& dst, int count, int first, std::uint64_t first_seq) {
  std::vector<wire::Result> results(static_cast<std::size_t>(count));
  std::vector<const wire::Result*> ptrs;
  for (int i = 0; i < count; ++i) {
    auto& r = results[static_cast<std::size_t>(i)];
    r.set_seq(first_seq + static_cast<std::uint64_t>(i));
    r.set_stream("latency/udp/" + src + ">" + dst);
    r.set_tool("latency");
    r.set_src(src);
    r.set_dst(dst);
    r.set_start_ns(kT0 + static_cast<UtcNs>(first + i) * 1'000'000'000);
    r.set_status(wire::OK);
    auto* l = r.mutable_latency();
    const bool lossy = i % 4 == 0;
    l->set_sent(5);
    l->set_received(lossy ? 3 : 5);
    for (int k = 0; k < 5; ++k) l->add_rtt_ns(lossy && k < 2 ? -1 : 1'000'000 + 1000 * k);
    l->set_min_ns(1'000'000);
    l->set_avg_ns(1'002'000);
    l->set_median_ns(1'002'000);
    l->set_max_ns(1'004'000);
    l->set_stddev_ns(1414);
    ptrs.push_back(&r);
  }
  cache.store(src, epoch, ptrs);
}

void store_abw(Cache& cache, std::uint64_t epoch, int count, std::uint64_t first_seq) {
  std::vector<wire::Result> results(static_cast<std::size_t>(count));
  std::vector<const wire::Result*> ptrs;
  for (int i = 0; i < count; ++i) {
    auto& r = results[static_cast<std::size_t>(i)];
    r.set_seq(first_seq + static_cast<std::uint64_t>(i));
    r.set_stream("abw/n1>n3");
    r.set_tool("abw");
    r.set_src("n1");
    r.set_dst("n3");
    r.set_start_ns(kT0 + static_cast<UtcNs>(i) * 1'000'000'000);
    r.set_status(i == 0 ? wire::ERROR : wire::OK);
    if (i == 0) r.set_error("responder said <no> & \"left\"");
    auto* a = r.mutable_abw();
    a->set_estimate_bps(50e6 + i);
    a->set_lower_bps(40e6);
    a->set_upper_bps(60e6);
    a->set_bytes_sent(123456789012);
    a->set_duration_ns(1'500'000);
    ptrs.push_back(&r);
  }
  cache.store("n1", epoch, ptrs);
}

class QueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    config_ = testing::test_config(dir_);
    // A server started by an earlier test of this process set xmlrpc-c's
    // process-wide XML size limit to its max_request_bytes; the answers
    // parsed here are larger.
    xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, XMLRPC_XML_SIZE_LIMIT_DEFAULT);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Archives everything in the cache now.
  void flush_all() {
    Config c = config_;
    c.archive.horizon_s = 0;
    auto report = flush_once(c);
    ASSERT_TRUE(report.archive_ok) << report.error;
  }

  xmlrpc_c::value ask(QueryService& service, QueryKind kind, const xmlrpc_c::paramList& p) {
    std::string xml;
    service.run(kind, parse_query_args(kind, p, config_), xml);
    xmlrpc_c::value answer;
    xmlrpc_c::xml::parseSuccessfulResponse(method_response(xml), &answer);
    return answer;
  }

  std::string fault(QueryKind kind, const xmlrpc_c::paramList& p, int* code = nullptr) {
    try {
      QueryService service(config_);
      std::string xml;
      service.run(kind, parse_query_args(kind, p, config_), xml);
    } catch (const ApiFault& f) {
      if (code) *code = f.code();
      return f.what();
    }
    return "accepted";
  }

  std::filesystem::path dir_;
  Config config_;
};

S as_struct(const xmlrpc_c::value& v) { return xmlrpc_c::value_struct(v).cvalue(); }
std::vector<xmlrpc_c::value> as_array(const xmlrpc_c::value& v) {
  return xmlrpc_c::value_array(v).vectorValueValue();
}
std::string text(const S& s, const std::string& key) {
  return xmlrpc_c::value_string(s.at(key)).cvalue();
}
double real(const S& s, const std::string& key) { return xmlrpc_c::value_double(s.at(key)); }
std::int64_t i8(const S& s, const std::string& key) { return xmlrpc_c::value_i8(s.at(key)); }
int i4(const S& s, const std::string& key) { return xmlrpc_c::value_int(s.at(key)); }

TEST_F(QueryTest, FiltersAreCheckedAndFaultsNameTheKey) {
  auto args = parse_query_args(QueryKind::latency,
                               filter({{"src", str("n1")},
                                       {"site", str("a")},
                                       {"from", num(100)},
                                       {"to", xmlrpc_c::value_datetime("19700101T00:03:20")},
                                       {"status", str("timeout")},
                                       {"limit", num(7)}}),
                               config_);
  EXPECT_EQ(args.page.filter.tool, Tool::kLatency);
  EXPECT_EQ(args.page.filter.src, "n1");
  EXPECT_EQ(args.page.filter.site, "a");
  EXPECT_EQ(args.page.filter.from, 100'000'000'000);
  EXPECT_EQ(args.page.filter.to, 200'000'000'000);
  EXPECT_EQ(args.page.filter.status, "timeout");
  EXPECT_EQ(args.page.limit, 7u);
  EXPECT_EQ(parse_query_args(QueryKind::abw, {}, config_).page.filter.tool, Tool::kAbw);
  EXPECT_EQ(parse_query_args(QueryKind::summary, filter({{"tool", str("throughput")}}), config_)
                .page.filter.tool,
            Tool::kThroughput);
  EXPECT_EQ(parse_query_args(QueryKind::paths, {}, config_).page.filter.tool, std::nullopt);

  int code = 0;
  EXPECT_EQ(fault(QueryKind::latency, filter({{"limit", num(10001)}}), &code),
            "limit: 10001 is above the limit of 10000");
  EXPECT_EQ(code, kBadArgument);
  EXPECT_EQ(fault(QueryKind::latency, filter({{"limit", num(0)}})),
            "limit: 0 is below the limit of 1");
  EXPECT_EQ(fault(QueryKind::abw, filter({{"limit", str("5")}})),
            "limit: expected an int, got string");
  EXPECT_EQ(fault(QueryKind::latency, filter({{"dst", str("n7")}}), &code),
            "unknown node 'n7' in dst");
  EXPECT_EQ(code, kUnknownNode);
  EXPECT_EQ(fault(QueryKind::paths, filter({{"site", str("mars")}})),
            "site: no configured node has site 'mars'");
  EXPECT_EQ(fault(QueryKind::summary, filter({{"status", str("fine")}})),
            "status: 'fine' is not one of error, ok, refused, resolve-failure, timeout, "
            "unreachable");
  EXPECT_EQ(fault(QueryKind::summary, filter({{"tool", str("ping")}})),
            "tool: 'ping' is not one of abw, latency, throughput");
  EXPECT_EQ(fault(QueryKind::latency, filter({{"tool", str("abw")}})),
            "filter.tool: unknown key for query.latency (known: src, dst, site, from, to, "
            "status, limit, cursor, latest)");
  EXPECT_EQ(fault(QueryKind::paths, filter({{"limit", num(5)}})),
            "filter.limit: unknown key for query.paths (known: src, dst, site, from, to, "
            "status, tool)");
  EXPECT_EQ(fault(QueryKind::latency, filter({{"from", num(5)}, {"to", num(5)}})),
            "from: must be before to");
  EXPECT_EQ(fault(QueryKind::latency, filter({{"from", str("yesterday")}})),
            "from: expected epoch seconds or dateTime.iso8601, got string");
  EXPECT_EQ(fault(QueryKind::throughput, filter({{"cursor", str("zz")}})),
            "cursor: 'zz' is not one that a previous page's next_cursor returned (cursors end "
            "when the manager restarts)");
  EXPECT_EQ(fault(QueryKind::throughput, filter({{"cursor", str("31")}})),
            "cursor: '31' is not one that a previous page's next_cursor returned (cursors end "
            "when the manager restarts)");
  EXPECT_EQ(fault(QueryKind::latency, filter({{"latest", num(1)}})),
            "latest: expected a boolean, got int");
  xmlrpc_c::paramList two = filter({});
  two.add(num(1));
  EXPECT_EQ(fault(QueryKind::latency, two),
            "query.latency: expected 0 to 1 arguments (filter), got 2");
  xmlrpc_c::paramList not_struct;
  not_struct.add(str("n1"));
  EXPECT_EQ(fault(QueryKind::paths, not_struct), "filter: expected a struct, got string");
}

TEST(XmlValueWriter, WritesWhatXmlrpcReadsBack) {
  std::string xml;
  XmlValueWriter w(xml);
  w.begin_struct();
  w.member("text");
  w.string("a<b & c>\r\x01\tz");  // xmlrpc-c reads the CR back as LF
  w.member("ms");
  w.scaled(100'074, 1'000'000);
  w.member("negative");
  w.scaled(-1'500'000, 1'000'000);
  w.member("seconds");
  w.scaled(kT0 + 5, 1'000'000'000);
  w.member("whole");
  w.scaled(3'000'000, 1'000'000);
  w.member("leading_zeros");
  w.scaled(7'000'052, 1'000'000);
  w.member("plain");
  w.real(94'000'000.25);
  w.member("million");
  w.real(1e6);
  w.member("tiny");
  w.real(1.5e-7);
  w.member("huge");
  w.real(2.5e22);
  w.member("clamped");
  w.int32(std::int64_t{1} << 40);
  w.member("exact");
  w.int64(kT0 + 1);
  w.member("empty");
  w.begin_struct();
  w.end_struct();
  w.member("list");
  w.begin_array();
  w.int32(-4);
  w.end_array();
  w.member("lowest");
  w.int64(INT64_MIN);
  w.member("earliest");
  w.scaled(INT64_MIN, 1'000'000'000);
  w.member("rows");
  w.begin_array();
  w.begin_struct();
  w.member("inner");
  w.int32(1);
  w.end_struct();
  w.begin_struct();
  w.end_struct();
  w.end_array();
  w.member("after_rows");
  w.string("");
  w.end_struct();
  EXPECT_NE(xml.find("&lt;b &amp; c&gt;&#13;?\tz"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>0.000000149999"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>249999999999999979"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>7.000052</double>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>94000000.25</double>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>1000000</double>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>3</double>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<double>-9223372036.854775808</double>"), std::string::npos) << xml;
  xmlrpc_c::value v;
  xmlrpc_c::xml::parseSuccessfulResponse(method_response(xml), &v);
  S s = as_struct(v);
  EXPECT_EQ(text(s, "text"), "a<b & c>\n?\tz");
  EXPECT_DOUBLE_EQ(real(s, "ms"), 0.100074);
  EXPECT_DOUBLE_EQ(real(s, "negative"), -1.5);
  EXPECT_DOUBLE_EQ(real(s, "seconds"), 1.7e9);
  EXPECT_DOUBLE_EQ(real(s, "whole"), 3.0);
  EXPECT_DOUBLE_EQ(real(s, "leading_zeros"), 7.000052);
  EXPECT_DOUBLE_EQ(real(s, "plain"), 94'000'000.25);
  EXPECT_DOUBLE_EQ(real(s, "million"), 1e6);
  EXPECT_DOUBLE_EQ(real(s, "tiny"), 1.5e-7);
  EXPECT_DOUBLE_EQ(real(s, "huge"), 2.5e22);
  EXPECT_EQ(i4(s, "clamped"), INT32_MAX);
  EXPECT_EQ(i8(s, "exact"), kT0 + 1);
  EXPECT_TRUE(as_struct(s.at("empty")).empty());
  EXPECT_EQ(xmlrpc_c::value_int(as_array(s.at("list")).at(0)), -4);
  EXPECT_EQ(i8(s, "lowest"), INT64_MIN);
  auto rows = as_array(s.at("rows"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(i4(as_struct(rows.at(0)), "inner"), 1);
  EXPECT_TRUE(as_struct(rows.at(1)).empty());
  EXPECT_EQ(text(s, "after_rows"), "");
}

TEST_F(QueryTest, RowsCarryEveryFieldFromBothDatabases) {
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 1, "n1", "n2", 4, 0, 1);
    store_abw(cache, 1, 3, 100);
  }
  flush_all();
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 2, "n1", "n2", 4, 4, 1);
  }
  QueryService service(config_);
  auto page = as_struct(ask(service, QueryKind::latency, {}));
  auto rows = as_array(page.at("rows"));
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_EQ(text(page, "next_cursor"), "");
  S newest = as_struct(rows.front());
  EXPECT_EQ(text(newest, "node"), "n1");
  EXPECT_EQ(i8(newest, "boot_epoch"), 2);
  EXPECT_EQ(i8(newest, "seq"), 4);
  EXPECT_EQ(text(newest, "stream"), "latency/udp/n1>n2");
  EXPECT_EQ(i8(newest, "start_ns"), kT0 + 7'000'000'000);
  EXPECT_DOUBLE_EQ(real(newest, "time"), 1'700'000'007.0);
  EXPECT_EQ(text(newest, "status"), "ok");
  EXPECT_EQ(i4(newest, "sent"), 5);
  EXPECT_EQ(i4(newest, "received"), 5);
  EXPECT_DOUBLE_EQ(real(newest, "rtt_median_ms"), 1.002);
  auto rtts = as_array(newest.at("rtts_ms"));
  ASSERT_EQ(rtts.size(), 5u);
  EXPECT_DOUBLE_EQ(xmlrpc_c::value_double(rtts[4]), 1.004);
  S lossy = as_struct(rows.back());  // archived, the first one stored
  EXPECT_EQ(i8(lossy, "boot_epoch"), 1);
  auto lost = as_array(lossy.at("rtts_ms"));
  ASSERT_EQ(lost.size(), 5u);
  EXPECT_DOUBLE_EQ(xmlrpc_c::value_double(lost[0]), -1.0);
  EXPECT_DOUBLE_EQ(xmlrpc_c::value_double(lost[2]), 1.002);
  EXPECT_EQ(lossy.count("estimate_bps"), 0u);

  auto abw = as_array(as_struct(ask(service, QueryKind::abw, {})).at("rows"));
  ASSERT_EQ(abw.size(), 3u);
  S failed = as_struct(abw.back());
  EXPECT_EQ(text(failed, "status"), "error");
  EXPECT_EQ(text(failed, "error"), "responder said <no> & \"left\"");
  EXPECT_DOUBLE_EQ(real(failed, "estimate_bps"), 50e6);
  EXPECT_EQ(i8(failed, "bytes_sent"), 123456789012);
  EXPECT_DOUBLE_EQ(real(failed, "duration_ms"), 1.5);
  EXPECT_EQ(failed.count("sent"), 0u);
  EXPECT_EQ(as_array(as_struct(ask(service, QueryKind::throughput, {})).at("rows")).size(), 0u);
  auto ok_only = as_struct(ask(service, QueryKind::abw, filter({{"status", str("ok")}})));
  EXPECT_EQ(as_array(ok_only.at("rows")).size(), 2u);
  auto site_b = ask(service, QueryKind::latency, filter({{"site", str("b")}}));
  EXPECT_EQ(as_array(as_struct(site_b).at("rows")).size(), 0u);
  auto window = ask(service, QueryKind::latency,
                    filter({{"from", num(1'700'000'002)}, {"to", num(1'700'000'005)}}));
  EXPECT_EQ(as_array(as_struct(window).at("rows")).size(), 3u);
}

TEST_F(QueryTest, CursorPagesCoverEveryRowOnceWhileAFlushRuns) {
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 1, "n1", "n2", 300, 0, 1);
    store_latency(cache, 1, "n2", "n3", 300, 0, 1000);
  }
  Config flushing = config_;
  flushing.archive.horizon_s = 0;
  flushing.archive.retention_s = 0;
  flushing.archive.flush_batch_rows = 50;
  QueryService service(config_);
  std::vector<std::tuple<std::string, std::int64_t, std::int64_t>> seen;
  std::string cursor;
  bool last = false;
  int pages = 0;
  auto next_page = [&] {
    if (last) return;
    S f{{"limit", num(23)}};
    if (!cursor.empty()) f.emplace("cursor", str(cursor));
    auto page = as_struct(ask(service, QueryKind::latency, filter(f)));
    for (const auto& row : as_array(page.at("rows"))) {
      S r = as_struct(row);
      seen.emplace_back(text(r, "node"), i8(r, "boot_epoch"), i8(r, "seq"));
    }
    cursor = text(page, "next_cursor");
    last = cursor.empty();
    ++pages;
  };
  // A page at every step of the flush: rows move from the cache to the
  // archive and are deleted from the cache between pages.
  auto report = flush_once(flushing, [&](std::string_view) { next_page(); });
  ASSERT_TRUE(report.archive_ok) << report.error;
  EXPECT_EQ(test::count_cache_results(config_.collector.cache_db), 0);
  EXPECT_GT(pages, 5);
  while (!last) next_page();
  std::set<std::tuple<std::string, std::int64_t, std::int64_t>> distinct(seen.begin(), seen.end());
  EXPECT_EQ(seen.size(), 600u);
  EXPECT_EQ(distinct.size(), 600u);
}

// The text of a cursor as the reader encodes a position (storage/reader.cpp):
// hex of "1:start_ns:boot_epoch:seq:node". Before cursors were sealed, any
// such text was taken for a cursor that a page had returned.
std::string position_text(std::int64_t start_ns, int epoch, int seq, const std::string& node) {
  std::string out;
  for (unsigned char c : fmt::format("1:{}:{}:{}:{}", start_ns, epoch, seq, node))
    out += fmt::format("{:02x}", c);
  return out;
}

TEST_F(QueryTest, CursorsThatNoPageReturnedAreRefused) {
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 1, "n1", "n2", 30, 0, 1);
  }
  QueryService service(config_);
  const std::string cursor = text(
      as_struct(ask(service, QueryKind::latency, filter({{"limit", num(10)}}))), "next_cursor");
  ASSERT_FALSE(cursor.empty());
  // The cursor works, and takes the next page.
  auto page = as_struct(
      ask(service, QueryKind::latency, filter({{"limit", num(10)}, {"cursor", str(cursor)}})));
  EXPECT_EQ(as_array(page.at("rows")).size(), 10u);

  std::string altered = cursor;
  altered.back() = altered.back() == '0' ? '1' : '0';
  const std::vector<std::pair<QueryKind, std::string>> refused = {
      // A position in the valid format, of a row that exists.
      {QueryKind::latency, position_text(kT0 + 20'000'000'000, 1, 21, "n1")},
      {QueryKind::latency, cursor.substr(0, cursor.size() - 64)},
      {QueryKind::latency, altered},
      {QueryKind::latency, cursor + "00"},
      // Another tool's pages.
      {QueryKind::abw, cursor},
  };
  for (const auto& [kind, forged] : refused) {
    int code = 0;
    const std::string message = fault(kind, filter({{"cursor", str(forged)}}), &code);
    EXPECT_EQ(code, kBadArgument) << forged;
    EXPECT_EQ(message, "cursor: '" + escaped(forged, 48) +
                           "' is not one that a previous page's next_cursor returned (cursors "
                           "end when the manager restarts)");
  }
}

// Many results share each start time (the databases are asked to order by
// time only, and LIMIT cuts such a group anywhere): pages still follow the
// full order (newest first, then node, epoch, seq) with no row twice or
// missed, across the archive and the cache.
TEST_F(QueryTest, PagesCutThroughResultsThatShareAStartTime) {
  using Key = std::tuple<UtcNs, std::string, std::int64_t, std::int64_t>;
  std::vector<Key> stored;
  auto store_ties = [&](std::uint64_t epoch, std::uint64_t first_seq) {
    Cache cache(config_.collector.cache_db);
    for (std::string node : {"n3", "n1", "n2"}) {
      std::vector<wire::Result> results(40);
      std::vector<const wire::Result*> ptrs;
      for (int i = 0; i < 40; ++i) {
        auto& r = results[static_cast<std::size_t>(i)];
        r.set_seq(first_seq + static_cast<std::uint64_t>(39 - i));
        r.set_stream("latency/udp/" + node + ">n2");
        r.set_tool("latency");
        r.set_src(node);
        r.set_dst("n2");
        r.set_start_ns(kT0 + (i / 20) * 1'000'000'000);
        r.set_status(wire::TIMEOUT);
        ptrs.push_back(&r);
        stored.emplace_back(r.start_ns(), node, static_cast<std::int64_t>(epoch),
                            static_cast<std::int64_t>(r.seq()));
      }
      cache.store(node, epoch, ptrs);
    }
  };
  store_ties(1, 1);
  flush_all();
  store_ties(2, 1);
  std::sort(stored.begin(), stored.end(), [](const Key& a, const Key& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
    return std::tie(std::get<1>(a), std::get<2>(a), std::get<3>(a)) <
           std::tie(std::get<1>(b), std::get<2>(b), std::get<3>(b));
  });
  QueryService service(config_);
  std::vector<Key> seen;
  std::string cursor;
  do {
    S f{{"limit", num(7)}};
    if (!cursor.empty()) f.emplace("cursor", str(cursor));
    auto page = as_struct(ask(service, QueryKind::latency, filter(f)));
    for (const auto& row : as_array(page.at("rows"))) {
      S r = as_struct(row);
      seen.emplace_back(i8(r, "start_ns"), text(r, "node"), i8(r, "boot_epoch"), i8(r, "seq"));
    }
    cursor = text(page, "next_cursor");
  } while (!cursor.empty() && seen.size() <= stored.size());
  EXPECT_EQ(seen, stored);
}

// The archive's rows are not all older than the cache's: a prober that was
// cut off sends old results late. Rows of the two databases alternate in
// time here (even seconds archived, odd ones in the cache, with runs of
// each), and every page size still gives every row once, newest first.
TEST_F(QueryTest, PagesMergeDatabasesWhoseRowsInterleaveInTime) {
  std::vector<int> archived, cached;
  for (int second = 0; second < 90; ++second)
    (second % 3 == 0 || (second > 40 && second < 60) ? archived : cached).push_back(second);
  auto store_seconds = [&](const std::vector<int>& seconds, std::uint64_t epoch) {
    Cache cache(config_.collector.cache_db);
    for (std::size_t i = 0; i < seconds.size(); ++i)
      store_latency(cache, epoch, "n1", "n2", 1, seconds[i], i + 1);
  };
  store_seconds(archived, 1);
  flush_all();
  store_seconds(cached, 2);
  QueryService service(config_);
  for (int limit : {1, 2, 5, 13, 89, 90, 91}) {
    std::vector<std::int64_t> seen;
    std::string cursor;
    do {
      S f{{"limit", num(limit)}};
      if (!cursor.empty()) f.emplace("cursor", str(cursor));
      auto page = as_struct(ask(service, QueryKind::latency, filter(f)));
      for (const auto& row : as_array(page.at("rows")))
        seen.push_back((i8(as_struct(row), "start_ns") - kT0) / 1'000'000'000);
      cursor = text(page, "next_cursor");
    } while (!cursor.empty() && seen.size() <= 90);
    std::vector<std::int64_t> expected(90);
    for (int i = 0; i < 90; ++i) expected[static_cast<std::size_t>(i)] = 89 - i;
    EXPECT_EQ(seen, expected) << "limit " << limit;
  }
}

// Pages sent from rows kept as XML are the same bytes as pages read whole,
// and still show every result committed before the call (the rows a page
// holds are read from the databases each time; only their text is kept).
TEST_F(QueryTest, PagesFromRenderedRowsAreThePagesReadWhole) {
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 1, "n1", "n2", 120, 0, 1);
    store_abw(cache, 1, 30, 1000);
  }
  flush_all();
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 2, "n1", "n2", 60, 200, 1);
  }
  Config unrendered = config_;
  unrendered.manager.rendered_rows_mb = 0;
  ASSERT_GT(config_.manager.rendered_rows_mb, 0u);
  QueryService rendering(config_), reading(unrendered);
  auto answer = [&](QueryService& service, QueryKind kind, const S& f) {
    std::string xml;
    service.run(kind, parse_query_args(kind, filter(f), config_), xml);
    return xml;
  };
  auto same_pages = [&](QueryKind kind, int limit, std::uint64_t* rows_newest = nullptr) {
    std::string cursor;
    for (int page = 0; page < 4; ++page) {
      S f{{"limit", num(limit)}};
      if (!cursor.empty()) f.emplace("cursor", str(cursor));
      const std::string whole = answer(reading, kind, f);
      for (int again = 0; again < 3; ++again)
        ASSERT_EQ(answer(rendering, kind, f), whole) << "limit " << limit << " page " << page;
      xmlrpc_c::value v;
      xmlrpc_c::xml::parseSuccessfulResponse(method_response(whole), &v);
      auto rows = as_array(as_struct(v).at("rows"));
      if (page == 0 && rows_newest && !rows.empty())
        *rows_newest = static_cast<std::uint64_t>(i8(as_struct(rows.front()), "start_ns"));
      cursor = text(as_struct(v), "next_cursor");
      if (cursor.empty()) break;
    }
  };
  for (int limit : {1, 7, 100}) same_pages(QueryKind::latency, limit);
  same_pages(QueryKind::abw, 10);
  // Results committed after the rows were kept: the next page has them.
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 3, "n1", "n2", 5, 400, 1);
  }
  std::uint64_t newest = 0;
  same_pages(QueryKind::latency, 7, &newest);
  EXPECT_EQ(newest, static_cast<std::uint64_t>(kT0 + 404LL * 1'000'000'000));
}

TEST(RenderedRows, KeepsTheRowsLastShownWithinItsBudget) {
  constexpr std::size_t kBudget = 1 << 20, kRowBytes = 1000;
  RenderedRows rendered(kBudget);
  auto row = [](std::int64_t seq) {
    ResultRow r;
    r.node = "n1";
    r.boot_epoch = 1;
    r.seq = seq;
    r.start_ns = kT0 + seq;
    return r;
  };
  for (std::int64_t seq = 0; seq < 10'000; ++seq)
    rendered.keep(row(seq), std::string(kRowBytes, static_cast<char>('a' + seq % 26)));
  for (std::int64_t seq = 9'900; seq < 10'000; ++seq) EXPECT_TRUE(rendered.find(row(seq))) << seq;
  std::size_t found = 0;
  for (std::int64_t seq = 0; seq < 10'000; ++seq) {
    auto xml = rendered.find(row(seq));
    if (!xml) continue;
    ++found;
    EXPECT_EQ(*xml, std::string(kRowBytes, static_cast<char>('a' + seq % 26)));
  }
  EXPECT_LE(found * kRowBytes, kBudget);
  EXPECT_GT(found, 100u);
  // The same key at another time is another result (a prober that lost its
  // disk counts from the same epoch again).
  ResultRow reused = row(9'999);
  reused.start_ns += 1;
  EXPECT_FALSE(rendered.find(reused));
}

TEST_F(QueryTest, SummaryPathsAndLatestSpanBothDatabases) {
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 1, "n1", "n2", 8, 0, 1);
    store_latency(cache, 1, "n2", "n3", 4, 0, 100);
    store_abw(cache, 1, 3, 200);
  }
  flush_all();
  {
    Cache cache(config_.collector.cache_db);
    store_latency(cache, 2, "n1", "n2", 4, 8, 1);
  }
  QueryService service(config_);
  auto summaries = as_array(ask(service, QueryKind::summary, {}));
  ASSERT_EQ(summaries.size(), 3u);
  S abw = as_struct(summaries[0]);
  EXPECT_EQ(text(abw, "tool"), "abw");
  EXPECT_EQ(i4(abw, "count"), 3);
  EXPECT_EQ(i4(abw, "ok"), 2);
  EXPECT_NEAR(real(abw, "bandwidth_median_bps"), 50e6, 50e6 * 0.005);
  EXPECT_EQ(abw.count("loss"), 0u);
  S one_two = as_struct(summaries[1]);
  EXPECT_EQ(text(one_two, "src") + text(one_two, "dst"), "n1n2");
  EXPECT_EQ(i4(one_two, "count"), 12);
  EXPECT_EQ(i8(one_two, "sent"), 60);
  EXPECT_EQ(i8(one_two, "received"), 54);  // 3 of 12 results lost 2 packets
  EXPECT_DOUBLE_EQ(real(one_two, "loss"), 6.0 / 60.0);
  EXPECT_DOUBLE_EQ(real(one_two, "rtt_min_ms"), 1.0);
  EXPECT_NEAR(real(one_two, "rtt_p99_ms"), 1.004, 1.004 * 0.005);
  EXPECT_DOUBLE_EQ(real(one_two, "first"), 1'700'000'000.0);
  EXPECT_DOUBLE_EQ(real(one_two, "last"), 1'700'000'011.0);
  auto latency_only =
      as_array(ask(service, QueryKind::summary, filter({{"tool", str("latency")}})));
  EXPECT_EQ(latency_only.size(), 2u);

  auto paths = as_array(ask(service, QueryKind::paths, filter({{"src", str("n1")}})));
  ASSERT_EQ(paths.size(), 2u);
  S p = as_struct(paths[1]);
  EXPECT_EQ(text(p, "tool") + text(p, "dst"), "latencyn2");
  EXPECT_EQ(i4(p, "count"), 12);

  // n2>n3's newest is archived, n1>n2's is in the cache.
  auto latest = as_struct(
      ask(service, QueryKind::latency, filter({{"latest", xmlrpc_c::value_boolean(true)}})));
  auto rows = as_array(latest.at("rows"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(i8(as_struct(rows[0]), "start_ns"), kT0 + 11'000'000'000);
  EXPECT_EQ(i8(as_struct(rows[0]), "boot_epoch"), 2);
  EXPECT_EQ(text(as_struct(rows[1]), "src"), "n2");
  EXPECT_EQ(i8(as_struct(rows[1]), "start_ns"), kT0 + 3'000'000'000);
  EXPECT_EQ(text(latest, "next_cursor"), "");
}

// One call over HTTP (Connection: close); the response body.
std::string call(std::uint16_t port, const std::string& auth, const std::string& body) {
  int fd = testing::dial_loopback(port);
  EXPECT_GE(fd, 0) << "connect to 127.0.0.1:" << port << ": " << std::strerror(errno);
  auto out = testing::post_xmlrpc(fd, auth, body);
  auto at = out.find("\r\n\r\n");
  return at == std::string::npos ? out : out.substr(at + 4);
}

// Basic credentials of the test config's user bob.
const std::string kBobAuth = testing::kBobAuth;

// A manager started on a cache that holds `rows` latency results n1 -> n2.
std::unique_ptr<ManagerDaemon> start_manager_on_rows(const Config& config, int rows) {
  {
    Cache cache(config.collector.cache_db);
    store_latency(cache, 1, "n1", "n2", rows, 0, 1);
  }
  configure_xmlrpc_limits(config.manager);
  return start_manager_daemon(config);
}

// A query inside system.multicall answers the rows of the direct call; it
// answered fault 5000 once the page passed manager.max_request_bytes (64 KiB
// here, 100 rows are ~160 KB), as the method read its own answer back under
// xmlrpc-c's size limit for requests.
// Parses an answer larger than the manager's max_request_bytes, which is
// xmlrpc-c's process-wide size limit of XML, this client's too; restores it.
void parse_large(const std::string& response, xmlrpc_c::value* answer, std::size_t limit) {
  xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, std::size_t{64} << 20);
  xmlrpc_c::xml::parseSuccessfulResponse(response, answer);
  xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, limit);
}

TEST_F(QueryTest, ServerAnswersDirectlyAndInAMulticallAlike) {
  auto manager = start_manager_on_rows(config_, 300);
  const auto port = manager->xmlrpc_port();
  S f{{"src", str("n1")}, {"limit", num(100)}};
  xmlrpc_c::paramList params = filter(f);
  std::string direct_call;
  xmlrpc_c::xml::generateCall("query.latency", params, &direct_call);
  const std::string direct_answer = call(port, kBobAuth, direct_call);
  ASSERT_GT(direct_answer.size(), config_.manager.max_request_bytes);
  xmlrpc_c::value direct;
  parse_large(direct_answer, &direct, config_.manager.max_request_bytes);

  xmlrpc_c::paramList multi;
  multi.add(xmlrpc_c::value_array(xmlrpc_c::carray{
      xmlrpc_c::value_struct(
          {{"methodName", str("query.latency")},
           {"params", xmlrpc_c::value_array(xmlrpc_c::carray{xmlrpc_c::value_struct(f)})}}),
      xmlrpc_c::value_struct({{"methodName", str("query.paths")},
                              {"params", xmlrpc_c::value_array(xmlrpc_c::carray())}})}));
  std::string multi_call;
  xmlrpc_c::xml::generateCall("system.multicall", multi, &multi_call);
  xmlrpc_c::value in_multicall;
  parse_large(call(port, kBobAuth, multi_call), &in_multicall, config_.manager.max_request_bytes);
  const auto results = as_array(in_multicall);
  ASSERT_EQ(results.size(), 2u);
  if (results[0].type() == xmlrpc_c::value::TYPE_STRUCT)
    FAIL() << "a fault: " << text(as_struct(results[0]), "faultString");
  // Written out by xmlrpc-c, both answers are the same text.
  std::string a, b;
  xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(direct), &a);
  xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(as_array(results[0]).at(0)), &b);
  EXPECT_EQ(a, b);
  EXPECT_EQ(as_array(as_struct(direct).at("rows")).size(), 100u);
  ASSERT_EQ(results[1].type(), xmlrpc_c::value::TYPE_ARRAY);
  EXPECT_EQ(as_array(as_array(results[1]).at(0)).size(), 1u);  // one path

  xmlrpc_c::rpcOutcome outcome;
  xmlrpc_c::xml::parseResponse(call(port, "", direct_call), &outcome);
  ASSERT_FALSE(outcome.succeeded());
  // As int: xmlrpc-c's fault::code_t enum has no enumerator for our codes, so
  // reading it as that enum type is undefined behaviour (UBSan says so).
  EXPECT_EQ(static_cast<int>(outcome.getFault().getCode()), kNotAuthenticated);
  std::string bad_call;
  xmlrpc_c::xml::generateCall("query.summary", filter({{"limit", num(3)}}), &bad_call);
  xmlrpc_c::xml::parseResponse(call(port, kBobAuth, bad_call), &outcome);
  ASSERT_FALSE(outcome.succeeded());
  EXPECT_EQ(static_cast<int>(outcome.getFault().getCode()), kBadArgument);
  // A malformed body naming a query method gets a parse error.
  xmlrpc_c::xml::parseResponse(
      call(port, kBobAuth, "<methodCall><methodName>query.paths</methodName><params><param>"),
      &outcome);
  ASSERT_FALSE(outcome.succeeded());
  EXPECT_EQ(static_cast<int>(outcome.getFault().getCode()), kParseError);
  manager->stop();
}

// Rows kept as XML are sent spliced into the answer (one sendmsg of many
// parts): asked again, a page is the same bytes, also when the answer is far
// larger than the socket's buffer and goes out in many partial sends.
TEST_F(QueryTest, ServerSendsKeptRowsAsTheSameBytes) {
  auto manager = start_manager_on_rows(config_, 3000);
  const auto port = manager->xmlrpc_port();
  for (int limit : {10, 3000}) {
    std::string page_call;
    xmlrpc_c::xml::generateCall("query.latency", filter({{"limit", num(limit)}}), &page_call);
    const std::string first = call(port, kBobAuth, page_call);
    std::size_t rows = 0;
    for (auto at = first.find("<name>node</name>"); at != std::string::npos;
         at = first.find("<name>node</name>", at + 1))
      ++rows;
    EXPECT_EQ(rows, static_cast<std::size_t>(limit));
    for (int again = 0; again < 2; ++again)
      EXPECT_TRUE(call(port, kBobAuth, page_call) == first) << "limit " << limit;
  }
  manager->stop();
}

}  // namespace
}  // namespace flexmon::manager
