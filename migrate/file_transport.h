// The file transport: a stream written to a file atomically and safely (migrate.save, the
// live upgrade's checkpoint), a file read within a bound, and a stream file read, checked and
// installed (migrate.load, ferryd --restore). Context: control.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/result.h"
#include "migrate/bounded_file.h"
#include "migrate/host.h"

namespace ferry {

/// The largest stream file read back (migrate.load, --restore).
inline constexpr size_t kMaxStreamFile = size_t{4} << 30;

/// Writes bytes to path atomically (a temporary file in the same directory, fsync, rename),
/// mode 0600, never through a name someone else could have planted. @return kFailed naming
/// the step
Status write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

/// Reads, validates and installs a stream file (migrate.load, ferryd --restore), all or
/// nothing. Context: control, workers paused or not started. @return a summary, or why
/// nothing changed
Result<nlohmann::json> restore_from_file(MigrationHost& host, const std::string& path);

}  // namespace ferry
