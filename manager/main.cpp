// flexmon-manager: everything is in the flexmon_manager library; main sets
// what is process-wide (xmlrpc-c's parser limits) and starts it.
#include "manager/auth.h"
#include "manager/call_handler.h"
#include "manager/manager.h"
#include "storage/reader.h"

int main(int argc, char** argv) {
  // The query methods read pages of up to 10,000 results: without this, glibc
  // returns a page's memory to the kernel and faults it in again for the next
  // one (most of a large page's CPU; storage/reader.cpp has the figures).
  flexmon::keep_freed_memory_for_result_pages();
  bool generate = false;
  return flexmon::daemon_main(
      argc, argv,
      {.name = "flexmon-manager",
       .summary = "flexmon manager: XML-RPC API, request store, dispatch to probers",
       .add_options = nullptr,
       .check = flexmon::check_manager_config,
       .check_reachable = flexmon::check_manager_reads,
       .start =
           [](const flexmon::Config& config) {
             flexmon::manager::configure_xmlrpc_limits(config.manager);
             return flexmon::start_manager(config);
           },
       .commands = {
           {.name = "hash-token",
            .summary = "print the users[].token_hash line for a token read from "
                       "standard input (or --generate a token and print it once); "
                       "schemas/config.md, \"Users and tokens\"",
            .add_options =
                [&generate](CLI::App& sub) {
                  sub.add_flag("--generate", generate,
                               "make a random token (256 bits), print it once, and "
                               "print its hash line");
                },
            .run = [&generate] { return flexmon::manager::hash_token_command(generate); }}}});
}
