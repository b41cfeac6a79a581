// The control methods of ferryd, as rows of the command table.
#pragma once

#include <functional>
#include <vector>

#include "control/command_table.h"

namespace ferry {

class Switch;

/// The command table bound to a switch. `describe` returns the table's own description for the
/// `help` method. Context: control.
std::vector<CommandSpec> make_commands(Switch& sw, std::function<nlohmann::json()> describe);

}  // namespace ferry
