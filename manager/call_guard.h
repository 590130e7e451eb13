// The check every XML-RPC request body passes before xmlrpc-c's parser reads
// it. Debian's xmlrpc-c 1.33 cannot be given outside bytes unchecked: its
// parser crashes on an <i8> whose text is not a 64-bit integer (a format
// string with a missing argument: "1x", "5 ", "-", 2^63), expands the
// entities of a DTD without bound (538 bytes cost 5-7.5 s of CPU and ~128 MB),
// and takes values that are not what their type says (<double>nan</double>,
// <double>0x10</double>, <base64>!!!!</base64>, 2026-02-31, text beside a
// type element). CallGuard accepts exactly the calls of the XML-RPC spec and
// of the extensions xmlrpc-c's and Python's clients send, and refuses
// everything else, cheaply, with a message that names what was wrong and
// where. The grammar it accepts is in schemas/xmlrpc-api.md ("What a call
// may be").
//
// Why expat (Debian's libexpat1, 2.5) reads the XML, and not a scanner of our
// own: well-formed XML is more than the grammar above (valid UTF-8, the
// characters XML allows, character references, CDATA sections, comments, the
// XML declaration, attribute quoting), and expat has had each of those fuzzed
// for years. It costs less than xmlrpc-c's own parse, which every accepted
// body still gets: 7-14 us against 50-74 us for a 450-byte query.latency
// call, 0.7-1.0 ms against 1.7-2.3 ms for a 60 KB probe.request
// (bench/run-refusals, medians of 5, two sets on a loaded 2-core VM). A DTD
// is refused at its first declaration, before expat reads an entity.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "manager/fault_codes.h"

namespace flexmon::manager {

// A body that passed: its method's name.
struct CheckedCall {
  std::string method;
};

// A body that did not, and why.
struct CallRefusal {
  // kParseError: the body is not an XML-RPC call; kBadArgument: a value's
  // text is not one of its type (an <i8> that is no 64-bit integer, an
  // impossible date, ...).
  FaultCode code;
  std::string message;
};

class CallGuard {
 public:
  // `max_nesting`: the deepest nesting of <value> elements, a parameter's own
  // value being 1, as xmlrpc-c's XMLRPC_NESTING_LIMIT_ID counts it.
  explicit CallGuard(unsigned max_nesting) : max_nesting_(max_nesting) {}

  // One pass of expat over `body`, stopped at the first problem. Thread-safe.
  std::variant<CheckedCall, CallRefusal> check(std::string_view body) const;

 private:
  unsigned max_nesting_;
};

}  // namespace flexmon::manager
