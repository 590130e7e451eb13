// Calls to the methods that write their own XML answer (ApiMethod::write:
// the query.* methods), answered without the xmlrpc-c registry so that no
// xmlrpc-c value is built for a large answer. The call itself is still
// parsed by xmlrpc-c, with the same limits; anything this does not
// recognise is left to the registry, which answers it as before.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "manager/api.h"
#include "manager/auth.h"

namespace flexmon::manager {

class DirectCalls {
 public:
  // Keeps the methods of `methods` that have `write`.
  DirectCalls(const std::vector<ApiMethod>& methods, const Authenticator& auth);

  // When `body` calls one of these methods: writes the whole methodResponse
  // (the answer or a fault) to `response` and returns true. Otherwise false.
  bool answer(const std::string& body, std::string_view authorization, XmlAnswer& response) const;

 private:
  std::map<std::string, ApiMethod, std::less<>> methods_;
  const Authenticator& auth_;
};

}  // namespace flexmon::manager
