// The XML-RPC API's numbered fault codes and ApiFault, the exception that
// carries one from inside a method to the call's boundary (CallHandler), where
// it becomes an XML-RPC fault. Reference: schemas/xmlrpc-api.md.
#pragma once

#include <stdexcept>
#include <string>

namespace flexmon::manager {

enum FaultCode : int {
  kParseError = -32700,        // the body is not an XML-RPC call (manager/call_guard.h)
  kBadArgument = 4001,         // an argument is missing, of the wrong type or out of bounds
  kUnknownNode = 4002,         // a node id that is not in the configuration
  kNotAuthenticated = 4010,    // missing or malformed credentials, unknown user or wrong token
  kNotPermitted = 4030,        // the caller's role may not call it, or the request is not theirs
  kNoSuchRequest = 4040,       // no request has this id
  kLimitExceeded = 4290,       // a per-user limit (requests, paths) would be exceeded
  kBudgetExceeded = 4291,      // a bandwidth budget (global, user, node) would be exceeded
  kInternal = 5000,            // a bug or a failing disk: logged by the manager
  kStorageUnavailable = 5030,  // the archive cannot be read now (results are kept; ask again)
};

// Thrown inside a method; turned into an XML-RPC fault at the boundary.
class ApiFault : public std::runtime_error {
 public:
  ApiFault(FaultCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  FaultCode code() const { return code_; }

 private:
  FaultCode code_;
};

}  // namespace flexmon::manager
