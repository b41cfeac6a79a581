// Connections between a shard's entries and their stream form. Context: control (the owner
// worker paused).
#pragma once

#include <cstdint>
#include <vector>

#include "dataplane/conntrack/ct_entry.h"
#include "migrate/migration_state.h"

namespace ferry {

/// A live entry as the stream carries it. stream_port[slot] is the stream number of the local
/// port in that slot (kNoStreamPort: the port is not in the stream).
MigratedConnection connection_to_stream(const CtEntry& e, uint64_t now_ms,
                                        const std::vector<uint16_t>& stream_port);

/// The entry a stream connection installs as (ConntrackShard::install). local_port[n] is the
/// local slot of stream port n (kCtNoPort: none). The remaining time is c.remaining_ms.
CtEntry connection_from_stream(const MigratedConnection& c,
                               const std::vector<uint16_t>& local_port);

}  // namespace ferry
