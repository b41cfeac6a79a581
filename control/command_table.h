// The control socket's command table: every method is one row with its parameters and whether
// it may run while workers run (BESS's habit). Methods that may not are run between a
// Pauser::pause() and Pauser::resume() (dataplane/pauser.h), never under an ad-hoc lock.
#pragma once

#include <functional>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/pauser.h"
#include "dataplane/result.h"

namespace ferry {

enum class ParamType { kString, kInteger, kUnsigned, kBoolean, kObject, kArray, kAny };

struct ParamSpec {
    std::string_view name;
    ParamType type;
    bool required;
    std::string_view help;
};

/// Handler of one method. Context: control thread. Params have already been checked against the
/// row's ParamSpec list (types, required fields, no unknown fields).
using CommandHandler = std::function<Result<nlohmann::json>(const nlohmann::json& params)>;

struct CommandSpec {
    std::string_view name;
    std::string_view help;
    bool safe_while_running;
    std::vector<ParamSpec> params;
    CommandHandler handler;
};

}  // namespace ferry
