#include "manager/call_guard.h"

#include <expat.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "common/log.h"
#include "manager/base64.h"

namespace flexmon::manager {

namespace {

// What each element of a call is. The scalar kinds are the value types.
enum class Kind {
  method_call,
  method_name,
  params,
  param,
  value,
  member,
  name,
  data,
  array,
  structure,
  int32,
  int64,
  boolean,
  real,
  date_time,
  base64,
  string,
  nil,
};

struct ValueType {
  std::string_view tag;
  Kind kind;
};

// The value types: XML-RPC's, and the extensions xmlrpc-c's clients send
// (<i8> and <nil/>, or <ex:i8> and <ex:nil/> in its Apache dialect).
constexpr ValueType kValueTypes[] = {
    {"string", Kind::string}, {"int", Kind::int32},
    {"i4", Kind::int32},      {"i8", Kind::int64},
    {"ex:i8", Kind::int64},   {"boolean", Kind::boolean},
    {"double", Kind::real},   {"dateTime.iso8601", Kind::date_time},
    {"base64", Kind::base64}, {"struct", Kind::structure},
    {"array", Kind::array},   {"nil", Kind::nil},
    {"ex:nil", Kind::nil},
};

const ValueType* value_type(std::string_view tag) {
  for (const auto& t : kValueTypes)
    if (t.tag == tag) return &t;
  return nullptr;
}

// Text a scalar's check reads: longer texts are refused without being kept
// (the longest correct one, a <double> near 1.8e308 in fixed notation with
// 17 fraction digits, has ~330 characters).
constexpr std::size_t kMaxScalarBytes = 1024;
// Names of methods are short; a longer one is not a call to this manager.
constexpr std::size_t kMaxMethodNameBytes = 256;
// What messages quote of outside text.
constexpr std::size_t kQuotedBytes = 48;

bool is_xml_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool all_space(std::string_view text) {
  for (char c : text)
    if (!is_xml_space(c)) return false;
  return true;
}

std::string quoted(std::string_view text) { return "'" + escaped(text, kQuotedBytes) + "'"; }

// Whether `text` is an integer of [min, max] as XML-RPC writes one: an
// optional sign and decimal digits (leading zeros allowed).
bool is_integer_in(std::string_view text, std::int64_t min, std::int64_t max) {
  bool negative = false;
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  if (text.empty()) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  while (text.size() > 1 && text.front() == '0') text.remove_prefix(1);
  std::uint64_t magnitude = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), magnitude);
  if (ec != std::errc() || end != text.data() + text.size()) return false;
  const std::uint64_t limit =
      negative ? static_cast<std::uint64_t>(-(min + 1)) + 1 : static_cast<std::uint64_t>(max);
  return magnitude <= limit;
}

// Why `text` is not a <double>; nullopt when it is one. XML-RPC's form is
// [+-]digits[.digits] (either side of the point may be empty, not both);
// the exponent ([eE][+-]digits) that Python's xmlrpc.client writes for
// small and large numbers (repr: 1e-07, 1e+16) is accepted too, for a
// normal double. No inf, nan, hex or white space.
std::optional<std::string> real_problem(std::string_view text) {
  std::size_t at = 0;
  auto digits = [&] {
    std::size_t from = at;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9') ++at;
    return at - from;
  };
  if (at < text.size() && (text[at] == '+' || text[at] == '-')) ++at;
  std::size_t mantissa = digits();
  if (at < text.size() && text[at] == '.') {
    ++at;
    mantissa += digits();
  }
  bool exponent = false;
  if (mantissa > 0 && at < text.size() && (text[at] == 'e' || text[at] == 'E')) {
    exponent = true;
    ++at;
    if (at < text.size() && (text[at] == '+' || text[at] == '-')) ++at;
    if (digits() == 0) at = text.size() + 1;
  }
  if (mantissa == 0 || at != text.size()) return "is not a decimal number (like -12.5, or 1.5e-07)";
  // strtod needs a terminated string; the text is at most kMaxScalarBytes.
  const std::string terminated(text);
  errno = 0;
  const double value = std::strtod(terminated.c_str(), nullptr);
  if (std::isinf(value)) return "is beyond the largest double (1.7976931348623157e308)";
  // xmlrpc-c reads a number with an exponent with strtod and refuses what
  // it rounds (ERANGE): below the smallest normal double, write 0.
  if (exponent && errno == ERANGE)
    return "is below the smallest normal double (2.2250738585072014e-308): write 0";
  return std::nullopt;
}

