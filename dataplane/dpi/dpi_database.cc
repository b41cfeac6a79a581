#include "dataplane/dpi/dpi_database.h"

#include <hs/hs.h>

#include <cstdlib>
#include <cstring>

namespace ferry {
namespace {

unsigned hs_flags_of(uint8_t f) {
    unsigned out = 0;
    if (f & kDpiCaseless) out |= HS_FLAG_CASELESS;
    if (f & kDpiDotall) out |= HS_FLAG_DOTALL;
    if (f & kDpiMultiline) out |= HS_FLAG_MULTILINE;
    if (f & kDpiSingleMatch) out |= HS_FLAG_SINGLEMATCH;
    return out;
}

bool applies(DpiDirection d, unsigned dir) {
    return d == DpiDirection::kBoth ||
           (dir == 0 ? d == DpiDirection::kToServer : d == DpiDirection::kToClient);
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

}  // namespace

const char* dpi_library_version() {
    return hs_version();
}

DpiDatabase::~DpiDatabase() {
    for (hs_database* d : db_) hs_free_database(d);
}

std::unique_ptr<DpiDatabase> DpiDatabase::compile(const std::vector<DpiPattern>& patterns,
                                                  DpiCompileError* err) {
    std::unique_ptr<DpiDatabase> out(new DpiDatabase());
    out->rules_.reserve(patterns.size());
    for (const DpiPattern& p : patterns) out->rules_.push_back(DpiRule{p.id, p.action, {}, p.mark});
    uint64_t h = 0xcbf29ce484222325ull;
    const char* version = hs_version();
    h = fnv1a(h, version, std::strlen(version));
    for (unsigned dir = 0; dir < 2; ++dir) {
        std::vector<const char*> exprs;
        std::vector<unsigned> flags;
        std::vector<unsigned> ids;  // position in patterns: the index of rules_
        for (size_t i = 0; i < patterns.size(); ++i) {
            if (!applies(patterns[i].direction, dir)) continue;
            exprs.push_back(patterns[i].regex.c_str());
            flags.push_back(hs_flags_of(patterns[i].flags));
            ids.push_back(static_cast<unsigned>(i));
        }
        const uint8_t marker = static_cast<uint8_t>(dir);
        h = fnv1a(h, &marker, 1);
        if (exprs.empty()) continue;
        hs_compile_error_t* cerr = nullptr;
        if (hs_compile_multi(exprs.data(), flags.data(), ids.data(),
                             static_cast<unsigned>(exprs.size()), HS_MODE_STREAM, nullptr,
                             &out->db_[dir], &cerr) != HS_SUCCESS) {
            if (err != nullptr) {
                err->message = cerr != nullptr && cerr->message != nullptr ? cerr->message
                                                                           : "compilation failed";
                err->has_id = cerr != nullptr && cerr->expression >= 0 &&
                              static_cast<size_t>(cerr->expression) < ids.size();
                if (err->has_id) err->id = patterns[ids[cerr->expression]].id;
            }
            hs_free_compile_error(cerr);
            return nullptr;
        }
        char* bytes = nullptr;
        size_t len = 0;
        if (hs_stream_size(out->db_[dir], &out->stream_bytes_[dir]) != HS_SUCCESS ||
            hs_serialize_database(out->db_[dir], &bytes, &len) != HS_SUCCESS) {
            if (err != nullptr) *err = DpiCompileError{false, 0, "cannot size the database"};
            return nullptr;
        }
        h = fnv1a(h, bytes, len);
        std::free(bytes);  // Hyperscan's default misc allocator is malloc
    }
    out->hash_ = h;
    return out;
}

}  // namespace ferry
