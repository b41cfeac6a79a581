#include "dataplane/dpi/dpi_engine.h"

#include <hs/hs.h>
#include <netinet/in.h>

#include <algorithm>

#include "dataplane/byte_order.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/counters.h"
#include "dataplane/flow_key.h"
#include "dataplane/l4_payload.h"

namespace ferry {
namespace {

constexpr uint32_t kNoSlot = 0xffffffffu;    // not inspected yet
constexpr uint32_t kFinished = 0xfffffffeu;  // inspection is over for this connection
constexpr uint8_t kTcpSyn = 0x02;

}  // namespace

std::unique_ptr<DpiWorker> DpiWorker::create(uint16_t worker, uint32_t slots, uint32_t ct_capacity,
                                             uint32_t depth_bytes) {
    if (slots == 0 || slots >= kFinished || ct_capacity == 0 || depth_bytes == 0) return nullptr;
    std::unique_ptr<DpiWorker> w(new DpiWorker());
    w->worker_ = worker;
    w->depth_ = depth_bytes;
    w->slot_.assign(slots, Slot{});
    for (uint32_t i = 0; i < slots; ++i) w->slot_[i].next_free = i + 1 < slots ? i + 1 : kNoSlot;
    w->slot_of_.assign(ct_capacity, kNoSlot);
    return w;
}

uint32_t DpiWorker::acquire(uint32_t ct_index) {
    const uint32_t s = free_head_;
    if (s == kNoSlot) return kNoSlot;
    free_head_ = slot_[s].next_free;
    slot_[s] = Slot{};
    slot_[s].ct_index = ct_index;
    slot_[s].next_free = kNoSlot;
    ++in_use_;
    return s;
}

void DpiWorker::release(uint32_t s) {
    slot_[s].next_free = free_head_;
    slot_[s].generation = 0;
    free_head_ = s;
    --in_use_;
}

void DpiWorker::reset_streams(DpiVersion& v, uint32_t s) {
    DpiWorkerStreams& ws = v.worker(worker_);
    for (auto& dir : ws.streams)
        if (s < dir.size()) hs_reset_stream(dir[s], 0, nullptr, nullptr, nullptr);
}

void DpiWorker::connection_removed(uint32_t ct_index) {
    if (ct_index >= slot_of_.size()) return;
    const uint32_t s = slot_of_[ct_index];
    if (s < slot_.size()) release(s);
    slot_of_[ct_index] = kNoSlot;
}

void DpiWorker::remove_hook(void* self, uint32_t ct_index) {
    static_cast<DpiWorker*>(self)->connection_removed(ct_index);
}

void DpiWorker::count_lost_alerts(unsigned n) {
    counter_add(counters_.alerts_lost, n);
}

int DpiWorker::on_match(unsigned id, unsigned long long /*from*/, unsigned long long to,
                        unsigned /*flags*/, void* ctx) {
    DpiScan& m = *static_cast<DpiScan*>(ctx);
    DpiWorker& self = *m.self;
    const std::vector<DpiRule>& rules = m.version->database().rules();
    if (id >= rules.size()) return 0;
    const DpiRule& r = rules[id];
    counter_add(m.version->worker(self.worker_).matches[id], 1);
    counter_add(self.counters_.matches, 1);
    switch (r.action) {
        case DpiVerdictKind::kDrop:
            m.drop = true;
            return 1;  // stop scanning: the connection is over
        case DpiVerdictKind::kAlert:
            counter_add(self.counters_.alerts, 1);
            if (self.n_alerts_ == kDpiAlertSlots) {
                counter_add(self.counters_.alerts_lost, 1);
                break;
            }
            self.alerts_[self.n_alerts_++] =
                DpiAlert{r.id, m.dir, {}, to, m.ct->table().entry(m.ct_index).tuple[0]};
            break;
        case DpiVerdictKind::kMark:
            counter_add(self.counters_.marks, 1);
            m.ct->table().entry(m.ct_index).mark = r.mark;
            m.key->ct_mark = r.mark;
            break;
    }
    return 0;
}

DpiOutcome DpiWorker::inspect(DpiVersion& v, ConntrackShard& ct, const CtPacketState& st,
                              const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                              FlowKey* key, uint64_t now_ms) {
    DpiScan scan;
    switch (scan_begin(v, ct, st, frame, len, layout, key, &scan)) {
        case DpiStep::kPass:
            return DpiOutcome::kPass;
        case DpiStep::kDrop:
            return DpiOutcome::kDrop;
        case DpiStep::kScan:
            break;
    }
    scan_piece(scan, frame + scan.offset, scan.length);
    return scan_end(scan, now_ms);
}

DpiStep DpiWorker::scan_begin(DpiVersion& v, ConntrackShard& ct, const CtPacketState& st,
                              const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                              FlowKey* key, DpiScan* scan) {
    if (st.index == kCtNone || st.index >= slot_of_.size()) {
        counter_add(counters_.untracked, 1);
        return DpiStep::kPass;
    }
    // The connection's verdicts stand for every later packet, including those of this burst
    // that were tracked before an earlier packet's match changed the entry.
    const CtEntry& entry = ct.table().entry(st.index);
    if (entry.flags & kCtfBlocked) return DpiStep::kDrop;
    key->ct_mark = entry.mark;
    const DpiDatabase& db = v.database();
    const unsigned dir = st.dir & 1u;
    uint32_t& so = slot_of_[st.index];
    if (so == kFinished || db.db(dir) == nullptr) return DpiStep::kPass;
    uint32_t off, plen;
    if (!l4_payload(frame, len, layout, *key, &off, &plen) || plen == 0) return DpiStep::kPass;
    if (so == kNoSlot) {
        so = acquire(st.index);
        if (so == kNoSlot) {
            counter_add(counters_.streams_exhausted, 1);
            so = kFinished;
            return DpiStep::kPass;
        }
    }
    Slot& s = slot_[so];
    if (s.generation != v.generation()) {
        if (s.generation != 0) counter_add(counters_.restarts, 1);
        reset_streams(v, so);
        s.generation = v.generation();
    }
    if (s.state[dir] == kDpiDone) return DpiStep::kPass;

    if (key->ip_proto == IPPROTO_TCP) {
        // Only bytes in sequence are scanned: retransmitted ones are skipped, and a segment
        // past a gap ends this direction's inspection (nothing is buffered).
        const uint8_t* tcp = frame + layout.l4_offset;
        const uint32_t seq = load_be32(tcp + 4) + ((tcp[13] & kTcpSyn) ? 1 : 0);
        if (s.state[dir] == kDpiFresh) s.next_seq[dir] = s.first_seq[dir] = seq;
        const auto ahead = static_cast<int32_t>(seq - s.next_seq[dir]);
        if (ahead > 0 || static_cast<int32_t>(seq - s.first_seq[dir]) < 0) {
            // Bytes past what was scanned, or from before where scanning started (the first
            // data segment came out of order): they would leave a hole in the stream.
            counter_add(counters_.gaps, 1);
            s.state[dir] = kDpiDone;
            release_if_done(db, so);
            return DpiStep::kPass;
        }
        const auto behind = static_cast<uint32_t>(-ahead);
        if (behind >= plen) return DpiStep::kPass;  // all of it was scanned before
        off += behind;
        plen -= behind;
        s.next_seq[dir] += plen;
    }
    s.state[dir] = kDpiScanning;
    *scan = DpiScan{};
    scan->offset = off;
    scan->length = std::min(plen, depth_ - s.seen[dir]);
    scan->self = this;
    scan->version = &v;
    scan->ct = &ct;
    scan->key = key;
    scan->ct_index = st.index;
    scan->slot = so;
    scan->rc = HS_SUCCESS;
    scan->dir = static_cast<uint8_t>(dir);
    return DpiStep::kScan;
}

bool DpiWorker::scan_piece(DpiScan& scan, const uint8_t* bytes, uint32_t n) {
    if (scan.drop || scan.rc != HS_SUCCESS) return false;
    DpiWorkerStreams& ws = scan.version->worker(worker_);
    scan.rc = hs_scan_stream(ws.streams[scan.dir][scan.slot], reinterpret_cast<const char*>(bytes),
                             n, 0, ws.scratch, on_match, &scan);
    return !scan.drop && scan.rc == HS_SUCCESS;
}

DpiOutcome DpiWorker::scan_end(DpiScan& scan, uint64_t now_ms) {
    uint32_t& so = slot_of_[scan.ct_index];
    Slot& s = slot_[scan.slot];
    const unsigned dir = scan.dir;
    s.seen[dir] += scan.length;
    counter_add(counters_.packets, 1);
    counter_add(counters_.bytes, scan.length);
    if (scan.drop) {
        counter_add(counters_.drops, 1);
        scan.ct->block(scan.ct_index, now_ms);
        release(so);
        so = kFinished;
        return DpiOutcome::kDrop;
    }
    if (scan.rc != HS_SUCCESS) {
        counter_add(counters_.scan_errors, 1);
        s.state[dir] = kDpiDone;
    } else if (s.seen[dir] >= depth_) {
        counter_add(counters_.depth_reached, 1);
        s.state[dir] = kDpiDone;
    }
    release_if_done(scan.version->database(), so);
    return DpiOutcome::kPass;
}

void DpiWorker::release_if_done(const DpiDatabase& db, uint32_t& so) {
    const Slot& s = slot_[so];
    const bool done0 = s.state[0] == kDpiDone || db.db(0) == nullptr;
    const bool done1 = s.state[1] == kDpiDone || db.db(1) == nullptr;
    if (done0 && done1) {
        release(so);
        so = kFinished;
    }
}

bool DpiWorker::export_state(const DpiVersion& v, uint32_t ct_index, DpiStreamState* out) const {
    if (ct_index >= slot_of_.size() || slot_of_[ct_index] >= slot_.size()) return false;
    const uint32_t so = slot_of_[ct_index];
    const Slot& s = slot_[so];
    *out = DpiStreamState{};
    const bool current = s.generation == v.generation();
    out->db_hash = current ? v.database().hash() : 0;
    const DpiWorkerStreams& ws = v.worker(worker_);
    for (unsigned d = 0; d < 2; ++d) {
        out->seen[d] = s.seen[d];
        out->next_seq[d] = s.next_seq[d];
        out->dir_state[d] = s.state[d];
        if (!current || so >= ws.streams[d].size()) continue;
        size_t need = 0;
        hs_compress_stream(ws.streams[d][so], nullptr, 0, &need);
        out->streams[d].resize(need);
        size_t used = 0;
        if (hs_compress_stream(ws.streams[d][so], reinterpret_cast<char*>(out->streams[d].data()),
                               need, &used) != HS_SUCCESS) {
            out->db_hash = 0;  // the target restarts inspection
            out->streams[d].clear();
            continue;
        }
        out->streams[d].resize(used);
    }
    return true;
}

DpiImport DpiWorker::import_state(DpiVersion& v, uint32_t ct_index, const DpiStreamState& in) {
    if (ct_index >= slot_of_.size()) return DpiImport::kNoSlot;
    uint32_t& so = slot_of_[ct_index];
    if (so >= slot_.size()) so = acquire(ct_index);
    if (so == kNoSlot) {
        counter_add(counters_.streams_exhausted, 1);
        so = kFinished;
        return DpiImport::kNoSlot;
    }
    Slot& s = slot_[so];
    for (unsigned d = 0; d < 2; ++d) {
        s.seen[d] = std::min(in.seen[d], depth_);
        s.next_seq[d] = in.next_seq[d];
        s.first_seq[d] = in.next_seq[d] - s.seen[d];
        s.state[d] = std::min<uint8_t>(in.dir_state[d], kDpiDone);
    }
    s.generation = v.generation();
    reset_streams(v, so);
    if (in.db_hash == 0 || in.db_hash != v.database().hash()) {
        counter_add(counters_.restarts, 1);
        return DpiImport::kRestarted;
    }
    DpiWorkerStreams& ws = v.worker(worker_);
    for (unsigned d = 0; d < 2; ++d) {
        if (in.streams[d].empty() || so >= ws.streams[d].size()) continue;
        if (hs_reset_and_expand_stream(
                ws.streams[d][so], reinterpret_cast<const char*>(in.streams[d].data()),
                in.streams[d].size(), nullptr, nullptr, nullptr) != HS_SUCCESS) {
            reset_streams(v, so);
            counter_add(counters_.restarts, 1);
            return DpiImport::kFailed;
        }
    }
    return DpiImport::kExpanded;
}

}  // namespace ferry
