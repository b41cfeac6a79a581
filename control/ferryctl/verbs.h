// ferryctl's verbs: the one table that maps command words to JSON-RPC methods (a new verb is one
// row), the usage and help texts built from it, and the conversion of a verb's arguments into a
// method's params. No I/O here. Context: ferryctl, everything in this file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ferry {

/// The control socket ferryctl talks to when neither -s nor FERRY_SOCKET names one.
inline constexpr const char* kDefaultSocket = "/run/ferry/ferryd.sock";

/// How a verb's arguments become params.
enum class Args {
    kNone,            // no arguments
    kName,            // NAME -> {"name": NAME}
    kOptionalName,    // [NAME]
    kKeyValues,       // [key=value ...]
    kNameKeyValues,   // NAME key=value ...
    kMethodJson,      // METHOD [JSON-PARAMS]: the escape hatch
    kRuleJson,        // RULE-JSON: an object -> {"rule": ...}, an array -> {"rules": [...]}
    kIds,             // ID ... -> {"ids": [...]}
    kOptionalIds,     // [ID ...]: none means all
    kPatterns,        // [replace] PATTERNS-JSON|@FILE -> {"patterns": [...], "replace": bool}
    kFirstKeyValues,  // VALUE key=value ... -> {first_key: VALUE, key: value ...}
    kLogLevel,        // [SUBSYSTEM] [LEVEL] -> {"subsystem": ..., "level": ...}
    kNameSecurity,    // NAME [SECURITY-JSON|@FILE|off] -> {"name", "security": {...} | null}
};

struct Verb {
    std::string_view words;   // what the user types, e.g. "port add"
    std::string_view method;  // the JSON-RPC method ("" for call)
    Args args;
    std::string_view synopsis;  // the arguments, for the usage text
    std::string_view help;
    std::string_view columns;  // keys to show first (results carry no key order of their own)
    std::string_view first_key = {};  // kFirstKeyValues: the params key of the first argument
    bool follow = false;              // poll migrate.status until the migration ends
};

/// The columns migrate status and a followed migration show first.
inline constexpr std::string_view kMigrateColumns =
    "role phase address port connections dpi_streams macs stream_bytes bytes_done pause_ms "
    "elapsed_ms error";

/// The usage text, built from the verb table.
std::string usage_text();

/// One verb's synopsis and help, for `ferryctl COMMAND --help`.
std::string verb_help_text(const Verb& v);

/// The verb whose words start the command, longest match first.
/// @param consumed set to the number of command words the verb takes
/// @return the verb, or nullptr when none matches
const Verb* find_verb(const std::vector<std::string>& command, size_t* consumed);

/// What to tell the user about a command that matches no verb: the subcommands of a known
/// group, or that the command is unknown.
std::string unknown_command_message(const std::vector<std::string>& command);

/// Builds the method and params from the verb's arguments.
/// @return an empty string, or the usage error to report
std::string build_request(const Verb& verb, std::vector<std::string> args, std::string* method,
                          nlohmann::json* params);

}  // namespace ferry
