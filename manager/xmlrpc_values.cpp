#include "manager/xmlrpc_values.h"

#include <fmt/format.h>
#include <xmlrpc-c/xml.hpp>

#include "manager/fault_codes.h"

namespace flexmon::manager {

using V = xmlrpc_c::value;

void bad_argument(const std::string& message) { throw ApiFault(kBadArgument, message); }

std::string type_name(const V& v) {
  switch (v.type()) {
    case V::TYPE_INT:
      return "int";
    case V::TYPE_BOOLEAN:
      return "boolean";
    case V::TYPE_DOUBLE:
      return "double";
    case V::TYPE_DATETIME:
      return "dateTime.iso8601";
    case V::TYPE_STRING:
      return "string";
    case V::TYPE_BYTESTRING:
      return "base64";
    case V::TYPE_ARRAY:
      return "array";
    case V::TYPE_STRUCT:
      return "struct";
    case V::TYPE_NIL:
      return "nil";
    case V::TYPE_I8:
      return "i8";
    default:
      return "an unsupported type";
  }
}

std::string sanitized(std::string_view text) {
  std::string out(text.substr(0, 64));
  if (text.size() > 64) out += "...";
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

std::string in_quotes(std::string_view text) { return "'" + sanitized(text) + "'"; }

void expect_type(const V& v, V::type_t type, const std::string& name, const char* what) {
  if (v.type() != type)
    bad_argument(fmt::format("{}: expected {}, got {}", name, what, type_name(v)));
}

std::string get_string(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_STRING, name, "a string");
  return xmlrpc_c::value_string(v).cvalue();
}

bool get_boolean(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_BOOLEAN, name, "a boolean");
  return xmlrpc_c::value_boolean(v).cvalue();
}

xmlrpc_c::cstruct get_struct(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_STRUCT, name, "a struct");
  return xmlrpc_c::value_struct(v).cvalue();
}

xmlrpc_c::carray get_array(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_ARRAY, name, "an array");
  return xmlrpc_c::value_array(v).cvalue();
}

std::int64_t get_int(const V& v, const std::string& name) {
  switch (v.type()) {
    case V::TYPE_INT:
      return xmlrpc_c::value_int(v).cvalue();
    case V::TYPE_I8:
      return xmlrpc_c::value_i8(v).cvalue();
    default:
      bad_argument(fmt::format("{}: expected an int, got {}", name, type_name(v)));
  }
}

std::uint32_t bounded_uint(const V& v, const std::string& name, std::uint32_t min,
                           std::uint32_t max) {
  std::int64_t x = get_int(v, name);
  if (x < min) bad_argument(fmt::format("{}: {} is below the limit of {}", name, x, min));
  if (x > max) bad_argument(fmt::format("{}: {} is above the limit of {}", name, x, max));
  return static_cast<std::uint32_t>(x);
}

std::string node_arg(const V& v, const std::string& name, const Config& config) {
  std::string id = get_string(v, name);
  if (!config.find_node(id))
    throw ApiFault(kUnknownNode, fmt::format("unknown node {} in {}", in_quotes(id), name));
  return id;
}

void write_fault_response(int code, const std::string& message, std::string& out) {
  xmlrpc_c::xml::generateResponse(
      xmlrpc_c::rpcOutcome(xmlrpc_c::fault(message, static_cast<xmlrpc_c::fault::code_t>(code))),
      &out);
}

}  // namespace flexmon::manager
