// The migrate.* rows of the control socket's command table. Context: control.
#pragma once

#include <vector>

#include "control/command_table.h"

namespace ferry {

class Switch;

/// Adds every migrate.* row: save, load, receive, send, continue, cancel, status.
/// Context: control.
void add_migrate_commands(std::vector<CommandSpec>& t, Switch& sw);

}  // namespace ferry