bool is_leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int days_in_month(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap(year) ? 29 : kDays[month - 1];
}

// Why `text` is not a <dateTime.iso8601>; nullopt when it is one. The form
// XML-RPC's spec shows and its clients write, 20260203T12:00:00, UTC here,
// with up to 6 digits of a fraction of a second (xmlrpc-c writes 6); every
// field within its calendar's range.
std::optional<std::string> date_time_problem(std::string_view text) {
  static constexpr std::string_view kForm = "DDDDDDDDTDD:DD:DD";
  bool form = text.size() >= kForm.size();
  for (std::size_t i = 0; form && i < kForm.size(); ++i)
    form = kForm[i] == 'D' ? text[i] >= '0' && text[i] <= '9' : text[i] == kForm[i];
  if (form && text.size() > kForm.size()) {
    const std::string_view fraction = text.substr(kForm.size() + 1);
    form = text[kForm.size()] == '.' && !fraction.empty() && fraction.size() <= 6;
    for (char c : fraction) form = form && c >= '0' && c <= '9';
  }
  if (!form)
    return "is not a date and time like 20260203T12:00:00 (UTC; up to 6 digits of fraction "
           "may follow a point)";
  auto number = [&](std::size_t at, std::size_t length) {
    int n = 0;
    for (std::size_t i = at; i < at + length; ++i) n = n * 10 + (text[i] - '0');
    return n;
  };
  static constexpr const char* kMonths[] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};
  const int year = number(0, 4), month = number(4, 2), day = number(6, 2);
  const int hour = number(9, 2), minute = number(12, 2), second = number(15, 2);
  if (month < 1 || month > 12)
    return fmt::format("is not a date: month {:02} is not 01..12", month);
  if (day < 1 || day > days_in_month(year, month))
    return fmt::format("is not a date: {} {} has {} days", kMonths[month - 1], year,
                       days_in_month(year, month));
  if (hour > 23) return fmt::format("is not a time: hour {:02} is not 00..23", hour);
  if (minute > 59) return fmt::format("is not a time: minute {:02} is not 00..59", minute);
  if (second > 59) return fmt::format("is not a time: second {:02} is not 00..59", second);
  return std::nullopt;
}

// Base64 (RFC 4648's alphabet, with '=' padding) read as it arrives: a
// <base64> may be as large as the body, so its text is not kept. XML white
// space may appear anywhere (Python's client breaks lines at 76).
class Base64Check {
 public:
  void add(std::string_view text) {
    for (char c : text) {
      if (problem_ || is_xml_space(c)) continue;
      if (c == '=') {
        if (quad_ < 2 || ++pads_ > 2) problem_ = "has '=' where no padding can be";
        // The bits the padding leaves out of the last symbol are 0.
        else if (pads_ == 1 && (symbol_ & (quad_ == 2 ? 0x0f : 0x03)) != 0)
          problem_ = "has bits after its last byte";
        ++quad_;
        if (quad_ == 4) quad_ = 0;
        continue;
      }
      const int symbol = base64_symbol_value(c);
      if (symbol < 0) {
        problem_ = fmt::format("has {}, which is not a base64 symbol", quoted({&c, 1}));
      } else if (pads_ > 0) {
        problem_ = "goes on after its padding";
      } else {
        symbol_ = symbol;
        quad_ = (quad_ + 1) % 4;
      }
    }
  }
  // Why the text was not base64; nullopt when it was.
  std::optional<std::string> problem() const {
    if (problem_) return problem_;
    if (quad_ != 0) return "does not end on a group of 4 symbols (padding is missing)";
    return std::nullopt;
  }

 private:
  int quad_ = 0;    // symbols (and pads) of the current group of 4
  int pads_ = 0;    // '=' seen
  int symbol_ = 0;  // the last symbol's value
  std::optional<std::string> problem_;
};

// One element being read, innermost last.
struct Frame {
  Kind kind = Kind::method_call;
  std::string_view tag;      // as written; points into a static table
  std::size_t children = 0;  // child elements so far
  std::size_t index = 0;     // param: its position; data: the values so far
  bool text = false;         // value: text that is not white space
  std::string kept;          // scalars, methodName, a member's name (bounded)
  std::size_t text_bytes = 0;
  std::optional<Base64Check> base64;
};

