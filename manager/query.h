// The query.* methods (schemas/xmlrpc-api.md): their filters checked from
// XML-RPC values, a pool of ResultReaders over the cache and the archive, and
// the answers written as XML-RPC text directly. A 100-row page built as
// xmlrpc-c values cost ~2,000 value objects, each with its own malloc and
// mutex, and a response buffer grown by realloc: most of the call's time.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <xmlrpc-c/base.hpp>

#include "common/config.h"
#include "storage/reader.h"

namespace flexmon::manager {

enum class QueryKind { latency, abw, throughput, summary, paths };

// The method's name ("query.latency", ...).
std::string_view query_method_name(QueryKind kind);

// What a query method was asked, checked. Throws ApiFault (4001 naming the
// key, 4002 for an unknown node).
struct QueryArgs {
  PageQuery page;       // page.filter.tool: set by the method, or `tool` (summary, paths)
  bool latest = false;  // the newest result of each path only
};
QueryArgs parse_query_args(QueryKind kind, const xmlrpc_c::paramList& params, const Config& config);

// Appends XML-RPC values as text. Strings are escaped; doubles never use an
// exponent (XML-RPC has none).
class XmlValueWriter {
 public:
  explicit XmlValueWriter(std::string& out) : out_(out) {}
  void begin_struct() { out_ += "<value><struct>"; }
  void end_struct();
  void begin_array() { out_ += "<value><array><data>"; }
  void end_array() { out_ += "</data></array></value>"; }
  // A member's name; its value follows.
  void member(std::string_view name);
  void string(std::string_view text);
  void int32(std::int64_t value);  // clamped to the i4 range
  void int64(std::int64_t value);  // <i8>
  void real(double value);         // non-finite values are written as 0
  // ns as a decimal of `unit_ns` (1e6: ms, 1e9: s), exactly.
  void scaled(std::int64_t ns, std::int64_t unit_ns);

 private:
  std::string& out_;
};

// An answer's XML as text with pieces kept elsewhere spliced in: the query
// methods send rows kept as XML (manager.rendered_rows_mb) without copying
// them into the answer; the server hands text and pieces to one sendmsg.
struct XmlAnswer {
  struct Splice {
    std::size_t at = 0;  // offset in `text` where `piece` goes
    std::shared_ptr<const std::string> piece;
  };
  std::string text;
  std::vector<Splice> splices;  // in order of `at`

  void clear() {
    text.clear();
    splices.clear();
  }
  // Appends `piece` after what is written so far, without copying it.
  void splice(std::shared_ptr<const std::string> piece) {
    splices.push_back({text.size(), std::move(piece)});
  }
  std::size_t size() const;
  // The whole answer as one string.
  std::string flattened() const;
};

class RenderedRows;

// Read access to results through ResultReaders lent one call at a time. Rows
// of pages are kept as XML (config.manager.rendered_rows_mb) and sent again
// when a later page shows them.
class QueryService {
 public:
  explicit QueryService(const Config& config);
  ~QueryService();
  QueryService(const QueryService&) = delete;
  QueryService& operator=(const QueryService&) = delete;

  // Appends the answer (one <value>) to `out`, with rows kept as XML
  // spliced in. Throws ApiFault: 4001 for a bad cursor, 5030 when the
  // archive cannot be read.
  void run(QueryKind kind, const QueryArgs& args, XmlAnswer& out);
  // The same, flattened into one string.
  void run(QueryKind kind, const QueryArgs& args, std::string& out);

 private:
  std::unique_ptr<ResultReader> borrow();
  void give_back(std::unique_ptr<ResultReader> reader);

  // Appends a page's answer: rows from `rendered_` where it holds them all.
  void write_page(const PageQuery& query, std::unique_ptr<ResultReader> reader, XmlAnswer& out);

  const Config& config_;
  std::unique_ptr<RenderedRows> rendered_;  // null when off
  std::mutex mu_;
  std::vector<std::unique_ptr<ResultReader>> idle_;  // guarded by mu_
};

}  // namespace flexmon::manager
