// Path-named errors for JSON inputs (configuration, rules, control params): every refusal
// starts with the path of the offending value, e.g. "ports[1].queues: ...".
#pragma once

#include <string>
#include <string_view>

#include "dataplane/result.h"

namespace ferry::json_path {

/// path.key, or key at the root. Context: control.
inline std::string at(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
}

/// path[index]. Context: control.
inline std::string at(const std::string& path, size_t index) {
    return path + "[" + std::to_string(index) + "]";
}

/// kInvalidParams "path: what"; the root is named "<root>". Context: control.
inline Error invalid(const std::string& path, const std::string& what) {
    return make_error(ErrorCode::kInvalidParams, (path.empty() ? "<root>" : path) + ": " + what);
}

}  // namespace ferry::json_path
