// A compiled, immutable set of payload patterns: one Hyperscan stream-mode database per
// direction, the per-pattern actions, and a hash that names the databases (stream state is
// only meaningful to the database that produced it). Compiled by the control thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/dpi/dpi_pattern.h"

struct hs_database;

namespace ferry {

/// What the fast path needs to know about a pattern when Hyperscan reports its id (the
/// pattern's position in the set).
struct DpiRule {
    uint32_t id;  // the user's pattern id
    DpiVerdictKind action;
    uint8_t pad[3];
    uint32_t mark;
};

/// Why compilation failed: the pattern's user id (when one pattern is at fault) and
/// Hyperscan's message.
struct DpiCompileError {
    bool has_id = false;
    uint32_t id = 0;
    std::string message;
};

class DpiDatabase {
public:
    /// Compiles patterns (at most one per id; ids unique) into stream-mode databases.
    /// Context: control (slow: milliseconds to seconds). @return nullptr and *err on failure
    static std::unique_ptr<DpiDatabase> compile(const std::vector<DpiPattern>& patterns,
                                                DpiCompileError* err);
    ~DpiDatabase();
    DpiDatabase(const DpiDatabase&) = delete;
    DpiDatabase& operator=(const DpiDatabase&) = delete;

    /// Database of a direction (0: to server, 1: to client); null when no pattern applies.
    const hs_database* db(unsigned dir) const { return db_[dir]; }
    /// Bytes of one stream's state in a direction's database (0 without one).
    size_t stream_bytes(unsigned dir) const { return stream_bytes_[dir]; }
    /// A 64-bit hash of both serialised databases and the Hyperscan version: equal hashes mean
    /// a stream state of one can be expanded in the other.
    uint64_t hash() const { return hash_; }
    const std::vector<DpiRule>& rules() const { return rules_; }
    bool empty() const { return rules_.empty(); }

private:
    DpiDatabase() = default;
    hs_database* db_[2] = {nullptr, nullptr};
    size_t stream_bytes_[2] = {0, 0};
    uint64_t hash_ = 0;
    std::vector<DpiRule> rules_;
};

/// Hyperscan's version string (for logs and the migration stream header).
const char* dpi_library_version();

}  // namespace ferry
