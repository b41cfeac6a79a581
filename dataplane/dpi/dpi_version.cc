#include "dataplane/dpi/dpi_version.h"

#include <hs/hs.h>

namespace ferry {

std::unique_ptr<DpiVersion> DpiVersion::create(std::shared_ptr<const DpiDatabase> db,
                                               uint64_t generation, uint16_t workers,
                                               uint32_t slots, std::string* err) {
    // Generation 0 marks a slot without streams (DpiWorker): a version must never have it.
    if (generation == 0 || !db) {
        if (err != nullptr) *err = "a DPI generation starts at 1";
        return nullptr;
    }
    std::unique_ptr<DpiVersion> v(new DpiVersion());
    v->db_ = std::move(db);
    v->generation_ = generation;
    v->slots_ = slots;
    v->workers_.resize(workers);
    hs_scratch_t* proto = nullptr;
    for (unsigned dir = 0; dir < 2; ++dir) {
        const hs_database_t* d = v->db_->db(dir);
        if (d != nullptr && hs_alloc_scratch(d, &proto) != HS_SUCCESS) {
            if (err != nullptr) *err = "cannot allocate Hyperscan scratch space";
            hs_free_scratch(proto);
            return nullptr;
        }
    }
    for (DpiWorkerStreams& w : v->workers_) {
        w.matches.assign(v->db_->rules().size(), 0);
        if (proto != nullptr && hs_clone_scratch(proto, &w.scratch) != HS_SUCCESS) {
            if (err != nullptr) *err = "cannot allocate Hyperscan scratch space";
            hs_free_scratch(proto);
            return nullptr;  // the destructor frees what was made
        }
        for (unsigned dir = 0; dir < 2; ++dir) {
            const hs_database_t* d = v->db_->db(dir);
            if (d == nullptr) continue;
            w.streams[dir].reserve(slots);
            for (uint32_t s = 0; s < slots; ++s) {
                hs_stream_t* st = nullptr;
                if (hs_open_stream(d, 0, &st) != HS_SUCCESS) {
                    if (err != nullptr) *err = "cannot allocate Hyperscan streams";
                    hs_free_scratch(proto);
                    return nullptr;
                }
                w.streams[dir].push_back(st);
            }
        }
    }
    hs_free_scratch(proto);
    return v;
}

DpiVersion::~DpiVersion() {
    for (DpiWorkerStreams& w : workers_) {
        // Closing without a scratch reports nothing (end-of-data matches are not wanted).
        for (auto& dir : w.streams)
            for (hs_stream_t* s : dir) hs_close_stream(s, nullptr, nullptr, nullptr);
        hs_free_scratch(w.scratch);
    }
}

}  // namespace ferry
