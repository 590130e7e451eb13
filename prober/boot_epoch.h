// The boot epoch: a counter in STATE_DIR/NODE_ID/boot_epoch raised and written
// durably at every prober start, so (node, boot_epoch, seq) names a result
// uniquely across restarts.
#pragma once

#include <cstdint>
#include <filesystem>

namespace flexmon::prober {

// Reads the previous epoch (0 when the file does not exist), writes the next
// one durably (temp file, fsync, rename, fsync of the folder) and returns it.
// Creates the folder. Throws std::runtime_error naming the file on failure or
// on a file that does not hold a number.
std::uint64_t next_boot_epoch(const std::filesystem::path& node_dir);

}  // namespace flexmon::prober
