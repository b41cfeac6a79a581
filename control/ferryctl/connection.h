// ferryctl's one round trip with ferryd: connect to the control socket, send one request line,
// read one response line, all within a deadline. Context: ferryctl.
#pragma once

#include <string>

#include "dataplane/result.h"

namespace ferry {

/// Connects to the control socket at path, sends one request line and reads one response line,
/// giving up after timeout_s seconds in all.
/// @return the response line (without its newline), or an error message for the user
Result<std::string> exchange(const std::string& path, const std::string& request, double timeout_s);

}  // namespace ferry
