// `flexmon-admin`: storage work on the collector's host, with the collector's
// config file: `flush` (the cache to the archive, now), `flush --status` (how
// far the archive is behind, what the last flush recorded) and `dump` (one ISO
// week's public dump). It opens the databases directly, not over XML-RPC:
// the `flexmon` client stays a client of the API.
#pragma once

namespace flexmon {

// Runs the command; returns the exit status (common/exit_status.h): 0 done;
// 1 `flush --status` found the last flush failed, or another failure; 64 bad
// usage; 69 the archive is unreachable; 74 a write error; 78 bad config.
int admin_main(int argc, char** argv);

}  // namespace flexmon
