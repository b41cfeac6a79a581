// ferryctl's text <-> JSON conversions: command-line key=value arguments into params, and method
// results into what a person reads (aligned tables for lists, "key: value" lines for objects).
// No I/O and no sockets here, so every rule can be tested on its own.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/result.h"

namespace ferry {

/// Keys of key=value arguments whose values are not converted the default way.
struct CliKeyKinds {
    std::vector<std::string_view> list_keys;    // "1,2" -> [1, 2]; always an array
    std::vector<std::string_view> string_keys;  // kept as text even when they look like numbers
};

/// Converts one argument value. Context: ferryctl. Integers become numbers, "true"/"false"
/// booleans, list keys arrays (elements converted the same way, "" -> []), everything else and
/// every string key a string.
nlohmann::json cli_value(std::string_view key, std::string_view text, const CliKeyKinds& kinds);

/// Adds key=value arguments to params (an object). Context: ferryctl.
/// @return Ok, or kInvalidParams naming the argument (no '=', empty key, key given twice).
Status add_key_values(const std::vector<std::string>& args, const CliKeyKinds& kinds,
                      nlohmann::json* params);

/// Renders a method result for a person. Context: ferryctl.
/// @param column_order space-separated keys to put first, in this order, in tables and in
///        "key: value" lists (the daemon's JSON objects carry no order of their own); other keys
///        follow in the order received. Nested objects flatten to "a.b" keys.
/// @return the text, ending with a newline, or "" for a null result or an empty object.
std::string format_result(const nlohmann::ordered_json& result, std::string_view column_order);

/// Renders the result of the daemon's "help" method (see describe_methods). Context: ferryctl.
std::string format_methods(const nlohmann::ordered_json& methods);

}  // namespace ferry
