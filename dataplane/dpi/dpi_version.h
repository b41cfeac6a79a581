// One published generation of payload inspection: a compiled database plus what each worker
// needs to scan with it (a Hyperscan scratch, a fixed pool of streams, match counters). Built
// by the control thread, published with a pointer swap, freed after an RCU grace period. A
// worker writes only its own part.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/dpi/dpi_database.h"

struct hs_scratch;
struct hs_stream;

namespace ferry {

/// One worker's resources in a generation.
struct DpiWorkerStreams {
    hs_scratch* scratch = nullptr;
    std::vector<hs_stream*> streams[2];  // per direction, one per stream slot (empty: no db)
    std::vector<uint64_t> matches;       // per rule (the database's rules() order)
};

class DpiVersion {
public:
    /// Opens `slots` streams per direction with a database for each of `workers` workers.
    /// generation must be above 0 and above every earlier one the workers saw.
    /// Context: control. @return nullptr and *err on generation 0 or when Hyperscan runs out
    ///         of memory
    static std::unique_ptr<DpiVersion> create(std::shared_ptr<const DpiDatabase> db,
                                              uint64_t generation, uint16_t workers, uint32_t slots,
                                              std::string* err);
    ~DpiVersion();
    DpiVersion(const DpiVersion&) = delete;
    DpiVersion& operator=(const DpiVersion&) = delete;

    const DpiDatabase& database() const { return *db_; }
    const std::shared_ptr<const DpiDatabase>& database_ptr() const { return db_; }
    /// Increases with every publication; stream slots remember the generation they were
    /// scanned under, so a slot from an earlier database is reset before use.
    uint64_t generation() const { return generation_; }
    uint32_t slots() const { return slots_; }
    DpiWorkerStreams& worker(uint16_t w) { return workers_[w]; }
    const DpiWorkerStreams& worker(uint16_t w) const { return workers_[w]; }
    uint16_t worker_count() const { return static_cast<uint16_t>(workers_.size()); }

private:
    DpiVersion() = default;
    std::shared_ptr<const DpiDatabase> db_;
    uint64_t generation_ = 0;
    uint32_t slots_ = 0;
    std::vector<DpiWorkerStreams> workers_;
};

}  // namespace ferry
