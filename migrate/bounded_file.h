// Reading a whole file named by an operator or a peer's configuration (a stream file, TLS
// credentials) on the control thread: only a regular file, within a bound, and never waiting
// on a FIFO or a device that someone else controls. Context: control.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/result.h"

namespace ferry {

/// Reads a whole regular file of at most max_bytes; anything else (a FIFO, a device, a
/// directory) is refused without waiting on it. @return kNotFound / kFailed / kInvalidParams
/// ("not a regular file", too large)
Result<std::vector<uint8_t>> read_file_bounded(const std::string& path, size_t max_bytes);

}  // namespace ferry
