// JSON-RPC 2.0 over the command table: one request line in, one response line out. It checks the
// envelope and the params against the row's ParamSpec list, pauses the workers around rows that
// are not safe while running, and never lets an exception escape. No I/O here: the socket server
// feeds it lines.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/command_table.h"
#include "dataplane/result.h"

namespace ferry {

class JsonRpcDispatcher {
public:
    /// Context: control. Rows are looked up by name; if two rows share a name the first wins.
    /// @param pauser stops the workers around rows with safe_while_running == false; may be null
    ///               (no workers: tests, tools), in which case every row runs directly.
    JsonRpcDispatcher(std::vector<CommandSpec> table, Pauser* pauser);

    /// Handles one request line (without its newline). Context: control. Never throws.
    /// @return the response line (without newline), or nullopt for a valid notification (a request
    ///         without "id"), whose outcome is never reported. Invalid JSON and invalid envelopes
    ///         are always answered, with id null when the id cannot be trusted.
    std::optional<std::string> handle_line(std::string_view line);

    /// The rows as given to the constructor, in order. Context: any.
    const std::vector<CommandSpec>& table() const { return table_; }

private:
    nlohmann::json call(const CommandSpec& row, const nlohmann::json& params);

    std::vector<CommandSpec> table_;
    std::unordered_map<std::string_view, size_t> index_;  // name -> row in table_
    Pauser* pauser_;
};

/// Checks params (an object) against a row's parameter list. Context: control.
/// @return Ok, or kInvalidParams naming the first offending field (unknown field, missing
///         required field, wrong type).
Status check_params(const std::vector<ParamSpec>& specs, const nlohmann::json& params);

/// Describes the table for a "help" method. Context: any.
/// @return an array of {name, help, safe_while_running, params: [{name, type, required, help}]},
///         in table order; type is one of "string", "integer", "unsigned", "boolean", "object",
///         "array", "any".
nlohmann::json describe_methods(const std::vector<CommandSpec>& table);

/// The wire name of a parameter type, as used by describe_methods. Context: any.
std::string_view param_type_name(ParamType type);

/// Builds a complete error response line (no newline) for errors found outside the dispatcher,
/// e.g. by the socket server for an oversized request. Context: any. Never throws.
std::string make_error_line(const Error& error, const nlohmann::json& id = nullptr);

}  // namespace ferry
