// Checks of the files and folders a daemon will use, made before it starts
// (and by --check-config, which starts nothing): a typo in a path, a folder
// the daemon's user cannot write or a database path that names some other
// file is then reported at once, naming the key, instead of as a failure
// halfway through start-up.
#pragma once

#include <filesystem>
#include <string>

#include "common/config.h"

namespace flexmon {

// The folder `path` exists and this process may write in it, or it can be
// made: its nearest part that exists is a folder this process may write (no
// file stands where a folder is needed). Throws ConfigError naming
// config.file, `key` and the path.
void check_writable_location(const Config& config, const std::string& key,
                             const std::filesystem::path& path);

// The file at `path` is absent, empty, or an SQLite database (its header),
// and its folder is a writable location. Throws ConfigError otherwise.
void check_sqlite_file(const Config& config, const std::string& key,
                       const std::filesystem::path& path);

}  // namespace flexmon
