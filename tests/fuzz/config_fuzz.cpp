// libFuzzer target: the config parser must turn any text into a Config or a
// ConfigError, never crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)flexmon::parse_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz.yaml",
                                "/fuzz");
  } catch (const flexmon::ConfigError&) {
  }
  return 0;
}
