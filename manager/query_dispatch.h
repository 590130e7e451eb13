// Calls to the methods that write their own XML answer (ApiMethod::write:
// the query.* methods), answered without the xmlrpc-c registry so that no
// xmlrpc-c value is built for a large answer; and the one authentication
// every method goes through.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <xmlrpc-c/base.hpp>

#include "manager/api.h"
#include "manager/auth.h"

namespace flexmon::manager {

// The user that `authorization` (an Authorization header, empty when
// absent) proves. Throws ApiFault 4010 when it proves none.
const UserConfig& authenticated(const Authenticator& auth, std::string_view authorization);

// A whole methodResponse that is the fault (code, message).
void write_fault_response(int code, const std::string& message, std::string& response);

class DirectCalls {
 public:
  // Keeps the methods of `methods` that have `write`.
  DirectCalls(const std::vector<ApiMethod>& methods, const Authenticator& auth);

  // When `method` is one of these: parses `body` (a call of it that
  // CallGuard passed) and writes the whole methodResponse (the answer or a
  // fault) to `response`; returns true. Otherwise false.
  bool answer(std::string_view method, const std::string& body, std::string_view authorization,
              XmlAnswer& response) const;

 private:
  std::map<std::string, ApiMethod, std::less<>> methods_;
  const Authenticator& auth_;
};

}  // namespace flexmon::manager
