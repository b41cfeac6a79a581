// Turning the configuration into EAL arguments, and the host facts that decide them.
#pragma once

#include <string>
#include <vector>

#include "control/config.h"
#include "dataplane/result.h"

namespace ferry {

struct EalPlan {
    std::vector<std::string> args;  // argv for rte_eal_init, argv[0] included
    bool no_huge = false;           // ferryd added --no-huge because the host has no hugepages
    std::string file_prefix;
};

/// Free 2 MiB hugepages usable by this process (mounted hugetlbfs and free pages), 0 when none.
/// Context: control.
unsigned host_free_hugepages();

/// Builds the EAL argument list: the config's "eal" array, then the command line's passthrough
/// arguments; adds --file-prefix ferry when none is given, and --no-huge with -m 1024 when the
/// host has no free hugepages and the arguments do not already decide. Context: control.
EalPlan plan_eal(const Config& cfg, const std::vector<std::string>& passthrough,
                 unsigned free_hugepages);

/// Removes this process's DPDK runtime directory (after rte_eal_cleanup). Context: control.
void remove_runtime_dir(const std::string& dir);

}  // namespace ferry
