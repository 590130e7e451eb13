// The `flexmon` command-line client: requests, nodes and results over the
// XML-RPC API (schemas/xmlrpc-api.md).
#pragma once

namespace flexmon {

// Runs the client; returns the exit status (0 ok, 1 the server refused or
// failed, 64 bad usage, 69 server unreachable).
int client_main(int argc, char** argv);

}  // namespace flexmon
