// flexmon-manager: everything is in the flexmon_manager library.
#include "manager/manager.h"

int main(int argc, char** argv) {
  return flexmon::daemon_main(
      argc, argv,
      {.name = "flexmon-manager",
       .summary = "flexmon manager: XML-RPC API, request store, dispatch to probers",
       .add_options = nullptr,
       .check = flexmon::check_manager_config,
       .start = flexmon::start_manager});
}