// What an element may hold, for messages.
std::string_view holds(Kind kind) {
  switch (kind) {
    case Kind::method_call:
      return "a <methodName> and then one <params>";
    case Kind::params:
      return "only <param>s";
    case Kind::param:
      return "one <value>";
    case Kind::value:
      return "text or one element of a type";
    case Kind::structure:
      return "only <member>s";
    case Kind::member:
      return "a <name> and then a <value>";
    case Kind::array:
      return "one <data>";
    case Kind::data:
      return "only <value>s";
    case Kind::nil:
      return "nothing";
    default:
      return "only text";
  }
}

bool keeps_text(Kind kind) {
  switch (kind) {
    case Kind::method_name:
    case Kind::name:
    case Kind::int32:
    case Kind::int64:
    case Kind::boolean:
    case Kind::real:
    case Kind::date_time:
      return true;
    default:
      return false;
  }
}

bool is_method_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '/';
}

struct ParserDeleter {
  void operator()(XML_Parser parser) const { XML_ParserFree(parser); }
};

// One check of one body: expat's callbacks drive it.
class Check {
 public:
  explicit Check(unsigned max_nesting) : max_nesting_(max_nesting) {}

  std::variant<CheckedCall, CallRefusal> run(std::string_view body) {
    // UTF-8 whatever the body declares: a declaration of another encoding is
    // refused below, and so is a UTF-16 body (its bytes are not UTF-8).
    parser_.reset(XML_ParserCreate("UTF-8"));
    if (!parser_) throw std::bad_alloc();
    XML_Parser p = parser_.get();
    XML_SetUserData(p, this);
    XML_SetXmlDeclHandler(p, on_declaration);
    XML_SetStartDoctypeDeclHandler(p, on_doctype);
    XML_SetProcessingInstructionHandler(p, on_instruction);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    if (body.size() > static_cast<std::size_t>(INT_MAX))
      return CallRefusal{kParseError, "the body is larger than any call"};
    // Expat reads UTF-16 and a byte order mark whatever it is told, and
    // xmlrpc-c's parser reads neither as expat does: a body starts as every
    // XML-RPC client writes one.
    if (!body.empty() && body.front() != '<' && !is_xml_space(body.front()))
      return CallRefusal{
          kParseError,
          fmt::format("the body starts with byte {:#04x}: an XML-RPC call starts with '<' (UTF-8, "
                      "no byte order mark)",
                      static_cast<unsigned char>(body.front()))};
    const auto status = XML_Parse(p, body.data(), static_cast<int>(body.size()), XML_TRUE);
    if (refusal_) return std::move(*refusal_);
    if (status != XML_STATUS_OK)
      return CallRefusal{
          kParseError,
          fmt::format("not well-formed XML at line {}, column {}: {}", XML_GetCurrentLineNumber(p),
                      XML_GetCurrentColumnNumber(p) + 1, XML_ErrorString(XML_GetErrorCode(p)))};
    return CheckedCall{std::move(method_)};
  }

 private:
  static Check& self(void* data) { return *static_cast<Check*>(data); }

  static void XMLCALL on_declaration(void* data, const XML_Char* version, const XML_Char* encoding,
                                     int) {
    auto& c = self(data);
    if (version && std::string_view(version) != "1.0")
      return c.refuse(kParseError,
                      fmt::format("XML version {}: XML-RPC is XML 1.0", quoted(version)));
    if (encoding && !is_utf8(encoding))
      c.refuse(kParseError,
               fmt::format("encoding {}: this server reads UTF-8 only", quoted(encoding)));
  }

  static void XMLCALL on_doctype(void* data, const XML_Char*, const XML_Char*, const XML_Char*,
                                 int) {
    self(data).refuse(kParseError,
                      "a <!DOCTYPE>: XML-RPC has no document type, and this server reads no DTD "
                      "(nor any entity but the five of XML and character references)");
  }

  static void XMLCALL on_instruction(void* data, const XML_Char* target, const XML_Char*) {
    self(data).refuse(kParseError, fmt::format("a processing instruction <?{}?>: XML-RPC has none",
                                               escaped(target, kQuotedBytes)));
  }

  static void XMLCALL on_start(void* data, const XML_Char* name, const XML_Char** attributes) {
    auto& c = self(data);
    if (!c.refusal_) c.start(name, attributes);
  }

  static void XMLCALL on_end(void* data, const XML_Char*) {
    auto& c = self(data);
    if (!c.refusal_) c.end();
  }

  static void XMLCALL on_text(void* data, const XML_Char* text, int length) {
    auto& c = self(data);
    if (!c.refusal_) c.text({text, static_cast<std::size_t>(length)});
  }

