// The `flexmon` command-line client: requests, nodes and results over the
// XML-RPC API (schemas/xmlrpc-api.md). `flush` and `dump` are flexmon-admin's
// (admin/admin_cli.h): they answer with that name and exit 64.
#pragma once

namespace flexmon {

// Runs the client; returns the exit status (common/exit_status.h): 0 ok, 1 the
// server refused (a fault) or failed, 64 bad usage, 69 server unreachable.
int client_main(int argc, char** argv);

}  // namespace flexmon
