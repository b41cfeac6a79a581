#include "migrate/sections.h"

#include <unordered_set>

#include "migrate/stream_writer.h"

namespace ferry {

void write_ports(StreamWriter& w, const MigrationState& s, bool delta) {
    if (delta) return;  // a delta follows the pre-copy's PORT sections
    for (const MigratedPort& p : s.ports) w.port(p);
}

void write_macs(StreamWriter& w, const MigrationState& s, bool /*delta*/) {
    if (!s.macs.empty()) w.macs(s.macs);
}

void write_connections(StreamWriter& w, const MigrationState& s, bool /*delta*/) {
    if (!s.connections.empty()) w.connections(s.connections.data(), s.connections.size());
}

void write_connections_gone(StreamWriter& w, const MigrationState& s, bool delta) {
    if (s.gone.empty()) return;
    if (delta) {
        w.connections_gone(s.gone);  // they name connections of the pre-copy
        return;
    }
    // A gone tuple can only name a connection sent earlier in the stream: those of s.gone that
    // are among s.connections, each once. The others (a state read from a stream with deltas
    // holds the tuples whose connections it already dropped) have nothing to end.
    std::unordered_set<CtTuple, CtTupleHasher> sent;
    for (const MigratedConnection& c : s.connections) sent.insert(c.orig);
    std::vector<CtTuple> gone;
    for (const CtTuple& t : s.gone)
        if (sent.erase(t) != 0) gone.push_back(t);
    if (!gone.empty()) w.connections_gone(gone);
}

void write_dpi_streams(StreamWriter& w, const MigrationState& s, bool /*delta*/) {
    if (!s.dpi.empty()) w.dpi_streams(s.dpi_hash, s.dpi);
}

void write_rules(StreamWriter& w, const MigrationState& s, bool /*delta*/) {
    if (!s.rules_json.empty()) w.rules(s.rules_json);
}

void write_sections(StreamWriter& w, const MigrationState& s, bool delta) {
    for (const SectionCodec& c : kSectionCodecs)
        if (c.write != nullptr) c.write(w, s, delta);
}

}  // namespace ferry
