// API v1: the XML-RPC methods, independent of the HTTP server so tests can
// call them directly. Reference: schemas/xmlrpc-api.md.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <xmlrpc-c/base.hpp>

#include "cache/cache.h"
#include "common/config.h"
#include "manager/core.h"

namespace flexmon::manager {

// Read connections to the cache database, lent to one caller at a time.
class CachePool {
 public:
  explicit CachePool(std::filesystem::path file) : file_(std::move(file)) {}
  std::vector<LatencyRow> query(const LatencyQuery& query);

 private:
  std::filesystem::path file_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Cache>> idle_;  // guarded by mu_
};

struct ApiMethod {
  std::string name;
  std::string signature;  // xmlrpc-c form, e.g. "S:S"
  std::string help;
  // Runs for an authenticated caller; throws ApiFault.
  std::function<xmlrpc_c::value(const UserConfig& caller, const xmlrpc_c::paramList& params)> run;
};

// Every method of API v1, bound to `core` and `cache`.
std::vector<ApiMethod> api_methods(const Config& config, Core& core, CachePool& cache);

// A request as probe.get returns it; with its charged cost when given.
xmlrpc_c::value request_value(const Request& request, const Cost* charged = nullptr);

}  // namespace flexmon::manager