  static bool is_utf8(std::string_view encoding) {
    static constexpr std::string_view kUtf8 = "utf-8";
    if (encoding.size() != kUtf8.size()) return false;
    for (std::size_t i = 0; i < encoding.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(encoding[i])) != kUtf8[i]) return false;
    return true;
  }

  void refuse(FaultCode code, std::string message) {
    if (refusal_) return;
    refusal_ = CallRefusal{code, std::move(message)};
    XML_StopParser(parser_.get(), XML_FALSE);
  }

  // Where the innermost value is, as "params[0].filter[2]: ", or "".
  std::string where() const {
    std::string path;
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      const Frame& f = frames_[i];
      const bool inside = i + 1 < frames_.size();
      if (f.kind == Kind::param) path += fmt::format("params[{}]", f.index);
      if (f.kind == Kind::data && inside) path += fmt::format("[{}]", f.index - 1);
      if (f.kind == Kind::member && inside && f.children == 2)
        path += "." + escaped(f.kept, kQuotedBytes);
    }
    return path.empty() ? path : path + ": ";
  }

  void push(Kind kind, std::string_view tag) {
    Frame& f = frames_.emplace_back();
    f.kind = kind;
    f.tag = tag;
    if (kind == Kind::base64) f.base64.emplace();
  }

  void open_value() {
    if (++depth_ > max_nesting_)
      return refuse(kParseError, fmt::format("{}values nested deeper than manager.max_nesting ({})",
                                             where(), max_nesting_));
    push(Kind::value, "value");
  }

  void misplaced(std::string_view tag, const Frame& parent) {
    refuse(kParseError, fmt::format("{}<{}> inside <{}>, which holds {}", where(),
                                    escaped(tag, kQuotedBytes), parent.tag, holds(parent.kind)));
  }

  void start(std::string_view tag, const XML_Char** attributes) {
    for (auto a = attributes; *a; a += 2) {
      const std::string_view attribute = *a;
      // xmlrpc-c's Apache dialect declares the "ex:" prefix on <methodCall>.
      if (attribute != "xmlns" && !attribute.starts_with("xmlns:"))
        return refuse(kParseError,
                      fmt::format("{}<{}> has an attribute {}: XML-RPC's elements have none",
                                  where(), escaped(tag, kQuotedBytes), quoted(attribute)));
    }
    if (frames_.empty()) {
      if (tag != "methodCall")
        return refuse(kParseError, fmt::format("the body is a <{}>, not a <methodCall>",
                                               escaped(tag, kQuotedBytes)));
      return push(Kind::method_call, "methodCall");
    }
    Frame& parent = frames_.back();
    const std::size_t nth = ++parent.children;
    switch (parent.kind) {
      case Kind::method_call:
        if (nth == 1 && tag == "methodName") return push(Kind::method_name, "methodName");
        if (nth == 2 && tag == "params") return push(Kind::params, "params");
        return misplaced(tag, parent);
      case Kind::params:
        if (tag != "param") return misplaced(tag, parent);
        push(Kind::param, "param");
        frames_.back().index = nth - 1;
        return;
      case Kind::param:
        if (nth == 1 && tag == "value") return open_value();
        return misplaced(tag, parent);
      case Kind::structure:
        if (tag == "member") return push(Kind::member, "member");
        return misplaced(tag, parent);
      case Kind::member:
        if (nth == 1 && tag == "name") return push(Kind::name, "name");
        if (nth == 2 && tag == "value") return open_value();
        return misplaced(tag, parent);
      case Kind::array:
        if (nth == 1 && tag == "data") return push(Kind::data, "data");
        return misplaced(tag, parent);
      case Kind::data:
        if (tag != "value") return misplaced(tag, parent);
        ++parent.index;
        return open_value();
      case Kind::value: {
        if (nth > 1 || parent.text) return misplaced(tag, parent);
        const ValueType* type = value_type(tag);
        if (!type)
          return refuse(kParseError,
                        fmt::format("{}<{}> is not a type of XML-RPC (string, int, i4, i8, "
                                    "boolean, double, dateTime.iso8601, base64, struct, array, "
                                    "nil)",
                                    where(), escaped(tag, kQuotedBytes)));
        return push(type->kind, type->tag);
      }
      default:
        return misplaced(tag, parent);
    }
  }

  void text(std::string_view text) {
    if (frames_.empty()) return;  // expat allows only white space there
    // xmlrpc-c 1.33 refuses every character beyond the Basic Multilingual
    // Plane (its UTF-8 reader stops at 3 bytes); expat hands valid UTF-8, in
    // which a lead byte of 0xF0 or above starts exactly those.
    for (char c : text)
      if (static_cast<unsigned char>(c) >= 0xF0)
        return refuse(kBadArgument,
                      where() +
                          "a character beyond U+FFFF, which this server's XML-RPC library "
                          "(xmlrpc-c 1.33) cannot read");
    Frame& f = frames_.back();
    switch (f.kind) {
      case Kind::string:
        return;
      case Kind::base64:
        return f.base64->add(text);
      case Kind::value:
        if (all_space(text)) return;
        if (f.children > 0) return misplaced_text(text, f);
        f.text = true;
        return;
      case Kind::nil:
        return misplaced_text(text, f);
      default:
        if (!keeps_text(f.kind)) {
          if (all_space(text)) return;
          return misplaced_text(text, f);
        }
        f.text_bytes += text.size();
        if (f.kept.size() < kMaxScalarBytes)
          f.kept.append(text.substr(0, kMaxScalarBytes - f.kept.size()));
    }
  }

  void misplaced_text(std::string_view text, const Frame& f) {
    refuse(kParseError, fmt::format("{}text {} inside <{}>, which holds {}", where(), quoted(text),
                                    f.tag, holds(f.kind)));
  }

  // Why the scalar that just ended is not one of its type; nullopt if it is.
  static std::optional<std::string> scalar_problem(const Frame& f) {
    if (f.text_bytes > kMaxScalarBytes)
      return fmt::format("is {} bytes long, more than any {} ({} at most)", f.text_bytes,
                         f.kind == Kind::real ? "number" : "value of its type", kMaxScalarBytes);
    switch (f.kind) {
      case Kind::int32:
        if (is_integer_in(f.kept, INT32_MIN, INT32_MAX)) return std::nullopt;
        return "is not an integer in -2147483648..2147483647";
      case Kind::int64:
        if (is_integer_in(f.kept, INT64_MIN, INT64_MAX)) return std::nullopt;
        return "is not an integer in -9223372036854775808..9223372036854775807";
      case Kind::boolean:
        if (f.kept == "0" || f.kept == "1") return std::nullopt;
        return "is not 0 or 1";
      case Kind::real:
        return real_problem(f.kept);
      case Kind::date_time:
        return date_time_problem(f.kept);
      case Kind::base64:
        return f.base64->problem();
      default:
        return std::nullopt;
    }
  }

  void end() {
    Frame& f = frames_.back();
    switch (f.kind) {
      case Kind::method_call:
        if (f.children == 0) return refuse(kParseError, "the <methodCall> has no <methodName>");
        break;
      case Kind::method_name: {
        bool name_ok = !f.kept.empty() && f.text_bytes <= kMaxMethodNameBytes;
        for (char ch : f.kept) name_ok = name_ok && is_method_name_char(ch);
        if (!name_ok)
          return refuse(kParseError,
                        fmt::format("<methodName> {} is not a method's name (1 to {} of A-Z a-z "
                                    "0-9 _ . : /)",
                                    quoted(f.kept), kMaxMethodNameBytes));
        method_ = std::move(f.kept);
        break;
      }
      case Kind::param:
        if (f.children == 0) return refuse(kParseError, where() + "<param> has no <value>");
        break;
      case Kind::member:
        if (f.children < 2)
          return refuse(kParseError, where() + "<member> has no <value> after its <name>");
        break;
      case Kind::array:
        if (f.children == 0) return refuse(kParseError, where() + "<array> has no <data>");
        break;
      case Kind::value:
        --depth_;
        break;
      case Kind::name: {
        // Kept in its member, which names the value that follows.
        std::string name = std::move(f.kept);
        frames_.pop_back();
        frames_.back().kept = std::move(name);
        return;
      }
      default:
        if (auto problem = scalar_problem(f)) {
          const std::string value = f.kind == Kind::base64 ? "" : " value " + quoted(f.kept);
          return refuse(kBadArgument, fmt::format("{}<{}>{} {}", where(), f.tag, value, *problem));
        }
    }
    frames_.pop_back();
  }

  unsigned max_nesting_;
  unsigned depth_ = 0;  // <value>s open
  std::unique_ptr<XML_ParserStruct, ParserDeleter> parser_;
  std::vector<Frame> frames_;
  std::optional<CallRefusal> refusal_;
  std::string method_;
};

}  // namespace

std::variant<CheckedCall, CallRefusal> CallGuard::check(std::string_view body) const {
  return Check(max_nesting_).run(body);
}

}  // namespace flexmon::manager
