// XML-RPC values in and out of the API's methods: the checks that read one
// argument (each throws ApiFault kBadArgument, 4001, with a message that
// names the argument; node_arg kUnknownNode, 4002), and the one writer of a
// whole methodResponse, an answer's or a fault's. The rules of the methods'
// arguments (limits of a spec, query filters) are in manager/spec.h and
// manager/query.h; these are the pieces they share.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <xmlrpc-c/base.hpp>

#include "common/config.h"

namespace flexmon::manager {

// Throws ApiFault(kBadArgument, message).
[[noreturn]] void bad_argument(const std::string& message);

// The XML-RPC type name of a value, for messages ("struct", "int", ...).
std::string type_name(const xmlrpc_c::value& value);

// A caller's text for a message: at most 64 bytes (then "..."), control
// characters as '?'. in_quotes() puts it in single quotes.
std::string sanitized(std::string_view text);
std::string in_quotes(std::string_view text);

// Each of these names the argument `name` in its fault: "NAME: expected a
// string, got int".
void expect_type(const xmlrpc_c::value& value, xmlrpc_c::value::type_t type,
                 const std::string& name, const char* what);
std::string get_string(const xmlrpc_c::value& value, const std::string& name);
bool get_boolean(const xmlrpc_c::value& value, const std::string& name);
xmlrpc_c::cstruct get_struct(const xmlrpc_c::value& value, const std::string& name);
xmlrpc_c::carray get_array(const xmlrpc_c::value& value, const std::string& name);
std::int64_t get_int(const xmlrpc_c::value& value, const std::string& name);  // int or i8
// An int or i8 within min..max: "NAME: 0 is below the limit of 1".
std::uint32_t bounded_uint(const xmlrpc_c::value& value, const std::string& name, std::uint32_t min,
                           std::uint32_t max);

// The id of a node of config.nodes; kUnknownNode for any other string.
std::string node_arg(const xmlrpc_c::value& value, const std::string& name, const Config& config);

// What goes before and after the answer's <value> in a methodResponse, as
// xmlrpc-c writes them: an answer the manager writes itself cannot be told
// from one of xmlrpc-c's registry.
inline constexpr std::string_view kResponseHead =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<methodResponse>\r\n<params>\r\n<param>";
inline constexpr std::string_view kResponseTail = "</param>\r\n</params>\r\n</methodResponse>\r\n";

// Appends a whole methodResponse to `out`: the head, what `write_value()`
// appends to `out` (one <value> element), the tail.
template <typename WriteValue>
void write_method_response(std::string& out, WriteValue&& write_value) {
  out += kResponseHead;
  write_value();
  out += kResponseTail;
}

// Replaces `out` with a whole methodResponse that is the fault (code,
// message), as xmlrpc-c writes one.
void write_fault_response(int code, const std::string& message, std::string& out);

}  // namespace flexmon::manager
